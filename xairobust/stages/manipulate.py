"""The manipulate stage: run directory -> manipulation/<attack>_<explainer>.{safetensors,csv,json}.

Samples are chosen as in ``explain`` (``select_indices``: stratified by default), the explained
output is the model's prediction, and every sample's randomness comes from its seed
(``sample_seeds(seed, index)``), so results do not depend on the batch size.

* ``.safetensors``: inputs, manipulated inputs, targets (= original predictions), indices,
  predictions on the manipulated inputs, the kept step per sample, the original and manipulated
  attributions of the attacked explainer (original network) and, for ``targeted``, the target
  maps and the index of the sample each was taken from.
* ``.csv``: one row per sample x explainer x measure (columns index,target,explainer,metric,value);
  the attacked explainer's rows first, then every ``--transfer-to`` explainer's (the same
  perturbation scored with another explainer).
* ``.json``: settings, means per explainer x measure, cost (seconds per image of the attack and
  of one explanation), and the provenance block (last written: marks completion).

The target map of ``targeted`` is the original explanation map of another selected sample: the
next one (in index order, cyclically) whose prediction differs (Dombrowski et al. take the
explanation of an image of another class).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from xairobust import config as cfg
from xairobust.config import require
from xairobust.data.base import get_dataset
from xairobust.data.selection import select_indices
from xairobust.devices import pick_device
from xairobust.errors import ConfigError
from xairobust.explain.base import differentiable_explainer, sample_seeds
from xairobust.layout import RunLayout
from xairobust.manipulate.attacks import MANIPULATIONS, AttackSettings, manipulate_batch
from xairobust.manipulate.measures import FOOLED, MEASURES, Pair, compute_measures, to_map
from xairobust.manipulate.smooth import softplus_copy
from xairobust.perturb import DEFAULT_EPS, ThreatOptions
from xairobust.progress import make_progress
from xairobust.provenance import git_commit, versions
from xairobust.registry import EXPLAINERS
from xairobust.runs import WEIGHTS, load_run, require_run, save_tensors, write_text_atomic
from xairobust.runtime import prepare_model
from xairobust.stages.contract import STAGES, Stage, StageIdentity, Written, config_identity, not_identity
from xairobust.stages.options import RuntimeOptions

# 2: the attacked explainer is the registered explainer with its registered parameters (the
# same map as `explain` gives under that name); format 1 used a separate differentiable copy
# with other defaults (saliency abs, SmoothGrad 8 samples sigma 0.1, IG 16 steps). Issue 17.
FORMAT = 2
CSV_COLUMNS = ("index", "target", "explainer", "metric", "value")


@dataclass
class ManipulateConfig(RuntimeOptions, ThreatOptions):
    """Keys of ``xairobust manipulate --config``."""

    attack: str = "topk"
    explainer: str = "ig"
    params: dict = field(default_factory=dict)  # the explainer's parameters (e.g. n_steps)
    norm: Literal["linf", "l2"] = "linf"
    eps: float = DEFAULT_EPS
    steps: int = 20
    step_size: float | None = None  # default 2.5 * eps / steps
    beta: float = 10.0  # softplus beta of the copy the attack differentiates through
    topk: float = 0.1  # top-k attack: fraction of features pushed down
    expl_weight: float = 1.0  # targeted: weight of ||h(x_adv) - h_t||^2
    out_weight: float = 1.0  # targeted: weight of ||g(x_adv) - g(x)||^2 (Dombrowski's gamma)
    fool_measure: str = "topk_10"  # a sample is fooled when this measure < fool_threshold ...
    fool_threshold: float = 0.5  # ... and its prediction is unchanged
    transfer_to: list[str] = field(default_factory=list)
    n: int = 64
    selection: Literal["stratified", "first", "random"] = "stratified"
    seed: int = 0
    batch_size: int = not_identity(32)
    data_dir: str | None = not_identity(None)

    def __post_init__(self) -> None:
        self.check_runtime("manipulate")
        require(self.n >= 1, f"manipulate: --n must be >= 1, got {self.n}")
        self.check_threat("manipulate")
        require(self.beta > 0, f"manipulate: --beta must be > 0, got {self.beta}")
        require(0 < self.topk <= 1, f"manipulate: --topk must be a fraction in (0, 1], got {self.topk}")
        require(self.expl_weight >= 0 and self.out_weight >= 0, "manipulate: --expl-weight/--out-weight must be >= 0")
        require(self.batch_size >= 1, f"manipulate: --batch-size must be >= 1, got {self.batch_size}")
        if isinstance(self.transfer_to, str):
            self.transfer_to = [t for t in self.transfer_to.split(",") if t]
        self.transfer_to = [t for t in dict.fromkeys(self.transfer_to) if t != self.explainer]

    def settings(self, value_range: tuple[float, float] | None) -> AttackSettings:
        return AttackSettings(
            norm=self.norm, eps=self.eps, steps=self.steps, step_size=self.step_size, beta=self.beta,
            topk=self.topk, expl_weight=self.expl_weight, out_weight=self.out_weight, value_range=value_range,
        )

    def identity(self, explainer_params: dict[str, Any]) -> dict[str, Any]:
        return {**config_identity(self, drop=("params",)), "params": explainer_params}


def manipulation_paths(run_dir: Path, attack: str, explainer: str) -> tuple[Path, Path, Path]:
    return RunLayout(run_dir).manipulation(attack, explainer)


def _explainer_params(name: str, params: dict[str, Any]) -> Any:
    """The attacked explainer's parameters, validated (registered defaults where not given)."""
    return differentiable_explainer(name, params).params


def transfer_explain(name: str):
    """fn(model, x, targets, seeds) -> attributions for a --transfer-to explainer: the registered
    explainer with its default parameters."""
    from xairobust.stages.explain import build_explainer, wants_background

    cls = EXPLAINERS.get(name)
    if wants_background(name, cfg.build(cls.Params, {}, name)):
        raise ConfigError(f"manipulate: --transfer-to {name} needs training-data baselines; not supported here")
    ex = build_explainer(name, {})
    return lambda m, x, t, s: ex.attribute(m, x, t, s).detach()


@STAGES.register("manipulate")
class ManipulateStage(Stage, name="manipulate", Config=ManipulateConfig, format=FORMAT, per="run", after="train",
                             order=2.5, report_input=True, hint_options=("attack", "explainer")):
    """run directory -> manipulation/<attack>_<explainer>.* (see the module docstring)."""

    # Place in a zoo's job graph: one job per run (a zoo's `manipulate:` block), after training;
    # reports wait for it and add the manipulation table and figure.

    def inputs(self, run_dir: Path, conf: ManipulateConfig) -> dict[str, Path]:
        out = {"weights": require_run(run_dir) / WEIGHTS}
        if conf.attack == "model":
            out["reference_weights"] = reference_run(run_dir) / WEIGHTS
        return out

    def identity(self, run_dir: Path, conf: ManipulateConfig) -> dict[str, Any]:
        MANIPULATIONS.get(conf.attack)
        return conf.identity(cfg.to_dict(_explainer_params(conf.explainer, conf.params)))

    def outputs(self, run_dir: Path, conf: ManipulateConfig) -> list[Path]:
        return list(manipulation_paths(Path(run_dir), conf.attack, conf.explainer))

    def compute(self, run_dir: Path, conf: ManipulateConfig, resolved: StageIdentity, quiet: bool) -> Written:
        return _manipulate(run_dir, conf, resolved, quiet)


def manipulate(run_dir: str | Path, conf: ManipulateConfig, quiet: bool = False) -> Path:
    """Run the attack on ``conf.n`` test samples; returns the JSON document (no-op when current)."""
    return ManipulateStage().run(Path(run_dir), conf, quiet)


def reference_run(run_dir: Path) -> Path:
    """The ``--init`` run a ``--method fool`` run was fine-tuned from (attack ``model``)."""
    from xairobust.runs import read_run_meta

    init = (read_run_meta(run_dir).get("training") or {}).get("init")
    if not init:
        raise ConfigError(
            f"manipulate: --attack model needs a run fine-tuned with `xairobust train --method fool --init RUN`;"
            f" {run_dir} has no init run"
        )
    path = Path(init)
    if not path.is_absolute() and not path.exists():
        path = Path(run_dir).parent / path
    return require_run(path)


def target_sources(preds: Tensor) -> Tensor:
    """For each sample, the next sample (cyclically) with another prediction (itself if none)."""
    n = len(preds)
    out = torch.arange(n)
    for i in range(n):
        for j in range(1, n):
            k = (i + j) % n
            if preds[k] != preds[i]:
                out[i] = k
                break
    return out


def _manipulate(run_dir: Path, conf: ManipulateConfig, resolved: StageIdentity, quiet: bool) -> Written:
    model, meta = load_run(run_dir)
    reference = load_run(reference_run(run_dir))[0] if conf.attack == "model" else None
    info = meta["dataset"]["info"]
    if info["task"] != "classification":
        raise ConfigError("manipulate: needs a classifier (the prediction must stay unchanged)")
    explainer = differentiable_explainer(conf.explainer, conf.params)
    if hasattr(explainer, "want_delta"):
        explainer.want_delta = False  # IG's convergence delta: nothing here reads it
    transfers = {name: transfer_explain(name) for name in conf.transfer_to}
    MEASURES.get(conf.fool_measure)
    vr = info.get("value_range")
    settings = conf.settings(tuple(vr) if vr is not None else None)
    device = pick_device(conf.device)
    shape = tuple(info["input_shape"])
    prepare_model(model.to(device).eval(), shape, conf.precision, conf.channels_last)
    if reference is not None:
        prepare_model(reference, shape, conf.precision, conf.channels_last)
    smooth = softplus_copy(model, conf.beta)  # a deep copy: keeps the layout and precision
    # attack 'model': the "original" network is the --init run, the manipulated one this run.
    original = model if reference is None else reference.to(device).eval()

    test = get_dataset(meta["dataset"]["name"], "test", conf.data_dir, **meta["dataset"].get("kwargs", {}))
    indices = select_indices(test.y, len(test), conf.n, conf.selection, conf.seed)
    x_all = test.inputs(indices)
    seeds_all = sample_seeds(conf.seed, indices)
    preds = _predict(original, x_all, device)
    bs = conf.batch_size

    # Original explanations (original network), timed: the cost unit of the attacks.
    clock = _clock()
    orig_attr = _explain_all(explainer.attribute, original, x_all, preds, seeds_all, bs, device)
    explain_cost = _per_image(clock, len(x_all))
    orig_maps = to_map(orig_attr)
    sources = target_sources(preds) if conf.attack == "targeted" else None
    target_maps = orig_maps[sources] if sources is not None else None

    clock = _clock()
    if reference is None:
        x_adv, kept = _attack_all(model, smooth, explainer, conf, settings, x_all, preds, seeds_all, target_maps,
                                  device, quiet)
    else:  # the model manipulation: same inputs, the fooled network
        x_adv, kept = x_all.clone(), torch.zeros(len(x_all), dtype=torch.int64)
    attack_cost = _per_image(clock, len(x_all))
    preds_adv = _predict(model, x_adv, device)
    adv_attr = _explain_all(explainer.attribute, model, x_adv, preds, seeds_all, bs, device)

    results = _measure_all(conf, orig_maps, to_map(adv_attr), target_maps, transfers, (original, model),
                           (x_all, x_adv), (preds, preds_adv), seeds_all, device)

    tensors_path, csv_path, _ = manipulation_paths(run_dir, conf.attack, conf.explainer)
    tensors = {
        "inputs": x_all, "inputs_adv": x_adv, "targets": preds, "preds_adv": preds_adv, "indices": indices,
        "kept_step": kept, "attributions": orig_attr, "attributions_adv": adv_attr,
    }
    if target_maps is not None:
        tensors.update({"target_maps": target_maps, "target_source": indices[sources]})
    save_tensors(tensors_path, tensors)
    write_text_atomic(csv_path, _csv(indices, preds, results))
    cost = _cost(attack_cost, explain_cost, device, model_level=reference is not None, explainer=conf.explainer)
    doc = {
        "format": FORMAT,
        "attack": conf.attack,
        "explainer": conf.explainer,
        "params": cfg.to_dict(explainer.params),
        "settings": {**cfg.to_dict(settings), "step_size": settings.resolved_step_size()},
        "fooled": f"{conf.fool_measure} < {conf.fool_threshold} and prediction unchanged",
        "transfer_to": list(conf.transfer_to),
        "n": int(len(indices)),
        "split_size": int(len(test)),  # report checks the CSV's indices against it
        "selection": conf.selection,
        "seed": conf.seed,
        "softplus_replaced_relus": smooth.replaced,
        "means": {e: {k: float(v.double().nanmean()) for k, v in r.items()} for e, r in results.items()},
        "cost": cost,
        "batch_size": conf.batch_size,
        "precision": conf.precision,
        "device": str(device),
        "run": {"path": str(run_dir), "weights_sha256": meta.get("weights_sha256"), "label": meta.get("label")},
        "versions": versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return Written(doc, (tensors_path, csv_path))  # hand edits are refused on read


def _measure_all(conf: ManipulateConfig, orig_maps: Tensor, adv_maps: Tensor, target_maps: Tensor | None,
                 transfers: dict[str, Any], nets: tuple[torch.nn.Module, torch.nn.Module], x: tuple[Tensor, Tensor],
                 preds: tuple[Tensor, Tensor], seeds: Tensor, device: torch.device) -> dict[str, dict[str, Tensor]]:
    """Per explainer (the attacked one, then each ``--transfer-to``), the measures of how much its
    map changed between (original network, x) and (this network, x_adv)."""
    fool = (conf.fool_measure, conf.fool_threshold)
    results = {conf.explainer: compute_measures(Pair(orig_maps, adv_maps, *x, *preds), *fool)}
    if target_maps is not None:
        results[conf.explainer].update(_target_measures(target_maps, orig_maps, adv_maps))
    for name, fn in transfers.items():
        a0 = _explain_all(fn, nets[0], x[0], preds[0], seeds, conf.batch_size, device)
        a1 = _explain_all(fn, nets[1], x[1], preds[0], seeds, conf.batch_size, device)
        results[name] = compute_measures(Pair(to_map(a0), to_map(a1), *x, *preds), *fool)
    return results


def _predict(net: torch.nn.Module, x: Tensor, device: torch.device) -> Tensor:
    with torch.no_grad():
        return torch.cat([net(x[s : s + 256].to(device)).argmax(1).cpu() for s in range(0, len(x), 256)])


def _explain_all(fn, net: torch.nn.Module, x: Tensor, targets: Tensor, seeds: Tensor, bs: int,
                 device: torch.device) -> Tensor:
    """``fn(net, x, targets, seeds)`` over batches of ``bs`` (results do not depend on ``bs``: per-sample seeds)."""
    return torch.cat([fn(net, x[s : s + bs].to(device), targets[s : s + bs].to(device), seeds[s : s + bs]).cpu()
                      for s in range(0, len(x), bs)])


def _attack_all(model, smooth, explainer, conf: ManipulateConfig, settings, x_all: Tensor, preds: Tensor,
                seeds_all: Tensor, target_maps: Tensor | None, device: torch.device, quiet: bool) -> tuple[Tensor, Tensor]:
    """(x_adv, kept_step) of every selected sample, attacked batch by batch with a progress bar."""
    adv_parts, kept_parts = [], []
    bs = conf.batch_size
    with make_progress(quiet) as progress:
        task = progress.add_task(f"manipulate {conf.attack}/{conf.explainer}", total=len(x_all), info="")
        for s in range(0, len(x_all), bs):
            sl = slice(s, s + bs)
            tm = target_maps[sl].to(device) if target_maps is not None else None
            xa, kept = manipulate_batch(
                model, smooth, explainer, conf.attack, x_all[sl].to(device), preds[sl].to(device),
                seeds_all[sl], settings, target_map=tm,
            )
            adv_parts.append(xa.cpu())
            kept_parts.append(kept.cpu())
            progress.advance(task, len(x_all[sl]))
    return torch.cat(adv_parts), torch.cat(kept_parts)


def _target_measures(target_maps: Tensor, orig_maps: Tensor, adv_maps: Tensor) -> dict[str, Tensor]:
    """targeted: Spearman correlation with the target map after and before the attack, and the gain."""
    from xairobust.manipulate.measures import spearman_rows

    tm = target_maps.flatten(1).double().numpy()
    after = torch.from_numpy(spearman_rows(tm, adv_maps.flatten(1).double().numpy()))
    # the same before the attack: how far the explanation moved towards its target
    before = torch.from_numpy(spearman_rows(tm, orig_maps.flatten(1).double().numpy()))
    return {"target_spearman": after, "target_spearman_before": before, "target_gain": after - before}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _per_image(start: tuple[float, float], n: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image since ``start``."""
    return (time.perf_counter() - start[0]) / n, (time.process_time() - start[1]) / n


def _cost(attack: tuple[float, float], explain: tuple[float, float], device: torch.device, model_level: bool,
          explainer: str) -> dict[str, Any]:
    (attack_s, attack_cpu), (explain_s, explain_cpu) = attack, explain
    return {
        "attack_s_per_image": round(attack_s, 5),
        "explain_s_per_image": round(explain_s, 5),
        "attack_cpu_s_per_image": round(attack_cpu, 5),
        "explain_cpu_s_per_image": round(explain_cpu, 5),
        "torch_threads": torch.get_num_threads(),
        # On the CPU the ratio is taken from process CPU time (robust to other load on the
        # machine; equal to wall time with one thread); on an accelerator from wall time.
        "attack_over_explain": None if model_level else (
            _ratio(attack_cpu, explain_cpu) if device.type == "cpu" else _ratio(attack_s, explain_s)),
        "unit": f"one '{explainer}' explanation with these params on the original network",
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 and a > 0 else None


def _csv(indices: Tensor, targets: Tensor, results: dict[str, dict[str, Tensor]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for explainer, measures in results.items():
        names = [m for m in measures if m != FOOLED] + [FOOLED]
        for i in range(len(indices)):
            for m in names:
                w.writerow([int(indices[i]), int(targets[i]), explainer, m, repr(float(measures[m][i]))])
    return buf.getvalue()
