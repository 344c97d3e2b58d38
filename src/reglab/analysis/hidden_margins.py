"""Linearized margins at hidden layers (Jiang, Krishnan, Mobahi & Bengio, ICLR 2019,
"Predicting the Generalization Gap in Deep Networks with Margin Distributions").

For an activation h_l(x) of layer l and the class pair (i, j), the first-order approximation of
the distance, measured in the space of h_l, from h_l(x) to the decision boundary f_i = f_j is

    d_l(x) = (f_i(x) − f_j(x)) / ‖∇_{h_l} f_i(x) − ∇_{h_l} f_j(x)‖_2

with i = y (the label) and j = argmax_{j≠y} f_j(x), the highest-scoring other class (for a
correctly classified x this is the nearest boundary to first order among the boundaries with the
top competitor). d is signed: negative for misclassified examples. Binary ±1 models with one
score f: d_l(x) = y·f(x) / ‖y·∇_{h_l} f(x)‖_2 = y·f(x) / ‖∇_{h_l} f(x)‖_2. Where the gradient is
exactly zero d is NaN (no linearized boundary); NaNs are left out of the statistics.

Normalization: by the total variation of the layer's activations over the same examples,
ν(h_l) = sqrt(tr Cov(h_l)) = sqrt((1/n) Σ_i ‖h_l(x_i) − mean_k h_l(x_k)‖²) (square root of the
total variance, population covariance), so d̂_l = d_l / ν(h_l) is invariant to rescaling h_l.

Which activations: the input of every weight layer (nn.Linear, nn.Conv2d), captured with a
forward pre-hook; the first of them is the network input (flattened for MLPs, which changes
neither distances nor ν), i.e. l = 0. The row's ``layer`` is the weight layer the activation
feeds and ``depth`` its position (0 = network input). Any module names can be given instead.

Signature (Jiang et al. use these five statistics per layer): of the normalized margins d̂_l,
the quartiles Q1, Q2 (median), Q3 (linear interpolation) and the fences
lower = Q1 − 1.5·IQR, upper = Q3 + 1.5·IQR, IQR = Q3 − Q1 (the formulas, not clipped to the data).
Jiang et al. compute the distribution on the training set; with ``positive_only=True`` the
statistics use only positive (correctly classified) margins. Gradients: one backward pass per
batch of Σ_batch (f_i − f_j) (examples are independent in eval mode), w.r.t. all chosen
activations at once; parameter .grad fields are not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data import TaskData
from ..models.structure import weight_layers
from ._common import eval_mode, is_binary_output, runner_up, split_examples

SIGNATURE_COLUMNS = ["split", "layer", "depth", "n", "q1", "median", "q3", "lower_fence", "upper_fence", "tv"]
DEFAULT_BATCH_SIZE = 256


def default_layers(model: nn.Module) -> list[str]:
    """Names of the modules whose input is measured: every weight layer, in registration order."""
    return [name for name, _ in weight_layers(model)]


def _modules(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    table = dict(model.named_modules())
    missing = [n for n in names if n not in table]
    if missing:
        raise KeyError(f"no module named {missing} in {type(model).__name__}")
    return [(n, table[n]) for n in names]


def hidden_layer_distances(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layers: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """({layer: d_l(x_i) per example}, {layer: ν(h_l)}) for the examples in x (module docstring);
    d is not divided by ν. Runs in eval mode and restores the model's modes."""
    names = list(layers) if layers is not None else default_layers(model)
    modules = _modules(model, names)
    dists: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    sums: dict[str, torch.Tensor] = {}
    sumsq: dict[str, torch.Tensor] = {}
    captured: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(_module, args):
            if name in captured:
                raise RuntimeError(f"module {name!r} ran twice in one forward pass; its input is ambiguous")
            captured[name] = args[0]

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in modules]
    try:
        with eval_mode(model), torch.enable_grad():
            for start in range(0, len(x), batch_size):
                captured.clear()
                xb = x[start : start + batch_size].detach().clone().requires_grad_(True)
                yb = y[start : start + batch_size]
                out = model(xb)
                if is_binary_output(out):
                    score = yb.to(out.dtype) * out
                else:
                    j = runner_up(out.detach(), yb)
                    score = out.gather(1, yb.long()[:, None]).squeeze(1) - out.gather(1, j[:, None]).squeeze(1)
                missing = [n for n in names if n not in captured]
                if missing:
                    raise RuntimeError(f"modules {missing} did not run in the forward pass")
                acts = [captured[n] for n in names]
                grads = torch.autograd.grad(score.sum(), acts, allow_unused=True)
                s = score.detach().double()
                for n, h, g in zip(names, acts, grads, strict=True):
                    gnorm = (
                        torch.zeros(len(h), dtype=torch.float64, device=h.device)
                        if g is None
                        else torch.linalg.vector_norm(g.detach().reshape(len(g), -1).double(), dim=1)
                    )
                    d = torch.where(gnorm > 0, s / gnorm, torch.full_like(s, float("nan")))
                    dists[n].append(d.cpu())
                    flat = h.detach().reshape(len(h), -1).double()
                    sums[n] = sums.get(n, 0) + flat.sum(0)
                    sumsq[n] = sumsq.get(n, 0) + (flat**2).sum(0)
    finally:
        for hd in handles:
            hd.remove()
        captured.clear()
    n_ex = len(x)
    tv = {}
    for n in names:
        mean = sums[n] / n_ex
        total_var = float((sumsq[n] / n_ex - mean**2).clamp_min(0).sum())
        tv[n] = total_var**0.5
    return {n: torch.cat(v).numpy() for n, v in dists.items()}, tv


def signature(values: np.ndarray, positive_only: bool = False) -> dict[str, float]:
    """n, q1, median, q3, lower_fence = Q1 − 1.5·IQR, upper_fence = Q3 + 1.5·IQR of the finite
    values (only those > 0 with positive_only); NaN statistics when none are left."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if positive_only:
        v = v[v > 0]
    if v.size == 0:
        nan = float("nan")
        return {"n": 0, "q1": nan, "median": nan, "q3": nan, "lower_fence": nan, "upper_fence": nan}
    q1, q2, q3 = (float(q) for q in np.quantile(v, [0.25, 0.5, 0.75]))
    iqr = q3 - q1
    return {
        "n": int(v.size),
        "q1": q1,
        "median": q2,
        "q3": q3,
        "lower_fence": q1 - 1.5 * iqr,
        "upper_fence": q3 + 1.5 * iqr,
    }


@dataclass
class HiddenMarginResult:
    summary: pd.DataFrame
    """SIGNATURE_COLUMNS: one row per (split, layer); statistics of the normalized margins d/ν."""
    distances: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    """(split, layer) -> d_l per example, not normalized (stored order of the split)."""
    normalized: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    """(split, layer) -> d_l / ν(h_l) per example (NaN where ν = 0)."""
    tv: dict[tuple[str, str], float] = field(default_factory=dict)
    """(split, layer) -> ν(h_l) = sqrt(tr Cov h_l) over the split's examples."""


def hidden_margins(
    model: nn.Module,
    data: TaskData,
    splits: Sequence[str] = ("train",),
    limit: int | None = None,
    layers: Sequence[str] | None = None,
    positive_only: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> HiddenMarginResult:
    """Jiang et al.'s normalized hidden-layer margins and their signature, per split (the first
    `limit` examples of each, stored order; train uses the stored, possibly noisy, labels)."""
    names = list(layers) if layers is not None else default_layers(model)
    result = HiddenMarginResult(summary=pd.DataFrame(columns=SIGNATURE_COLUMNS))
    rows = []
    for split, x, y in split_examples(data, splits, limit):
        dists, tv = hidden_layer_distances(model, x, y, names, batch_size)
        for depth, name in enumerate(names):
            nu = tv[name]
            normed = dists[name] / nu if nu > 0 else np.full_like(dists[name], np.nan)
            result.distances[(split, name)] = dists[name]
            result.normalized[(split, name)] = normed
            result.tv[(split, name)] = nu
            rows.append({"split": split, "layer": name, "depth": depth, **signature(normed, positive_only), "tv": nu})
    result.summary = pd.DataFrame(rows, columns=SIGNATURE_COLUMNS)
    return result
