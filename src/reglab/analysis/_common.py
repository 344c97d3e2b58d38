"""Helpers shared by the analysis modules: eval mode that restores itself, the examples of a
split in a fixed order, batched forward passes, weight layers as matrices, margins of outputs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..data import TaskData
from ..models.structure import WeightLayer

SPLITS = ("train", "val", "test")
DEFAULT_BATCH_SIZE = 1024


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode; afterwards give each module back its own training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def split_examples(
    data: TaskData, splits: Sequence[str], limit: int | None
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(split, x, y) for each asked split that exists, in the stored (unshuffled) order: the first
    `limit` examples when limit is given. The train split carries the training labels as stored,
    i.e. the noisy ones in a label-noise run. A missing validation split is skipped."""
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if x is None or y is None or len(x) == 0:
            continue
        if limit is not None:
            x, y = x[:limit], y[:limit]
        yield split, x, y


@torch.no_grad()
def batched_outputs(model: nn.Module, x: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """f(x) for all rows of x, computed in batches (caller sets eval mode), detached."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def is_binary_output(out: torch.Tensor) -> bool:
    """One-output (binary ±1) models return shape (batch,); class models return (batch, K)."""
    return out.ndim == 1


def raw_margins(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Raw margin per example: binary y·f(x) (y = ±1, one output of shape (batch,));
    classes f_y(x) − max_{j≠y} f_j(x) (logits of shape (batch, K), y class indices)."""
    if is_binary_output(out):
        return y.to(out.dtype) * out
    if out.shape[1] < 2:
        raise ValueError("a class margin needs at least two outputs")
    y = y.long()
    true = out.gather(1, y[:, None]).squeeze(1)
    return true - out.scatter(1, y[:, None], float("-inf")).amax(dim=1)


def runner_up(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """j = argmax_{j≠y} f_j(x) per example (class outputs only)."""
    return out.scatter(1, y.long()[:, None], float("-inf")).argmax(dim=1)


def weight_matrix(layer: WeightLayer) -> torch.Tensor:
    """The layer's effective weight as a matrix, detached: Linear (out, in) as is; Conv2d
    (out, in/groups, kh, kw) reshaped to (out, in/groups·kh·kw). Under PaperWN the weight read
    here is the effective g·V/‖V‖_F (parametrize computes it on access).

    The reshaped conv matrix is an approximation of the convolution as an operator: the
    convolution's singular values (and so its operator norm) also depend on the input size,
    padding and stride, and differ from those of this matrix."""
    w = layer.weight.detach()
    return w.reshape(w.shape[0], -1)
