"""Singular values and ranks of every weight layer.

Each weight layer (nn.Linear, nn.Conv2d, in registration order; names from `weight_layers`) is
read as a matrix W of shape (rows, cols) = (out, in) for Linear and (out, in·kh·kw) for Conv2d
(a reshaping of the kernel, not the convolution operator: see `_common.weight_matrix`). PaperWN
layers contribute their effective weight g·V/‖V‖_F. With σ_1 ≥ σ_2 ≥ ... ≥ σ_r ≥ 0 the singular
values of W (r = min(rows, cols), `torch.linalg.svdvals` in the weight's own dtype):

- ``spectral_norm``  ‖W‖_2 = σ_1
- ``frobenius_norm`` ‖W‖_F = sqrt(Σ σ_i²)
- ``nuclear_norm``   ‖W‖_* = Σ σ_i
- ``stable_rank``    ‖W‖_F² / ‖W‖_2² = Σ σ_i² / σ_1²                (0 for W = 0)
- ``effective_rank`` exp(H(p)), p_i = σ_i / Σ σ_j, H(p) = −Σ p_i ln p_i with 0·ln 0 = 0
                     (Roy & Vetterli 2007; 0 for W = 0)
- ``rank_rel``       #{i : σ_i / σ_1 > 0.01}: study 1's (AWN) "rank"   (0 for W = 0)
- ``rank_numerical`` #{i : σ_i > σ_1 · max(rows, cols) · eps(dtype)}: the rank
                     `torch.linalg.matrix_rank` gives with its default tolerance (study 1's SKS
                     "rank"; eps of float32 for float32 weights)
- ``full_rank``      min(rows, cols), the largest possible rank

The two "ranks" of study 1 are different quantities (its bug 15) and carry different names here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models.structure import weight_layers
from ._common import weight_matrix

RANK_REL_THRESHOLD = 0.01

METRICS = (
    "spectral_norm",
    "frobenius_norm",
    "nuclear_norm",
    "stable_rank",
    "effective_rank",
    "rank_rel",
    "rank_numerical",
    "full_rank",
)


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """σ of a matrix, descending, computed in its own dtype (detached)."""
    return torch.linalg.svdvals(w.detach())


def rank_rel(sv: torch.Tensor, threshold: float = RANK_REL_THRESHOLD) -> int:
    """#{σ_i / σ_max > threshold}; 0 for a zero matrix."""
    top = sv.max() if sv.numel() else sv.new_zeros(())
    if top <= 0:
        return 0
    return int((sv / top > threshold).sum())


def rank_numerical(sv: torch.Tensor, shape: tuple[int, int]) -> int:
    """#{σ_i > σ_max · max(m, n) · eps}, eps of sv's dtype: torch.linalg.matrix_rank's default."""
    if not sv.numel():
        return 0
    tol = sv.max() * max(shape) * torch.finfo(sv.dtype).eps
    return int((sv > tol).sum())


def effective_rank(sv: torch.Tensor) -> float:
    """exp(−Σ p_i ln p_i), p_i = σ_i / Σσ (Roy & Vetterli 2007); 0 for a zero matrix."""
    s = sv.double()
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(sv: torch.Tensor) -> float:
    """‖W‖_F² / ‖W‖_2² = Σσ² / σ_max²; 0 for a zero matrix."""
    s = sv.double()
    top = s.max() if s.numel() else s.new_zeros(())
    if top <= 0:
        return 0.0
    return float((s**2).sum() / top**2)


def matrix_metrics(w: torch.Tensor) -> tuple[dict[str, float | int], np.ndarray]:
    """Every metric of the module docstring for one matrix, and its singular values (float64)."""
    if w.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(w.shape)}")
    sv = singular_values(w)
    s = sv.double()
    rows, cols = w.shape
    metrics: dict[str, float | int] = {
        "rows": rows,
        "cols": cols,
        "spectral_norm": float(s.max()) if s.numel() else 0.0,
        "frobenius_norm": float(math.sqrt(float((s**2).sum()))),
        "nuclear_norm": float(s.sum()),
        "stable_rank": stable_rank(sv),
        "effective_rank": effective_rank(sv),
        "rank_rel": rank_rel(sv),
        "rank_numerical": rank_numerical(sv, (rows, cols)),
        "full_rank": min(rows, cols),
    }
    return metrics, s.cpu().numpy()


@torch.no_grad()
def layer_spectra(model: nn.Module) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One row per weight layer (columns: layer, rows, cols and METRICS) and σ per layer name.

    The model is not changed."""
    rows = []
    spectra: dict[str, np.ndarray] = {}
    for name, layer in weight_layers(model):
        metrics, sv = matrix_metrics(weight_matrix(layer))
        rows.append({"layer": name, **metrics})
        spectra[name] = sv
    columns = ["layer", "rows", "cols", *METRICS]
    return pd.DataFrame(rows, columns=columns), spectra


def spectra_rows(model: nn.Module, step: int) -> list[dict]:
    """`layer_spectra` rows as dicts with the step first, for periodic logging during training
    (the trainer appends them to analysis/ranks_during.jsonl)."""
    frame, _ = layer_spectra(model)
    return [{"step": int(step), **row} for row in frame.to_dict(orient="records")]
