"""The visualize stage (run -> visualisations/<kind>.safetensors + <kind>.json) and the fid stage
(visualisations -> visualisations/metrics_<extractor>.csv + .json).

visualize: one registered visualisation (``inversion``, ``generation``, ``feature``; see
xairobust/visualize/) on the run's model, in its input space, seeded, batched on the model's
device; the model stays in evaluation mode and is left in it. The safetensors file is
self-contained (sources, results, targets/classes/units, per-image losses or activations), so
the fid stage and the report need no dataset for the generated side.

fid: with one feature extractor (``inception`` or ``run:<RUN>``),
* ``fid``            FID of all generated images against the real test images of the same classes;
* ``fid_reference``  FID of as many training images (same classes, same count per class) against
                     the same test images: what real data scores (the paper's "Real data" row);
* ``class_fid``      per class c, generated images of c against test images of c (one row per class
                     in the CSV, index = class: runs pair on it in the report's paired test);
* ``feature_distance`` per inverted image, ||f(x_target) - f(x_inverted)||_2 (index = test index).
The CSV has the score-file columns (index, target, metric, value).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from xairobust import config as cfg
from xairobust.config import require
from xairobust.data.base import DatasetInfo, get_dataset
from xairobust.devices import pick_device
from xairobust.errors import ConfigError, RunError
from xairobust.layout import RunLayout
from xairobust.progress import make_progress
from xairobust.provenance import git_commit, versions
from xairobust.registry import VISUALISATIONS
from xairobust.runs import WEIGHTS, load_run, load_tensors, read_run_meta, require_run, save_tensors
from xairobust.runtime import prepare_model
from xairobust.stages.contract import STAGES, Stage, StageIdentity, Written, config_identity, not_identity, verify_chain
from xairobust.stages.options import RuntimeOptions

FORMAT = 1
FOLDER = RunLayout.VISUALISATIONS


@dataclass
class VisualizeConfig(RuntimeOptions):
    """Keys of ``xairobust visualize --config``."""

    kind: str = "inversion"
    preset: str = "boychev"
    params: dict = field(default_factory=dict)  # the kind's Params (steps, eps, step_size, ...)
    n: int = 10  # inversion: target images; generation: images per class; feature: units
    classes: list[int] = field(default_factory=list)  # generation: [] = every class
    units: list[int] = field(default_factory=list)  # feature: [] = n units drawn with the seed
    layer: str | None = None  # module whose output is R (default: the input of the final linear layer)
    seed: int = 0
    batch_size: int = not_identity(64)  # images per PGD batch (memory only)
    data_dir: str | None = not_identity(None)
    # Batch (zoo) use: several kinds in one job (overrides ``kind``) and, when ``fid`` is a
    # non-empty mapping of FidConfig keys, the fid stage after them -- one job per run, so the
    # metrics never race the visualisations they read.
    kinds: list[str] = field(default_factory=list)
    fid: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_runtime("visualize")
        require(self.n >= 1, f"visualize: --n must be >= 1, got {self.n}")
        require(self.batch_size >= 1, f"visualize: --batch-size must be >= 1, got {self.batch_size}")
        for k in [self.kind, *self.kinds]:
            VISUALISATIONS.get(k)  # unknown kind: one line with a did-you-mean

    def parts(self) -> list[VisualizeConfig]:
        """One config per kind (``kinds``, else ``kind``), without the batch-only fields."""
        from dataclasses import replace

        return [replace(self, kind=k, kinds=[], fid={}) for k in (self.kinds or [self.kind])]

    def fid_config(self) -> FidConfig | None:
        if not self.fid:
            return None
        # every kind present in the run (not only this job's), so the one metrics file per
        # extractor is never rewritten with fewer numbers than it had
        data = {"device": self.device, "data_dir": self.data_dir, **self.fid}
        return cfg.build(FidConfig, data, "visualize: fid")


def visual_paths(run_dir: Path, kind: str) -> tuple[Path, Path]:
    return RunLayout(run_dir).visualisation(kind)


def _info(run_dir: Path) -> DatasetInfo:
    d = read_run_meta(run_dir)["dataset"]["info"]
    return DatasetInfo(name=d["name"], task=d["task"], num_outputs=int(d["num_outputs"]),
                       input_shape=tuple(d["input_shape"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                       value_range=tuple(d["value_range"]) if d.get("value_range") else None)


def resolved_params(run_dir: Path, conf: VisualizeConfig) -> Any:
    from xairobust.visualize.base import resolve_params

    cls = VISUALISATIONS.get(conf.kind)
    return resolve_params(cls, conf.kind, conf.preset, _info(run_dir), dict(conf.params))


@STAGES.register("visualize")
class VisualizeStage(Stage, name="visualize", Config=VisualizeConfig, format=FORMAT, per="run", after="train",
                            report_input=True):
    """run directory -> visualisations/<kind>.safetensors + .json (see the module docstring).

    With ``kinds``/``fid`` (a zoo's ``visualize:`` block) one call runs every kind and then the
    fid stage; each kind's document carries its own provenance, and the composite is current
    when every part is.
    """

    # Place in a zoo's job graph (read by the batch planner where the contract declares these).

    def _single(self, conf: VisualizeConfig) -> bool:
        return not conf.kinds and not conf.fid

    def inputs(self, run_dir: Path, conf: VisualizeConfig) -> dict[str, Path]:
        return {"weights": require_run(run_dir) / WEIGHTS}

    def identity(self, run_dir: Path, conf: VisualizeConfig) -> dict[str, Any]:
        if not self._single(conf):
            fconf = conf.fid_config()
            return {"parts": [self.identity(run_dir, p) for p in conf.parts()],
                    "fid": None if fconf is None else cfg.to_dict(fconf)}
        params = resolved_params(Path(run_dir), conf)
        return {**config_identity(conf, drop=("params", "kinds", "fid")), "params": cfg.to_dict(params)}

    def outputs(self, run_dir: Path, conf: VisualizeConfig) -> list[Path]:
        if not self._single(conf):
            out = [p for part in conf.parts() for p in self.outputs(run_dir, part)]
            fconf = conf.fid_config()
            return out + (list(metric_paths(Path(run_dir), fconf.extractor)) if fconf else [])
        return list(visual_paths(Path(run_dir), conf.kind))

    def hint(self, run_dir: Path, conf: VisualizeConfig) -> str:
        return f"xairobust visualize --run {run_dir} --kind {(conf.kinds or [conf.kind])[0]}"

    def is_current(self, run_dir: Path, conf: VisualizeConfig, resolved: StageIdentity | None = None) -> bool:
        if self._single(conf):
            return super().is_current(run_dir, conf, resolved)
        fconf = conf.fid_config()
        parts_ok = all(super(VisualizeStage, self).is_current(run_dir, p) for p in conf.parts())
        return parts_ok and (fconf is None or FidStage().is_current(run_dir, fconf))

    def compute(self, run_dir: Path, conf: VisualizeConfig, resolved: StageIdentity, quiet: bool) -> Written | None:
        if self._single(conf):
            return _visualize(run_dir, conf, resolved, quiet)
        # A zoo's block: each part is an ordinary run of this stage (and of fid), each writing
        # its own document with its own provenance.
        for part in conf.parts():
            self.run(run_dir, part, quiet)
        fconf = conf.fid_config()
        if fconf is not None:
            FidStage().run(run_dir, fconf, quiet)
        return None


def visualize(run_dir: str | Path, conf: VisualizeConfig, quiet: bool = False) -> Path:
    """Write visualisations/<kind>.* for the run; no-op when they are current. Returns the
    tensors file of a single kind, the last document of a zoo block."""
    out = VisualizeStage().run(Path(run_dir), conf, quiet)
    return visual_paths(Path(run_dir), conf.kind)[0] if not conf.kinds and not conf.fid else out


def _visualize(run_dir: Path, conf: VisualizeConfig, resolved: StageIdentity, quiet: bool) -> Written:
    from xairobust.perturb import eval_mode
    from xairobust.visualize._core import Representation
    from xairobust.visualize.base import Context

    model, meta = load_run(run_dir)
    cls = VISUALISATIONS.get(conf.kind)
    params = resolved_params(run_dir, conf)
    device = pick_device(conf.device)
    model.to(device)
    ds = meta["dataset"]
    test = get_dataset(ds["name"], "test", conf.data_dir, **ds.get("kwargs", {}))
    example = test.inputs(torch.tensor([0])).to(device)
    prepare_model(model, tuple(example.shape[1:]), conf.precision, conf.channels_last)
    vis = cls()
    with eval_mode(model, freeze=True):  # the objectives are functions of the input alone
        rep = Representation(model, example, conf.layer)
        ctx = Context(model=model, test=test, rep=rep, device=device, n=conf.n, seed=conf.seed,
                      batch_size=conf.batch_size, classes=list(conf.classes), units=list(conf.units))
        total = vis.work(ctx, params)
        start, cpu_start = time.perf_counter(), time.process_time()
        with make_progress(quiet) as progress:
            task = progress.add_task(f"visualize {conf.kind}", total=total, info="image-steps")
            ctx.advance = lambda k: progress.advance(task, k)
            tensors, summary = vis.run(ctx, params)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    n_images = int(len(tensors["results"]))
    tensors_path, _ = visual_paths(run_dir, conf.kind)
    save_tensors(tensors_path, tensors)
    doc = {
        "format": FORMAT,
        "kind": conf.kind,
        "preset": conf.preset,
        "params": cfg.to_dict(params),
        "representation": rep.describe,
        "layer": conf.layer,
        "seed": conf.seed,
        "n": conf.n,
        "images": n_images,
        "summary": summary,
        "value_range": list(test.info.value_range) if test.info.value_range else None,
        "batch_size": conf.batch_size,
        "precision": conf.precision,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "wall_time_s": round(wall, 3),
        "wall_time_per_image_s": round(wall / max(1, n_images), 4),
        # CPU seconds of this process (all its threads): on a shared machine a steadier measure
        "cpu_time_s": round(cpu, 3),
        "cpu_time_per_image_s": round(cpu / max(1, n_images), 4),
        "run": {"path": str(run_dir), "label": meta.get("label"), "weights_sha256": meta.get("weights_sha256")},
        "config_hash": resolved.hash[:8],
        "versions": versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return Written(doc, (tensors_path,))  # a damaged tensor file is refused on read


def load_visualisation(run_dir: str | Path, kind: str, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, document) of a finished visualize stage; stale or absent -> one-line RunError."""
    tensors_path, json_path = visual_paths(Path(run_dir), kind)
    hint = f"xairobust visualize --run {run_dir} --kind {kind}"
    if not json_path.is_file() or not tensors_path.is_file():
        raise RunError(f"no {kind} visualisation in {run_dir}; run `{hint}` first")
    doc = verify_chain(json_path, Path(run_dir), hint) if verify else _read(json_path)
    return load_tensors(tensors_path), doc


def _read(path: Path) -> dict[str, Any]:
    from xairobust.runs import read_json

    return read_json(path)


# ---------------------------------------------------------------------------------------------
# fid: FID of generated images and feature distance of inversions


@dataclass
class FidConfig:
    """Keys of ``xairobust fid --config``."""

    extractor: str = "inception"  # inception | run:<RUN>
    inception_weights: str | None = not_identity(None)  # default: the library's cache path (its sha256 is an input)
    layer: str | None = None  # FID features (inception: 2048; run: its representation)
    distance_layer: str | None = None  # feature distance (inception: 192, the paper's; run: its representation)
    kinds: list[str] = field(default_factory=lambda: ["generation", "inversion"])
    real: int = 0  # real test images per class for FID (0: all)
    batch_size: int = not_identity(128)
    device: str = not_identity("auto")
    data_dir: str | None = not_identity(None)

    def __post_init__(self) -> None:
        require(self.real >= 0, "fid: --real must be >= 0 (0: every test image of the class)")
        bad = [k for k in self.kinds if k not in ("generation", "inversion")]
        require(not bad and bool(self.kinds), f"fid: --kinds must be among generation, inversion, got {bad or 'none'}")

    def fid_layer(self) -> str | None:
        return self.layer or ("2048" if self.extractor == "inception" else None)

    def dist_layer(self) -> str | None:
        return self.distance_layer or ("192" if self.extractor == "inception" else None)


def metric_paths(run_dir: Path, extractor: str) -> tuple[Path, Path]:
    from xairobust.visualize.extractors import extractor_slug

    return RunLayout(run_dir).visual_metrics(extractor_slug(extractor))


def _present_kinds(run_dir: Path, conf: FidConfig) -> list[str]:
    kinds = [k for k in conf.kinds if visual_paths(run_dir, k)[1].is_file()]
    if not kinds:
        raise RunError(
            f"fid: {run_dir} has no {' or '.join(conf.kinds)} visualisation; run"
            f" `xairobust visualize --run {run_dir} --kind {conf.kinds[0]}` first"
        )
    return kinds


def _extractor_file(conf: FidConfig) -> Path:
    from xairobust.visualize.extractors import default_inception_path

    name, _, arg = conf.extractor.partition(":")
    if name == "run":
        return require_run(arg) / WEIGHTS
    if name == "inception":
        path = Path(conf.inception_weights).expanduser() if conf.inception_weights else default_inception_path()
        if not path.is_file():
            from xairobust.visualize.extractors import InceptionExtractor

            InceptionExtractor(inception_weights=str(path))  # raises the one-line error naming the path
        return path
    raise ConfigError(f"fid: unknown --extractor '{conf.extractor}'; use inception or run:<RUN>")


# An ordinary stage after visualize: a zoo's `fid:` key plans it per run once the run's
# visualize job is done (the planner places it by `after`); `xairobust fid` runs it directly.
# (A zoo's `visualize: {fid: {...}}` block still runs it inside the visualize job.)
@STAGES.register("fid")
class FidStage(Stage, name="fid", Config=FidConfig, format=FORMAT, per="run", after="visualize", order=2.6,
                      report_input=True, hint_options=("extractor",)):
    """visualisations/{generation,inversion} -> visualisations/metrics_<extractor>.csv + .json."""

    def inputs(self, run_dir: Path, conf: FidConfig) -> dict[str, Path]:
        run_dir = require_run(run_dir)
        out = {}
        for kind in _present_kinds(run_dir, conf):
            t, j = visual_paths(run_dir, kind)
            out[kind] = t
            out[f"{kind}_doc"] = j
        out["extractor_weights"] = _extractor_file(conf)
        return out

    def identity(self, run_dir: Path, conf: FidConfig) -> dict[str, Any]:
        return {"extractor": conf.extractor, "layer": conf.fid_layer(), "distance_layer": conf.dist_layer(),
                "kinds": _present_kinds(Path(run_dir), conf), "real": conf.real}

    def outputs(self, run_dir: Path, conf: FidConfig) -> list[Path]:
        return list(metric_paths(Path(run_dir), conf.extractor))

    def compute(self, run_dir: Path, conf: FidConfig, resolved: StageIdentity, quiet: bool) -> Written:
        return _fid(run_dir, conf, resolved, quiet)


def fid(run_dir: str | Path, conf: FidConfig, quiet: bool = False) -> Path:
    return FidStage().run(Path(run_dir), conf, quiet)


def _stratified_per_class(labels: torch.Tensor, classes: list[int], per_class: int) -> torch.Tensor:
    """The first ``per_class`` indices of each class in stored order (all when 0)."""
    out = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        out.append(idx[:per_class] if per_class else idx)
    return torch.cat(out).sort().values


def _fid(run_dir: Path, conf: FidConfig, resolved: StageIdentity, quiet: bool) -> Written:
    from xairobust.visualize.extractors import build_extractor
    from xairobust.visualize.metrics import extract, feature_distance, frechet_distance

    meta = read_run_meta(run_dir)
    ds = meta["dataset"]
    device = pick_device(conf.device)
    kinds = _present_kinds(run_dir, conf)
    for kind in kinds:  # every input verified before the first feature is extracted
        load_visualisation(run_dir, kind)
    rows: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"format": FORMAT, "extractor": conf.extractor}
    start = time.perf_counter()
    with make_progress(quiet) as progress:
        def bar(desc: str, total: int):
            task = progress.add_task(desc, total=total, info="")
            return lambda k: progress.advance(task, k)

        if "generation" in kinds:
            gen, gdoc = load_visualisation(run_dir, "generation")
            ext = build_extractor(conf.extractor, layer=conf.fid_layer(), inception_weights=conf.inception_weights,
                                  device=device)
            classes = sorted(set(gen["classes"].tolist()))
            test = get_dataset(ds["name"], "test", conf.data_dir, **ds.get("kwargs", {}))
            train = get_dataset(ds["name"], "train", conf.data_dir, **ds.get("kwargs", {}))
            real_idx = _stratified_per_class(test.y, classes, conf.real)
            counts = {c: int((gen["classes"] == c).sum()) for c in classes}
            ref_idx = torch.cat([torch.nonzero(train.y == c).flatten()[: counts[c]] for c in classes])
            f_real = extract(ext, test.inputs(real_idx), conf.batch_size, device, bar("fid: real test images", len(real_idx)))
            f_fake = extract(ext, gen["results"], conf.batch_size, device, bar("fid: generated images", len(gen["results"])))
            f_src = extract(ext, gen["sources"], conf.batch_size, device, bar("fid: normal draws", len(gen["sources"])))
            f_ref = extract(ext, train.inputs(ref_idx), conf.batch_size, device, bar("fid: reference train images", len(ref_idx)))
            real_labels = test.y[real_idx]
            per_class = {}
            for c in classes:
                v = frechet_distance(f_real[real_labels == c], f_fake[gen["classes"] == c])
                per_class[str(c)] = v
                rows.append({"index": c, "target": c, "metric": "class_fid", "value": v})
            doc["generation"] = {
                "fid": frechet_distance(f_real, f_fake),
                "fid_sources": frechet_distance(f_real, f_src),
                "fid_reference": frechet_distance(f_real, f_ref),
                "class_fid": per_class,
                "class_fid_mean": float(pd.Series(per_class).mean()),
                "generated": len(f_fake),
                "real": len(f_real),
                "reference": "training images, same classes and count per class as the generated set",
                "layer": ext.record()["layer"],
            }
            doc["extractor_record"] = ext.record()
            doc["generation_params"] = {k: gdoc.get(k) for k in ("preset", "params", "n", "seed", "representation")}
        if "inversion" in kinds:
            inv, idoc = load_visualisation(run_dir, "inversion")
            ext = build_extractor(conf.extractor, layer=conf.dist_layer(), inception_weights=conf.inception_weights,
                                  device=device)
            f_t = extract(ext, inv["targets"], conf.batch_size, device, bar("distance: targets", len(inv["targets"])))
            f_x = extract(ext, inv["results"], conf.batch_size, device, bar("distance: inversions", len(inv["results"])))
            f_s = extract(ext, inv["sources"], conf.batch_size, device, bar("distance: sources", len(inv["sources"])))
            d = feature_distance(f_t, f_x)
            d_src = feature_distance(f_t, f_s)
            for i, (idx, lab) in enumerate(zip(inv["indices"].tolist(), inv["labels"].tolist(), strict=True)):
                rows.append({"index": idx, "target": lab, "metric": "feature_distance", "value": float(d[i])})
            doc["inversion"] = {
                "feature_distance_mean": float(d.mean()),
                "feature_distance_std": float(d.std(unbiased=True)) if len(d) > 1 else math.nan,
                "feature_distance_sources_mean": float(d_src.mean()),
                "n": len(d),
                "layer": ext.record()["layer"],
            }
            doc.setdefault("extractor_record", ext.record())
            doc["distance_extractor_record"] = ext.record()
            doc["inversion_params"] = {k: idoc.get(k) for k in ("preset", "params", "n", "seed", "representation")}
    wall = time.perf_counter() - start
    csv_path, _ = metric_paths(run_dir, conf.extractor)
    frame = pd.DataFrame(rows, columns=["index", "target", "metric", "value"])
    from xairobust.runs import write_text_atomic

    write_text_atomic(csv_path, frame.to_csv(index=False))
    doc.update({
        "device": str(device), "wall_time_s": round(wall, 3),
        "run": {"path": str(run_dir), "label": meta.get("label"), "weights_sha256": meta.get("weights_sha256")},
        "config_hash": resolved.hash[:8], "versions": versions(),
        "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return Written(doc, (csv_path,))  # a hand-edited CSV is refused on read
