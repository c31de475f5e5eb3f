"""The tune-lambda stage on the contract: NsLoss's lambda for a standard run (Moshe et al. sec. 4.4).

The protocol and its command live in ``xairobust.commands.tune_lambda``; its candidates train
with the one training loop (``stages.train.train_epoch``). This class gives it the contract's
shape, so a zoo can run it per run (``tune-lambda: {eps_ns: 0.5}``) and its JSON carries the
provenance of the weights it was computed from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xairobust import config as cfg
from xairobust.runs import WEIGHTS, require_run
from xairobust.stages.contract import STAGES, Stage, StageIdentity


@dataclass
class TuneLambdaConfig:
    """The options of ``xairobust tune-lambda`` (``nsloss``: NsLoss parameters such as eps_ns, layers)."""

    nsloss: dict = field(default_factory=dict)
    lr: float = 1e-4
    optimizer: str = "sgd"
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 0.0
    batches: int = 10
    iterations: int = 5
    window: int = 5
    tolerance: float = 0.0
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    out: str | None = None

    def options(self) -> dict[str, Any]:
        d = cfg.to_dict(self)
        return {**d.pop("nsloss"), **{k: v for k, v in d.items() if v is not None}}


@STAGES.register("tune-lambda")
class TuneLambdaStage(Stage):
    name = "tune-lambda"
    Config = TuneLambdaConfig
    per = "run"
    after = "train"
    order = 1.2

    def inputs(self, run_dir: Path, conf: TuneLambdaConfig) -> dict[str, Path]:
        return {"weights": require_run(run_dir) / WEIGHTS}

    def identity(self, run_dir: Path, conf: TuneLambdaConfig) -> dict[str, Any]:
        # What tune_lambda() records as its identity (see commands/tune_lambda.py).
        from xairobust.training.nsloss import NsLossParams

        params = cfg.to_dict(cfg.build(NsLossParams, {"lam": 1.0, **conf.nsloss}, "tune-lambda"))
        params.pop("lam")
        training = {"lr": conf.lr, "optimizer": conf.optimizer, "batch_size": conf.batch_size,
                    "momentum": conf.momentum, "weight_decay": conf.weight_decay, "window": conf.window,
                    "batches": conf.batches, "iterations": conf.iterations, "seed": conf.seed}
        return {"nsloss_params": params, "training": training, "tolerance": conf.tolerance}

    def outputs(self, run_dir: Path, conf: TuneLambdaConfig) -> list[Path]:
        return [Path(conf.out) if conf.out else Path(run_dir) / "tune_lambda.json"]

    def hint(self, run_dir: Path, conf: TuneLambdaConfig | None = None) -> str:
        return f"xairobust tune-lambda --run {run_dir}"

    def run(self, run_dir: Path, conf: TuneLambdaConfig, quiet: bool = False) -> Path:
        from xairobust.commands.tune_lambda import tune_lambda

        resolved: StageIdentity = self.resolve(run_dir, conf)
        if self.is_current(run_dir, conf, resolved):
            return self.outputs(run_dir, conf)[0]
        path, _ = tune_lambda(str(run_dir), conf.options(), quiet=quiet)
        return path
