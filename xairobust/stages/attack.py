"""The attack stage: robust accuracy of a trained run under registered attacks -> robustness.json.

``attack`` names an entry of the ``ATTACKS`` registry (``xairobust list attacks``): ``pgd`` (the
default: PGD, plus AutoAttack's standard version unless ``autoattack`` is off), ``autoattack``,
or one of its sub-attacks alone (``apgd-ce``, ``apgd-t``, ``fab-t``, ``square``). Each attack
is called through the registry with the keywords its signature asks for.
``runs/<run>/robustness.json`` keeps one entry per (attack, norm, eps); re-running one attack
replaces only its entry, and re-running it with the same settings on the same weights is a
no-op. The headline ``robust_accuracy`` is AutoAttack's when it was run, else PGD's, else that
of the attack just run.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from xairobust.config import require
from xairobust.data.base import DataSplit, get_source, resolve_data_dir
from xairobust.errors import ConfigError
from xairobust.evaluation import mean_pearson
from xairobust.layout import RunLayout
from xairobust.perturb import DEFAULT_EPS, ThreatOptions
from xairobust.progress import make_progress
from xairobust.registry import ATTACKS
from xairobust.runs import WEIGHTS, load_run, read_json, require_run
from xairobust.stages.contract import (
    PROVENANCE_KEY,
    STAGES,
    Stage,
    StageIdentity,
    changed_body,
    not_identity,
    stamp_inputs,
    write_sealed,
)

ROBUSTNESS_JSON = RunLayout.ROBUSTNESS
FORMAT = 2  # 2: every entry carries the provenance (weights sha256) it was computed on


@dataclass
class AttackConfig(ThreatOptions):
    """Keys of ``xairobust attack --config``; radii live in the model's input space."""

    attack: str = "pgd"  # a registered attack; pgd = PGD (+ AutoAttack unless autoattack is false)
    norm: Literal["linf", "l2"] = "linf"
    eps: float = DEFAULT_EPS
    steps: int = 10
    step_size: float | None = None  # default 2.5 * eps / steps
    restarts: int = 1
    random_start: bool = True
    autoattack: bool = True  # also run AutoAttack (standard version); classifiers with inputs in [0, 1]
    n: int | None = 1000  # first n samples of the split (None: all)
    split: str = "test"
    batch_size: int = not_identity(256)
    seed: int = 0
    device: str = not_identity("auto")
    data_dir: str | None = not_identity(None)

    def __post_init__(self) -> None:
        self.check_threat("attack")
        require(self.restarts >= 1, f"attack: --restarts must be >= 1, got {self.restarts}")
        require(self.n is None or self.n >= 1, f"attack: --n must be >= 1, got {self.n}")
        require(self.batch_size >= 1, f"attack: --batch-size must be >= 1, got {self.batch_size}")
        require(self.attack != "bim-regression",
                "attack: bim-regression has its own options and stage: `xairobust attack --attack bim-regression`")
        norms = ATTACKS.meta(self.attack).get("norms", ())  # unknown names: a one-line ConfigError
        require(self.norm in norms, f"attack: {self.attack} takes --norm {' or '.join(norms)}, not {self.norm}")


def _same_key(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["attack"] == b["attack"] and a["norm"] == b["norm"] and math.isclose(a["eps"], b["eps"], rel_tol=1e-9)


def _settings(conf: AttackConfig, attack: str, n: int | None) -> dict[str, Any]:
    """The settings of one (attack, norm, eps) entry; ``n`` is the number of samples requested."""
    pgd = attack == "pgd"
    return {
        "attack": attack,
        "norm": conf.norm,
        "eps": conf.eps,
        "steps": conf.steps if pgd else None,
        "step_size": conf.resolved_step_size() if pgd else None,
        "restarts": conf.restarts if pgd else None,
        "random_start": conf.random_start if pgd else None,
        "n_requested": n,
        "split": conf.split,
        "seed": conf.seed,
    }


def entry_identity(stage: str, fmt: int, settings: dict[str, Any], weights: dict[str, dict[str, str]]) -> StageIdentity:
    """The provenance of one robustness.json entry: its settings and the weights it attacked."""
    return StageIdentity(stage, fmt, settings, weights)


def entry_weights_sha(entry: dict[str, Any]) -> str | None:
    block = entry.get(PROVENANCE_KEY)
    try:
        return block["inputs"]["weights"]["sha256"]
    except (TypeError, KeyError):
        return None


def current_entries(run_dir: Path, weights: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Entries of ``run_dir``'s robustness.json computed on these weights (others are stale)."""
    path = Path(run_dir) / ROBUSTNESS_JSON
    if not path.is_file():
        return []
    try:
        doc = read_json(path)
    except Exception:  # noqa: BLE001 - an unreadable file holds nothing to keep; it is rewritten
        return []
    if changed_body(doc, path) is not None:  # a hand-edited file: none of its entries is kept (nor trusted)
        return []
    sha = weights["weights"]["sha256"]
    results = doc.get("results")
    return [e for e in results if isinstance(e, dict) and entry_weights_sha(e) == sha] if isinstance(results, list) else []


def find_current(entries: list[dict[str, Any]], wanted: StageIdentity) -> dict[str, Any] | None:
    """The entry whose provenance is exactly ``wanted`` (same settings, same weights), if any."""
    for e in entries:
        block = e.get(PROVENANCE_KEY)
        if isinstance(block, dict) and block.get("identity_hash") == wanted.hash:
            return e
    return None


def verify_robustness(run_dir: Path, hint: str | None = None) -> dict[str, Any]:
    """robustness.json of ``run_dir`` after checking it was computed on the weights there now.

    A file written before provenance blocks is checked through the ``weights_sha256`` its
    entries recorded; a StaleError (one line, naming the file and ``hint``) otherwise.
    """
    from xairobust.stages.contract import verify_artefact

    run_dir = Path(run_dir)
    path = run_dir / ROBUSTNESS_JSON
    doc = read_json(path)
    results = doc.get("results") if isinstance(doc.get("results"), list) else []
    shas = {e.get("weights_sha256") for e in results if isinstance(e, dict)}
    return verify_artefact(path, run_dir, hint or f"xairobust attack --run {run_dir}",
                           legacy={"weights": (shas.pop() if len(shas) == 1 else None, run_dir / WEIGHTS)})


def write_robustness(
    run_dir: Path,
    weights: dict[str, dict[str, str]],
    new: list[dict[str, Any]],
    same: Any,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """Merge ``new`` entries into robustness.json and write it atomically; returns the document.

    Entries computed on other weights are dropped (they describe another model); an entry
    ``same`` as a new one is replaced. The document's own provenance names the weights every
    remaining entry was computed on, so :func:`~xairobust.stages.contract.verify_chain` refuses
    the whole file once the weights change.
    """
    entries = current_entries(run_dir, weights)
    for entry in new:
        entries = [e for e in entries if not same(e, entry)] + [entry]
    entries = sorted(entries, key=lambda e: (str(e.get("norm")), float(e.get("eps") or 0), str(e.get("attack")), str(e.get("tag", ""))))
    hashes = sorted(e[PROVENANCE_KEY]["identity_hash"] for e in entries)
    doc = {**summary, "format": FORMAT, "results": entries,
           PROVENANCE_KEY: StageIdentity("attack", FORMAT, {"entries": hashes}, weights).block()}
    return write_sealed(Path(run_dir) / ROBUSTNESS_JSON, doc)


def _batches(split: DataSplit, n: int, batch_size: int, device: torch.device):
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        yield split.inputs(idx, device), split.targets(idx, device)


def _regression_fields(model: nn.Module, split: DataSplit, n: int, adv_all: Tensor, device) -> dict[str, Any]:
    """MAE / Pearson before and after, and the perturbation's SNR in dB (mean over samples)."""
    x = split.inputs(slice(0, n), device)
    y = split.targets(slice(0, n), device).float()
    with torch.no_grad():
        before, after = model(x).float(), model(adv_all).float()
    delta = (adv_all - x).flatten(1)
    snr = 10 * torch.log10(x.flatten(1).pow(2).sum(1) / delta.pow(2).sum(1).clamp_min(1e-30))
    yt = y.cpu().numpy().reshape(n, -1).astype(np.float64)
    b, a = before.cpu().numpy().reshape(n, -1), after.cpu().numpy().reshape(n, -1)
    mae_b, mae_a = float(np.abs(b - yt).mean()), float(np.abs(a - yt).mean())
    return {
        "robust_accuracy": None,
        "mae_before": mae_b,
        "mae_after": mae_a,
        "delta_mae": mae_a - mae_b,
        "corr_before": mean_pearson(b.astype(np.float64), yt),
        "corr_after": mean_pearson(a.astype(np.float64), yt),
        "snr_db": float(snr.mean()),
    }


def attack(run_dir: str | Path, conf: AttackConfig, quiet: bool = False) -> Path:
    """Attack run ``run_dir`` as ``conf`` says; merge the results into its robustness.json."""
    return AttackStage().run(require_run(run_dir), conf, quiet)


def _attack(run_dir: Path, conf: AttackConfig, quiet: bool) -> None:
    """The attacks of ``conf`` not yet recorded on these weights, merged into robustness.json."""
    from xairobust.devices import pick_device

    device = pick_device(conf.device)
    model, meta = load_run(run_dir, device)
    split = _load_split(meta, conf)
    info = split.info
    n = len(split) if conf.n is None else min(conf.n, len(split))
    classification = info.task == "classification"

    stage = AttackStage()
    weights = stamp_inputs(stage.inputs(run_dir, conf), run_dir)
    entries = current_entries(run_dir, weights)
    todo = stage.attacks(conf, classification)
    _check_applicable(todo, conf, info)
    wanted = {name: entry_identity("attack", FORMAT, _settings(conf, name, conf.n), weights) for name in todo}
    pending = [name for name in todo if find_current(entries, wanted[name]) is None]
    if not pending:
        return  # same attacks on the same weights already recorded: nothing to do

    loss_fn = nn.functional.cross_entropy if classification else nn.functional.mse_loss
    generator = torch.Generator(device=device).manual_seed(conf.seed)
    # Every keyword a registered attack may ask for (each takes those its signature names).
    pool = {
        "norm": conf.norm, "eps": conf.eps, "steps": conf.steps, "step_size": conf.resolved_step_size(),
        "restarts": conf.restarts, "random_start": conf.random_start, "loss_fn": loss_fn,
        "task": info.task, "value_range": info.value_range, "generator": generator,
        "num_classes": info.num_outputs, "seed": conf.seed, "batch_size": conf.batch_size, "device": device,
    }
    clean_correct = 0
    correct = {name: 0 for name in pending}
    adv_reg: list[Tensor] = []
    seconds = {name: 0.0 for name in pending}
    batches = math.ceil(n / conf.batch_size)
    with make_progress(quiet) as progress:
        task = progress.add_task(f"attack {conf.norm} eps={conf.eps:g}", total=batches * len(pending), info="")
        for x, y in _batches(split, n, conf.batch_size, device):
            if classification:
                with torch.no_grad():
                    clean_correct += int((model(x).argmax(1) == y).sum())
            for name in pending:
                t0 = time.perf_counter()
                adv = _run_attack(name, model, x, y, pool)
                seconds[name] += time.perf_counter() - t0
                if classification:
                    with torch.no_grad():
                        correct[name] += int((model(adv).argmax(1) == y).sum())
                else:
                    adv_reg.append(adv)
                progress.advance(task)

    new = []
    for name in pending:
        entry = _settings(conf, name, conf.n)
        entry["n"] = n
        entry["weights_sha256"] = weights["weights"]["sha256"]
        if classification:
            entry["robust_accuracy"] = correct[name] / n
            entry["clean_accuracy"] = clean_correct / n
        else:
            entry.update(_regression_fields(model, split, n, torch.cat(adv_reg), device))
        entry["wall_time_s"] = seconds[name]
        entry["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        entry[PROVENANCE_KEY] = wanted[name].block()
        new.append(entry)
    merged = [e for e in entries if not any(_same_key(e, x) for x in new)] + new
    summary = _summary(merged, conf, classification, clean_correct / n if classification else None)
    write_robustness(run_dir, weights, new, _same_key, summary)


def _load_split(meta: dict[str, Any], conf: AttackConfig) -> DataSplit:
    """The attacked split of the run's dataset (all of it; the first ``conf.n`` are attacked)."""
    ds = meta["dataset"]
    source = get_source(ds["name"])
    if conf.split not in source.splits:
        raise ConfigError(f"attack: dataset '{ds['name']}' has no split '{conf.split}' (splits: {', '.join(source.splits)})")
    return source.load(conf.split, resolve_data_dir(conf.data_dir), **ds.get("kwargs", {}))


def _check_applicable(names: list[str], conf: AttackConfig, info: Any) -> None:
    """One-line refusals of attacks that do not fit the run, before minutes of PGD, not after."""
    for name in names:
        want = ATTACKS.meta(name).get("task")  # None: any task (PGD takes the task's loss)
        if want is not None and want != info.task:
            raise ConfigError(f"attack: {name} attacks {want} models; this run is {info.task}")
        check = getattr(ATTACKS.get(name), "applicable", None)
        if check is not None:
            check(tuple(info.input_shape), conf.norm, info.value_range, info.num_outputs)


def _run_attack(name: str, model: nn.Module, x: Tensor, y: Tensor, pool: dict[str, Any]) -> Tensor:
    """The registered attack ``name`` on one batch, given the keywords of ``pool`` its signature names."""
    fn = ATTACKS.get(name)
    params = inspect.signature(fn).parameters
    return fn(model, x, y, **{k: v for k, v in pool.items() if k in params})


def _summary(entries: list[dict[str, Any]], conf: AttackConfig, classification: bool, clean: float | None) -> dict[str, Any]:
    """The headline numbers for the (norm, eps) just attacked (the entries are added by the writer)."""
    here = [e for e in entries if e["norm"] == conf.norm and math.isclose(e["eps"], conf.eps, rel_tol=1e-9)]
    head = (next((e for e in here if e["attack"] == "autoattack"), None)
            or next((e for e in here if e["attack"] == "pgd"), None) or here[-1])
    return {
        "clean_accuracy": clean,
        "robust_accuracy": head.get("robust_accuracy"),
        "headline": head["attack"],
        "headline_norm": head["norm"],
        "headline_eps": head["eps"],
        "task": "classification" if classification else "regression",
    }


@STAGES.register("attack")
class AttackStage(Stage, name="attack", Config=AttackConfig, format=FORMAT, per="run", after="train", order=1,
                         report_input=True):
    """run directory -> robustness.json, one entry per (attack, norm, eps) (see the module docstring)."""

    def inputs(self, run_dir: Path, conf: AttackConfig) -> dict[str, Path]:
        return {"weights": require_run(run_dir) / WEIGHTS}

    def identity(self, run_dir: Path, conf: AttackConfig) -> dict[str, Any]:
        return {"attacks": [_settings(conf, a, conf.n) for a in self.attacks(conf, None)], "autoattack": conf.autoattack}

    def outputs(self, run_dir: Path, conf: AttackConfig) -> list[Path]:
        return [Path(run_dir) / ROBUSTNESS_JSON]

    def hint(self, run_dir: Path, conf: AttackConfig | None = None) -> str:
        if conf is None:
            return f"xairobust attack --run {run_dir}"
        return f"xairobust attack --run {run_dir} --norm {conf.norm} --eps {conf.eps:g}"

    @staticmethod
    def attacks(conf: AttackConfig, classification: bool | None) -> list[str]:
        """``pgd``: PGD, and AutoAttack too when asked for and the task is classification (None:
        unknown); any other registered attack: that one alone."""
        if conf.attack != "pgd":
            return [conf.attack]
        return ["pgd"] + (["autoattack"] if conf.autoattack and classification is not False else [])

    def is_current(self, run_dir: Path, conf: AttackConfig, resolved: StageIdentity | None = None) -> bool:
        """Current when every attack of ``conf`` has an entry computed on these weights with these settings."""
        run_dir = Path(run_dir)
        weights = stamp_inputs(self.inputs(run_dir, conf), run_dir)
        entries = current_entries(run_dir, weights)
        from xairobust.runs import read_run_meta

        task = read_run_meta(run_dir).get("dataset", {}).get("info", {}).get("task")
        names = self.attacks(conf, task == "classification")
        return all(
            find_current(entries, entry_identity("attack", FORMAT, _settings(conf, a, conf.n), weights)) is not None
            for a in names
        )

    def compute(self, run_dir: Path, conf: AttackConfig, resolved: StageIdentity, quiet: bool) -> None:
        _attack(run_dir, conf, quiet)  # robustness.json accumulates entries: written by write_robustness
