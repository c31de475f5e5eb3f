"""Feature visualisation with numbers (Boychev): representation inversion, class-specific
generation, direct feature visualisation (registered in ``VISUALISATIONS``), and the feature
extractors (``FEATURE_EXTRACTORS``) that FID and the feature distance of inversions use.

The stages live in ``xairobust.stages.visualize``; see docs/visualize.md.
"""

from xairobust.registry import FEATURE_EXTRACTORS, VISUALISATIONS

__all__ = ["VISUALISATIONS", "FEATURE_EXTRACTORS"]
