"""Metric presets: ``--metrics paper``, ``quick``, ``extended``, ``all``; a preset maps metric -> params.

Where the settings come from
----------------------------
The NsLoss paper (Moshe et al.) names the seven metrics, says it computed them with Quantus on
Integrated Gradients attributions over the whole test set, and states no metric parameter. So
``paper`` is:

* from the paper: the choice of the seven metrics and their directions (Tables 3-4);
* Quantus 0.6 defaults (what "computed with Quantus" means when nothing is overridden):
  ``nr_samples=200`` for Max-/Avg-Sensitivity and LLE, ``nr_runs=100`` for Faithfulness
  Correlation, the black (minimum) baseline, logits (``softmax=False``), the norms, similarity
  functions and ``abs``/``normalise`` switches;
* our choices (documented in xairobust.metrics.quantus_metrics): per-sample instead of
  per-batch max-normalisation, seeded per-sample perturbations, the sensitivity radius 8/255
  and LLE std 4/255 in [0, 1] pixel units instead of Quantus' 0.2 and 0.1, and feature counts
  scaled to the input size (Faithfulness Correlation subset, Faithfulness Estimate step).

``quick`` keeps every formula and radius of ``paper`` and only lowers the sample counts, for
tests and the demo: its numbers are noisier estimates of the same quantities.
"""

from __future__ import annotations

from typing import Any

from xairobust.errors import ConfigError
from xairobust.registry import METRICS, did_you_mean

PAPER_METRICS = (
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz_estimate",
    "faithfulness_correlation",
    "faithfulness_estimate",
    "complexity",
    "sparseness",
)

# ``extended``: the seven plus the relative-stability family (issue 18) at their defaults, whose
# draws coincide with Max/Avg-Sensitivity's (nr_samples 200, radius 8/255): they reuse the same
# perturbed explanations and add only forward passes. ``all``: every registered metric at its
# defaults (resolved when asked, so a newly registered metric is in it).
EXTENDED_METRICS = (
    *PAPER_METRICS,
    "relative_input_stability",
    "relative_output_stability",
    "relative_representation_stability",
    # faithfulness beyond the two (h18c): MoRF - LeRF region areas, 2 x 64 forward passes per image
    # at the auto patch size (no gradients), cheap beside one IG explanation
    "region_perturbation_symmetric",
    # h22metrics: ROAD (MoRF), removal without the out-of-distribution baseline (noisy linear
    # imputation), ~1.5x one IG explanation per CIFAR-10 image at its 50 percentages
    "road",
    # h18d: one per new family -- randomisation (MPRT: one re-explanation per layer), complexity
    # (Effective Complexity) and alignment (no model pass)
    "mprt",
    "effective_complexity",
    "alignment",
    # h22metrics: localisation without masks (Focus: one explanation of a mosaic per image)
    "focus",
)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {name: {} for name in PAPER_METRICS},  # every parameter at its documented default
    "extended": {name: {} for name in EXTENDED_METRICS},
    "quick": {
        "max_sensitivity": {"nr_samples": 10},
        "avg_sensitivity": {"nr_samples": 10},
        "local_lipschitz_estimate": {"nr_samples": 10},
        "faithfulness_correlation": {"nr_runs": 20},
        "faithfulness_estimate": {},
        "complexity": {},
        "sparseness": {},
    },
}


def resolve_metrics(spec: str | list[str]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """``'paper'`` / ``'quick'`` / ``'complexity,sparseness'`` -> (preset name or None, {metric: params})."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if names == ["all"]:
        return "all", {name: {} for name in METRICS.names()}
    if len(names) == 1 and names[0] in PRESETS:
        return names[0], {k: dict(v) for k, v in PRESETS[names[0]].items()}
    if not names:
        raise ConfigError("score: --metrics is empty; give a preset (paper, quick) or metric names")
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in PRESETS or name == "all":
            raise ConfigError(f"score: preset '{name}' cannot be combined with other names in --metrics")
        if name not in METRICS:
            hint = did_you_mean(name, METRICS.names() + list(PRESETS))
            raise ConfigError(
                f"score: unknown metric '{name}' in --metrics.{hint} Known: {', '.join(METRICS.names())};"
                f" presets: {', '.join(PRESETS)}, all"
            )
        out[name] = {}
    return None, out
