"""The train stage: config -> run directory with weights, metadata and history."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

from xairobust import config as cfg
from xairobust.config import require
from xairobust.data.base import DataSplit, get_source, resolve_data_dir
from xairobust.devices import pick_device
from xairobust.errors import ConfigError, RunError
from xairobust.evaluation import evaluate, headline
from xairobust.layout import RunLayout
from xairobust.models.base import create_model
from xairobust.progress import make_progress
from xairobust.provenance import config_hash, git_commit, versions
from xairobust.registry import METHODS
from xairobust.runs import (
    CONFIG_YAML,
    HISTORY_CSV,
    RUN_JSON,
    WEIGHTS,
    check_finite_weights,
    load_run,
    load_tensors,
    run_header,
    save_model,
    write_text_atomic,
)
from xairobust.stages.contract import STAGES, Stage, StageIdentity, Written, config_identity, not_identity
from xairobust.training.base import TrainContext, TrainingMethod
from xairobust.validate import check_model_input

FORMAT = 1
CHECKPOINTS = RunLayout.CHECKPOINTS
# safetensors metadata key of a checkpoint: the identity hash of the run that wrote it, so a
# checkpoint left by an interrupted run of another config is never taken for this run's.
CHECKPOINT_IDENTITY = "xairobust.run_identity"


@dataclass
class TrainConfig:
    """Everything that determines a trained model. Keys of ``xairobust train --config``."""

    dataset: str = "digits"
    dataset_kwargs: dict = field(default_factory=dict)
    model: str = "digits_cnn"
    model_kwargs: dict = field(default_factory=dict)
    method: str = "standard"
    method_params: dict = field(default_factory=dict)
    label: str | None = None  # row name in reports; default: the method name
    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant", "multistep"] = "cosine"
    milestones: list[int] = field(default_factory=list)  # epochs where multistep divides lr by 10
    seed: int = 0
    init: str | None = None  # run directory whose weights start this run (fine-tuning)
    save_every: int = 0  # keep checkpoints/epoch_NNN.safetensors every N epochs (0: none)
    patience: int = 0  # early stopping on the validation headline metric (0: off)
    # Hold out this fraction of the training split (stratified, fixed seed) as the validation
    # split when the dataset has none (CIFAR-10, ImageNette); 0: no validation split.
    val_fraction: float = 0.0
    eval_batch_size: int = not_identity(256)
    device: str = not_identity("auto")
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast on GPUs
    channels_last: bool = False
    data_dir: str | None = not_identity(None)
    out: str | None = not_identity(None)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, f"train: --epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, f"train: --batch-size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"train: --lr must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, f"train: --weight-decay must be >= 0, got {self.weight_decay}")
        fixed = sorted({"num_outputs", "in_channels", "mean", "std"} & set(self.model_kwargs))
        require(not fixed, f"train: model_kwargs {', '.join(fixed)} come from the dataset; remove them")
        require(0 <= self.momentum <= 1, f"train: --momentum must be in [0, 1], got {self.momentum}")
        require(self.eval_batch_size >= 1, f"train: --eval-batch-size must be >= 1, got {self.eval_batch_size}")
        require(all(m >= 1 for m in self.milestones), f"train: --milestones must be epochs >= 1, got {self.milestones}")
        require(self.save_every >= 0, f"train: --save-every must be >= 0, got {self.save_every}")
        require(self.patience >= 0, f"train: --patience must be >= 0, got {self.patience}")
        require(0 <= self.val_fraction < 1, f"train: --val-fraction must be in [0, 1), got {self.val_fraction}")

    def resolved_label(self) -> str:
        return self.label or self.method

    def identity(self) -> dict[str, Any]:
        """The parts that determine the trained weights (for the run's config hash)."""
        return config_identity(self)


def build_method(name: str, params: dict[str, Any]) -> TrainingMethod:
    """Instantiate registered method ``name`` with validated ``params``."""
    cls = METHODS.get(name)
    return cls(cfg.build(cls.Params, params, f"method '{name}'"))


def _optimizer(conf: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if conf.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=conf.lr, momentum=conf.momentum, weight_decay=conf.weight_decay)
    if conf.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=conf.lr, weight_decay=conf.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=conf.lr, weight_decay=conf.weight_decay)


def _scheduler(conf: TrainConfig, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if conf.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=conf.epochs)
    if conf.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=conf.milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _criterion(task: str):
    return nn.functional.cross_entropy if task == "classification" else nn.functional.mse_loss


def model_kwargs_for(conf: TrainConfig, info) -> dict[str, Any]:
    """create_model kwargs: the dataset's shape and normalisation plus the config's extras."""
    kwargs = {
        "num_outputs": info.num_outputs,
        "in_channels": info.input_shape[0],
        "mean": list(info.mean),
        "std": list(info.std),
    }
    kwargs.update(conf.model_kwargs)
    return kwargs


def init_from_run(model: nn.Module, init: str, model_name: str, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Copy weights from run ``init`` (trained or imported); returns what was done, for run.json.

    The architecture must be the same (name and every kwarg but ``num_outputs``, ``mean`` and
    ``std``). When the class count differs the classifier head is re-initialised: the tensors
    whose shapes differ, which must all be output-sized in their first dimension (anything else
    is refused). The input normalisation stays this run's (the dataset's, or ``model_kwargs``).
    """
    from xairobust.runs import read_run_meta

    meta = read_run_meta(init)
    other = meta["model"]
    free = ("num_outputs", "mean", "std", "clamp")  # the input transform is the new dataset's
    if other["name"] != model_name or _fixed(other["kwargs"], free) != _fixed(model_kwargs, free):
        raise ConfigError(
            f"train: --init {init} holds a '{other['name']}' model with other settings;"
            f" this run trains '{model_name}' ({model_kwargs}), which cannot start from it"
        )
    source, _ = load_run(init)
    src = {k: v for k, v in source.state_dict().items() if not k.startswith("normalize.")}
    n_src, n_dst = int(other["kwargs"].get("num_outputs", 0)), int(model_kwargs.get("num_outputs", 0))
    head = _head_keys(src, model.state_dict(), n_src, n_dst, init)
    model.load_state_dict({k: v for k, v in src.items() if k not in head}, strict=False)
    return {
        "run": str(init),
        "method": (meta.get("method") or {}).get("name"),
        "weights_sha256": meta.get("weights_sha256"),
        "reinitialised": head,  # the classifier head, when the class count differs
        "source_num_outputs": n_src,
        "source_normalisation": {"mean": other["kwargs"].get("mean"), "std": other["kwargs"].get("std")},
    }


def _fixed(kwargs: dict[str, Any], free: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in free}


def _head_keys(src: dict[str, Any], dst: dict[str, Any], n_src: int, n_dst: int, init: str) -> list[str]:
    """Keys to leave freshly initialised: those whose shape differs only in the output dimension."""
    missing = [k for k in dst if k not in src and not k.startswith("normalize.")]
    unexpected = [k for k in src if k not in dst]
    if missing or unexpected:
        raise ConfigError(f"train: --init {init}: weights do not fit (missing {missing[:5]}, unexpected {unexpected[:5]})")
    head = [k for k in src if tuple(src[k].shape) != tuple(dst[k].shape)]
    for k in head:
        a, b = tuple(src[k].shape), tuple(dst[k].shape)
        if not (n_src != n_dst and a[:1] == (n_src,) and b[:1] == (n_dst,) and a[1:] == b[1:]):
            raise ConfigError(f"train: --init {init}: '{k}' has shape {a} there and {b} here; only a classifier head"
                              f" of another class count ({n_src} -> {n_dst}) can be re-initialised")
    return head


# The held-out validation images depend on this seed only (not on the training seed), so every
# run of a zoo is selected on the same images.
VAL_SPLIT_SEED = 0


def split_validation(split: DataSplit, fraction: float) -> tuple[DataSplit, DataSplit]:
    """(train, val): a stratified random ``fraction`` of ``split`` held out, without augmentation."""
    gen = torch.Generator().manual_seed(VAL_SPLIT_SEED)
    y = split.y
    if split.info.task == "classification":
        held = []
        for c in torch.unique(y):
            members = torch.nonzero(y == c).flatten()
            members = members[torch.randperm(len(members), generator=gen)]
            held.append(members[: round(fraction * len(members))])
        val_idx = torch.cat(held)
    else:
        val_idx = torch.randperm(len(y), generator=gen)[: round(fraction * len(y))]
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val_idx] = False
    val = split.subset(torch.sort(val_idx).values)
    val.augment = None
    return split.subset(torch.nonzero(keep).flatten()), val


def resident(split: DataSplit, device: torch.device) -> DataSplit:
    """The split with its tensors moved to ``device`` once (uint8 CIFAR-10 is 150 MB), so that
    batches are gathered and augmented there instead of being copied from the host each step."""
    return DataSplit(
        split.x.to(device), split.y.to(device), split.info, split.augment, {k: v.to(device) for k, v in split.extras.items()}
    )


def save_checkpoint(path: Path, model: nn.Module, identity_hash: str, epoch: int) -> None:
    """A checkpoint that names the run identity it belongs to (checked by score-epochs)."""
    from xairobust.runs import save_tensors

    save_tensors(path, dict(model.state_dict()), metadata={CHECKPOINT_IDENTITY: identity_hash, "epoch": str(epoch)})


def _history_csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _train_epoch(
    model: nn.Module,
    method: TrainingMethod,
    split: DataSplit,
    conf: TrainConfig,
    ctx: TrainContext,
    opt: torch.optim.Optimizer,
    data_gen: torch.Generator,
    progress=None,
    task_id=None,
    *,
    on_batch: Callable[[dict[str, float]], None] | None = None,
    nonfinite: Literal["raise", "stop"] = "raise",
) -> dict[str, float]:
    """One pass over the training split in a seeded random order; returns mean logged values.

    The one training loop: ``train`` and ``tune-lambda`` (whose candidates fine-tune for an
    epoch) both run it. ``on_batch`` sees each batch's logs (after its step); with
    ``nonfinite="stop"`` a non-finite loss ends the epoch (the result then has
    ``"nonfinite": 1.0``) instead of raising.
    """
    model.train()
    order = torch.randperm(len(split), generator=data_gen)
    sums: dict[str, float] = {}
    count = 0
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=conf.precision == "bf16")
    order = order.to(split.x.device)
    for start in range(0, len(order), conf.batch_size):
        idx = order[start : start + conf.batch_size]
        x = split.inputs(idx, ctx.device)
        y = split.targets(idx, ctx.device)
        if split.augment is not None:
            x = split.augment(x, data_gen)
        if conf.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx.extras = {k: v[idx].to(ctx.device) for k, v in split.extras.items()}
        with autocast:
            loss, logs = method.loss(model, x, y, ctx)
        if not torch.isfinite(loss):
            if nonfinite == "stop":
                out = {f"train_{k}": v / count for k, v in sums.items()} if count else {}
                return {**out, "nonfinite": 1.0}
            raise RunError(
                f"train: the loss became {float(loss)} in epoch {ctx.epoch + 1};"
                " lower --lr or the method's regularisation weight"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Methods such as bim_adv take further steps on the same batch after the main one.
        for extra_loss, extra_logs in method.extra_steps(model, x, y, ctx):
            if not torch.isfinite(extra_loss):
                raise RunError(f"train: an extra step's loss became {float(extra_loss)} in epoch {ctx.epoch + 1}; lower --lr")
            opt.zero_grad(set_to_none=True)
            extra_loss.backward()
            opt.step()
            logs = {**logs, **extra_logs}
        n = len(idx)
        count += n
        logs = {"loss": float(loss.detach()), **logs}
        if on_batch is not None:
            on_batch(logs)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v * n
        if progress is not None:
            progress.update(task_id, advance=1, info=f"loss {sums['loss'] / count:.4f}")
    return {f"train_{k}": v / count for k, v in sums.items()}


train_epoch = _train_epoch  # public name of the one training loop


@STAGES.register("train")
class TrainStage(Stage, name="train", Config=TrainConfig, format=FORMAT, owns_dir=True, moves_leftovers=True,
                        per="run", after=None, order=0):
    """config -> run directory (weights, history, config, run.json last); an interrupted run's
    partial checkpoints go aside (moves_leftovers)."""

    def inputs(self, run_dir: Path, conf: TrainConfig) -> dict[str, Path]:
        # Fine-tuning starts from another run's weights: they are an input of this run.
        return {"init": require_run_weights(conf.init)} if conf.init else {}

    def outputs(self, run_dir: Path, conf: TrainConfig) -> list[Path]:
        run_dir = Path(run_dir)
        return [run_dir / WEIGHTS, run_dir / HISTORY_CSV, run_dir / CONFIG_YAML, run_dir / RUN_JSON]

    def hint(self, run_dir: Path, conf: TrainConfig | None = None) -> str:
        return f"xairobust train --config {Path(run_dir) / CONFIG_YAML} --out {run_dir} --force"

    def accepts(self, doc: dict[str, Any], resolved: StageIdentity) -> bool:
        # Runs written before provenance blocks are matched on their legacy config hash.
        return doc.get("provenance") is None and doc.get("config_hash") == config_hash(resolved.identity)

    def preflight(self, run_dir: Path, conf: TrainConfig) -> None:
        build_method(conf.method, conf.method_params)
        # model x dataset checked on one zero batch before any data is read or anything written
        check_model_input(lambda info: create_model(conf.model, **model_kwargs_for(conf, info)), get_source(conf.dataset),
                          conf.dataset_kwargs, f"train: model '{conf.model}' on dataset '{conf.dataset}'")
        if conf.init:  # damaged --init weights fail now, before anything is moved or loaded
            check_finite_weights(load_tensors(require_run_weights(conf.init)), f"train: --init {conf.init}")

    def compute(self, run_dir: Path, conf: TrainConfig, resolved: StageIdentity, quiet: bool) -> Written:
        return _train(conf, run_dir, resolved, quiet)


def require_run_weights(run: str | Path) -> Path:
    from xairobust.runs import require_run

    return require_run(run) / WEIGHTS


def checkpoint_identity(path: Path) -> str | None:
    """The run identity hash a checkpoint was written with (None: foreign or unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get(CHECKPOINT_IDENTITY)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not this run's
        return None


def train(conf: TrainConfig, out: str | Path, quiet: bool = False, force: bool = False) -> Path:
    """Train one model as ``conf`` says and write the run directory ``out``. Returns ``out``.

    Re-running with the same config is a no-op; ``force`` replaces a run of another config,
    moving it and everything computed from it (robustness.json, attributions/, scores/, ...)
    aside into ``out/.replaced/<timestamp>/`` first. An interrupted run's leftovers (partial
    checkpoints) are moved aside the same way before training starts.
    """
    TrainStage().run(Path(out), conf, quiet, force)
    return Path(out)


def _splits(conf: TrainConfig) -> tuple[DataSplit, DataSplit | None, DataSplit]:
    """(train, validation or None, test) of the dataset; the validation split is the dataset's own,
    else ``val_fraction`` of the training split."""
    source = get_source(conf.dataset)
    root = resolve_data_dir(conf.data_dir)
    train_split = source.load("train", root, **conf.dataset_kwargs)
    test_split = source.load("test", root, **conf.dataset_kwargs)
    val_split = source.load("val", root, **conf.dataset_kwargs) if "val" in source.splits else None
    if val_split is None and conf.val_fraction > 0:
        train_split, val_split = split_validation(train_split, conf.val_fraction)
    require(len(train_split) > 0, f"train: no training samples left after --val-fraction {conf.val_fraction}")
    require(
        conf.patience == 0 or val_split is not None,
        f"train: --patience needs a validation split, and dataset '{conf.dataset}' has none: set --val-fraction",
    )
    return train_split, val_split, test_split


def _train(conf: TrainConfig, out: Path, resolved: StageIdentity, quiet: bool) -> Written:
    method = build_method(conf.method, conf.method_params)
    device = pick_device(conf.device)
    train_split, val_split, test_split = _splits(conf)
    info = train_split.info

    torch.manual_seed(conf.seed)
    kwargs = model_kwargs_for(conf, info)
    model = create_model(conf.model, **kwargs)
    init_info = init_from_run(model, conf.init, conf.model, kwargs) if conf.init else None
    model.to(device)
    if conf.channels_last:
        model.to(memory_format=torch.channels_last)
    ctx = TrainContext(
        task=info.task,
        criterion=_criterion(info.task),
        num_outputs=info.num_outputs,
        value_range=info.value_range,
        generator=torch.Generator(device=device).manual_seed(conf.seed + 1),
        device=device,
        total_epochs=conf.epochs,
        # Empty per-sample extras, so that prepare() can refuse a dataset without the targets a
        # method needs (e.g. a2m2e_joint without mid-level annotations) before anything is written.
        extras={k: v[:0].to(device) for k, v in train_split.extras.items()},
    )
    method.prepare(model, ctx)
    if device.type == "cuda":
        train_split = resident(train_split, device)

    out.mkdir(parents=True, exist_ok=True)
    start_time = time.perf_counter()
    history, best_epoch = _fit(model, method, conf, ctx, (train_split, val_split, test_split), out, resolved, quiet)
    wall = time.perf_counter() - start_time
    final = evaluate(model, test_split, conf.eval_batch_size, device)
    return _finish(conf, out, model, method, info, kwargs, init_info, history, best_epoch, final, wall, device)


def _fit(model: nn.Module, method: TrainingMethod, conf: TrainConfig, ctx: TrainContext,
         splits: tuple[DataSplit, DataSplit | None, DataSplit], out: Path, resolved: StageIdentity,
         quiet: bool) -> tuple[list[dict[str, Any]], int]:
    """The epochs: train, evaluate, keep checkpoints, stop early. Returns (history rows, best
    validation epoch or 0); with early stopping the model ends with the best epoch's weights."""
    train_split, val_split, test_split = splits
    info, device = train_split.info, ctx.device
    opt = _optimizer(conf, model)
    sched = _scheduler(conf, opt)
    data_gen = torch.Generator().manual_seed(conf.seed)
    history: list[dict[str, Any]] = []
    best_score, best_state, best_epoch, waited = -math.inf, None, 0, 0
    batches = math.ceil(len(train_split) / conf.batch_size)
    with make_progress(quiet) as progress:
        task_id = progress.add_task(f"train {conf.method}", total=conf.epochs * batches, info="")
        for epoch in range(conf.epochs):
            ctx.epoch = epoch
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
            row.update(_train_epoch(model, method, train_split, conf, ctx, opt, data_gen, progress, task_id))
            sched.step()
            test_metrics = evaluate(model, test_split, conf.eval_batch_size, device)
            row.update({f"test_{k}": v for k, v in test_metrics.items()})
            if val_split is not None:
                val_metrics = evaluate(model, val_split, conf.eval_batch_size, device)
                row.update({f"val_{k}": v for k, v in val_metrics.items()})
                score = headline(val_metrics, info.task)
                if score > best_score:
                    best_score, best_epoch, waited = score, epoch + 1, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    waited += 1
            row["time_s"] = time.perf_counter() - t0
            history.append(row)
            if conf.save_every and (epoch + 1) % conf.save_every == 0:
                save_checkpoint(out / CHECKPOINTS / f"epoch_{epoch + 1:03d}.safetensors", model, resolved.hash, epoch + 1)
            if conf.patience and waited >= conf.patience:
                break
    if conf.patience and best_state is not None:
        model.load_state_dict(best_state)  # early stopping keeps the best validation epoch
    return history, best_epoch


def _finish(conf: TrainConfig, out: Path, model: nn.Module, method: TrainingMethod, info: Any, kwargs: dict[str, Any],
            init_info: Any, history: list[dict[str, Any]], best_epoch: int, final: dict[str, Any], wall: float,
            device: torch.device) -> Written:
    """Write the weights, history.csv and config.yaml; run.json's document (written last)."""
    resolved_conf = cfg.to_dict(conf)
    resolved_conf["out"] = str(out)
    weights_sha = save_model(out / WEIGHTS, model)
    write_text_atomic(out / HISTORY_CSV, _history_csv(history))
    write_text_atomic(out / CONFIG_YAML, yaml.safe_dump(resolved_conf, sort_keys=False))
    meta = {
        **run_header(conf.resolved_label(), conf.dataset, conf.dataset_kwargs, info, conf.model, kwargs),
        "method": {"name": conf.method, "params": cfg.to_dict(method.params), **method.describe()},
        "seed": conf.seed,
        "training": {k: resolved_conf[k] for k in ("epochs", "batch_size", "optimizer", "lr", "momentum",
                                              "weight_decay", "schedule", "milestones", "init",
                                              "patience", "val_fraction", "precision",
                                              "channels_last")},
        "init_from": init_info,
        "epochs_run": len(history),
        "best_epoch": best_epoch or None,
        "test": final,
        "clean_accuracy": final.get("accuracy"),
        "wall_time_s": wall,
        "device": str(device),
        "config_hash": config_hash(conf.identity()),
        "weights_sha256": weights_sha,
        "versions": versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return Written(meta)  # run.json, written last by the contract: its presence marks a finished run
