"""Checkpoint importers: existing weights (RobustBench, MadryLab, timm, torchvision, plain state
dicts, safetensors) turned into xairobust run directories by ``xairobust import``.

Formats are registered in :data:`xairobust.importers.base.FORMATS`; reading never unpickles
(see :mod:`xairobust.importers.base`). The stage itself is ``xairobust.stages.import_``.
"""

from xairobust.importers.base import FORMATS, PRESETS, read_checkpoint

__all__ = ["FORMATS", "PRESETS", "read_checkpoint"]
