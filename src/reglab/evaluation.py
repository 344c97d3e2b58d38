"""Batched evaluation and the data losses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

LossFn: TypeAlias = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A data loss: (model outputs, targets) -> scalar loss (mean over the batch)."""


def make_loss_fn(kind: str, task: str) -> LossFn:
    """cross_entropy on class labels, or MSE on +-1 targets (the binary tasks of study 1)."""
    if kind == "auto":
        kind = "mse" if task == "binary" else "cross_entropy"
    if kind == "mse":
        if task == "binary":
            return lambda out, y: F.mse_loss(out, y)
        # MSE on one-hot targets for class labels.
        return lambda out, y: F.mse_loss(out, F.one_hot(y, out.shape[-1]).to(out.dtype))
    if task == "binary":
        from .errors import ConfigError

        raise ConfigError("train.loss", "cross_entropy needs class labels; binary tasks use mse", ["auto", "mse"])
    return F.cross_entropy


def correct(outputs: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Number of correct predictions (a 0-d tensor). Binary: sign(f) == y, f == 0 counts wrong."""
    if task == "binary":
        return (torch.sign(outputs) == y).sum()
    return (outputs.argmax(dim=-1) == y).sum()


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, task: str, batch_size: int
) -> dict[str, float]:
    """Mean loss and accuracy (fraction) over (x, y), in eval mode, in large batches.

    The loss of each batch is weighted by its size, so the mean is over examples.
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=x.device, dtype=torch.float64)
    total_correct = torch.zeros((), device=x.device, dtype=torch.int64)
    n = x.shape[0]
    for i in range(0, n, batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        out = model(xb)
        total_loss += loss_fn(out, yb).double() * xb.shape[0]
        total_correct += correct(out, yb, task)
    model.train(was_training)
    # One transfer for both numbers.
    loss, corr = torch.stack([total_loss, total_correct.double()]).tolist()
    return {"loss": loss / max(n, 1), "acc": corr / max(n, 1)}
