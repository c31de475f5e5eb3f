"""Clean evaluation of a model on a split: accuracy for classifiers, MSE/MAE/Pearson for regressors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from xairobust.data.base import DataSplit


@torch.no_grad()
def predict(model: nn.Module, split: DataSplit, batch_size: int = 256, device: str | torch.device = "cpu") -> Tensor:
    """Model outputs for every input of ``split`` (eval mode, on CPU, float32)."""
    was_training = model.training
    model.eval()
    try:
        outs = []
        for start in range(0, len(split), batch_size):
            idx = slice(start, start + batch_size)
            outs.append(model(split.inputs(idx, device)).float().cpu())
        return torch.cat(outs) if outs else torch.empty(0)
    finally:
        model.train(was_training)


def mean_pearson(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over output columns of the Pearson correlation between predictions and targets."""
    cors = []
    for j in range(target.shape[1]):
        p, t = pred[:, j], target[:, j]
        if p.std() == 0 or t.std() == 0:
            cors.append(0.0)  # a constant prediction carries no correlation
            continue
        cors.append(float(np.corrcoef(p, t)[0, 1]))
    return float(np.mean(cors))


def score_outputs(outputs: Tensor, targets: Tensor, task: str) -> dict[str, float]:
    """Task metrics of ``outputs`` against ``targets``."""
    if task == "classification":
        loss = nn.functional.cross_entropy(outputs, targets).item()
        acc = (outputs.argmax(1) == targets).float().mean().item()
        return {"loss": loss, "accuracy": acc}
    pred, tgt = outputs.numpy().astype(np.float64), targets.float().numpy().astype(np.float64)
    return {
        "loss": float(np.mean((pred - tgt) ** 2)),
        "mae": float(np.mean(np.abs(pred - tgt))),
        "mean_pearson": mean_pearson(pred, tgt),
    }


def evaluate(model: nn.Module, split: DataSplit, batch_size: int = 256, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Clean metrics of ``model`` on ``split``."""
    return score_outputs(predict(model, split, batch_size, device), split.y, split.info.task)


def headline(metrics: dict[str, float], task: str) -> float:
    """The number early stopping and tables use: accuracy, or mean Pearson for regression."""
    return metrics["accuracy"] if task == "classification" else metrics["mean_pearson"]
