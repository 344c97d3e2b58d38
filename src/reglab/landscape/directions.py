"""Directions in parameter space for loss landscapes.

A direction d is one tensor per *perturbed* parameter, of that parameter's shape. Parameters
that are not perturbed have direction zero; they are simply not listed in `Directions.names`.

Which parameters are perturbed (`perturbed_parameters`): by default the parameters of role
"weight" (see `reglab.models.structure.params_by_role`): Linear/Conv weights. Biases and the
affine parameters of normalization layers (batch norm, layer norm, group norm) are excluded;
`include_bias=True` adds them.

PaperWN layers (W = g V/||V||_F, `reglab.models.weightnorm`): the *stored* parameters are
perturbed, i.e. the direction tensor V (`<layer>.parametrizations.weight.original`) and the
scalar g (`<layer>.parametrizations.weight.0.g`), both of role "weight". The effective weight W
then moves non-linearly in (alpha, beta). Filter normalization of V is well defined (the loss is
invariant to the scale of V, which is exactly the invariance filter normalization removes);
the 0-d g is normalized per tensor (|d_g| = |g|). Rho-WN likewise: its unit-norm layers' V and
its 0-d global scale rho (role "weight", normalized per tensor) are what moves.

Normalizations of a random direction d against the weights theta (Li, Xu, Taylor, Studer &
Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets"):

- ``filter``: for a tensor with >= 2 dims, every filter d_i = d[i] (the slice along dim 0: a row
  of a Linear weight, one output filter of a conv) is rescaled to ||d_i|| = ||theta_i||.
  A tensor with < 2 dims (a bias, a norm parameter, a PaperWN g) is normalized per tensor.
  A zero weight filter (theta_i = 0, e.g. a pruned unit) gets a zero direction filter.
- ``layer``: per tensor, d <- d ||theta|| / ||d||.
- ``none``: d as drawn (i.i.d. N(0, 1) entries).

PCA directions (`pca_directions`): see its docstring. They are unit vectors in the flattened
space of the perturbed parameters and are *not* filter-normalized (as in Li et al., whose PCA
directions are plain principal directions so that trajectory coordinates are distances).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.structure import params_by_role

NORMALIZATIONS = ("filter", "layer", "none")
_TINY = 1e-30


@dataclass
class PCAResult:
    """Principal directions of a trajectory around the final weights theta*.

    coords[t, k] = <theta_t - theta*, v_k> (v_k unit norm, orthogonal), residual[t] =
    1 - ||coords[t]||^2 / ||theta_t - theta*||^2 (0 where theta_t = theta*), explained[k] =
    s_k^2 / sum_j s_j^2 over all singular values s_j of the (uncentered) difference matrix, and
    residual_total = 1 - sum_k explained[k] = sum_t ||r_t||^2 / sum_t ||theta_t - theta*||^2.
    """

    coords: torch.Tensor  # (T, k) float64
    residual: torch.Tensor  # (T,) float64
    explained: torch.Tensor  # (k,) float64
    residual_total: float
    steps: list[int] | None = None


@dataclass
class Directions:
    """`vectors[k][i]` is direction k's tensor for parameter `names[i]`."""

    names: list[str]
    vectors: list[list[torch.Tensor]]
    kind: str
    """random or pca"""
    normalization: str
    """The normalization actually applied (pca directions: none)."""
    seed: int | None = None
    pca: PCAResult | None = None
    info: dict = field(default_factory=dict)

    @property
    def dims(self) -> int:
        return len(self.vectors)

    def flat(self, k: int) -> torch.Tensor:
        """Direction k flattened over the perturbed parameters (float64)."""
        return torch.cat([t.detach().reshape(-1).double().cpu() for t in self.vectors[k]])

    def cosine(self) -> float | None:
        """cos(d1, d2) in the flattened space of the perturbed parameters; None for 1 direction."""
        if self.dims < 2:
            return None
        a, b = self.flat(0), self.flat(1)
        return float(a @ b / (a.norm() * b.norm()).clamp_min(_TINY))

    def full(self, model: nn.Module, k: int) -> dict[str, torch.Tensor]:
        """Direction k for every parameter of `model` by name, zeros for unperturbed ones."""
        own = dict(zip(self.names, self.vectors[k]))
        return {n: own[n] if n in own else torch.zeros_like(p) for n, p in model.named_parameters()}


def perturbed_parameters(model: nn.Module, include_bias: bool = False) -> list[tuple[str, nn.Parameter]]:
    """The parameters a landscape moves, in model order: weights, plus biases and norm-layer
    parameters when include_bias."""
    roles = ["weight", "bias", "norm"] if include_bias else ["weight"]
    return [(n, p) for n, p in params_by_role(model, roles) if p.is_floating_point()]


def normalize_direction(d: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """One direction tensor normalized against its weight tensor (see the module docstring)."""
    if mode == "none":
        return d
    theta = theta.detach().to(d.dtype)
    if mode == "layer" or (mode == "filter" and d.dim() < 2):
        return d * (theta.norm() / d.norm().clamp_min(_TINY))
    if mode == "filter":
        d2 = d.reshape(d.shape[0], -1)
        t2 = theta.reshape(theta.shape[0], -1)
        scale = t2.norm(dim=1) / d2.norm(dim=1).clamp_min(_TINY)
        return (d2 * scale[:, None]).reshape(d.shape)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")


def random_directions(
    model: nn.Module, dims: int = 2, normalization: str = "filter", seed: int = 0, include_bias: bool = False
) -> Directions:
    """`dims` seeded Gaussian directions (entries i.i.d. N(0, 1), drawn on the CPU from
    torch.Generator(seed) in parameter order, direction 1 entirely before direction 2, so they
    do not depend on the device), then normalized. The two directions are not orthogonalized:
    in high dimension they are nearly orthogonal; `Directions.cosine()` reports how nearly."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    params = perturbed_parameters(model, include_bias)
    if not params:
        raise ValueError("the model has no parameters to perturb")
    gen = torch.Generator().manual_seed(seed)
    vectors = []
    for _ in range(dims):
        vs = []
        for _, p in params:
            d = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
            vs.append(normalize_direction(d, p, normalization))
        vectors.append(vs)
    out = Directions([n for n, _ in params], vectors, "random", normalization, seed=seed)
    out.info["cosine"] = out.cosine()
    return out


# ----------------------------------------------------------------------------- PCA


def _flat_rows(
    final: Sequence[torch.Tensor], snapshots: Sequence[Sequence[torch.Tensor]], dtype: torch.dtype
) -> torch.Tensor:
    base = torch.cat([t.detach().reshape(-1).cpu().double() for t in final])
    m = torch.empty(len(snapshots), base.numel(), dtype=dtype)
    for i, snap in enumerate(snapshots):
        if len(snap) != len(final):
            raise ValueError(f"snapshot {i} has {len(snap)} tensors, the final weights {len(final)}")
        row = torch.cat([t.detach().reshape(-1).cpu().double() for t in snap])
        if row.numel() != base.numel():
            raise ValueError(f"snapshot {i} has {row.numel()} values, the final weights {base.numel()}")
        m[i] = row - base
    return m


def pca_directions(
    final: Sequence[torch.Tensor],
    snapshots: Sequence[Sequence[torch.Tensor]],
    dims: int = 2,
    steps: list[int] | None = None,
    chunk: int = 1 << 20,
) -> tuple[list[list[torch.Tensor]], PCAResult]:
    """Top principal directions of the trajectory theta_0..theta_T around the final weights.

    M is the T x P matrix with rows m_t = theta_t - theta* (flattened perturbed parameters).
    As in Li et al. 2018 the differences are taken from the final point and **not centered**
    (the final point is the origin of the plot, so the plane through theta* that best fits
    the trajectory is wanted, not the plane through the trajectory's mean). The directions
    are the top `dims` right singular vectors v_k of M (unit norm, orthogonal), computed from
    the eigen-decomposition of the T x T Gram matrix M M^T in float64 (M itself is held in
    float64 when T*P <= 64M values, else float32). Each v_k is signed so that the first
    snapshot (usually the initialization) has a coordinate >= 0.

    Returns (directions as lists of tensors shaped like `final`, PCAResult).
    Raises ValueError when the trajectory spans fewer than `dims` dimensions.
    """
    T = len(snapshots)
    if dims > T:
        raise ValueError(f"PCA needs at least {dims} snapshots, got {T}")
    P = sum(t.numel() for t in final)
    dtype = torch.float64 if T * P <= (64 << 20) else torch.float32
    m = _flat_rows(final, snapshots, dtype)
    gram = torch.zeros(T, T, dtype=torch.float64)
    for s in range(0, P, chunk):
        mc = m[:, s : s + chunk].double()
        gram += mc @ mc.T
    total = float(gram.trace())
    if total <= 0:
        raise ValueError("every snapshot equals the final weights: there is no trajectory to take directions from")
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    if evals[dims - 1] <= 1e-12 * evals[0]:
        raise ValueError(
            f"the trajectory spans fewer than {dims} dimensions (singular values {evals[:dims].sqrt().tolist()})"
        )
    vs: list[torch.Tensor] = []
    for k in range(dims):
        v = torch.zeros(P, dtype=torch.float64)
        for s in range(0, P, chunk):
            v[s : s + chunk] = m[:, s : s + chunk].double().T @ evecs[:, k]
        for u in vs:  # re-orthogonalize against rounding
            v -= (u @ v) * u
        vs.append(v / v.norm())
    coords = torch.zeros(T, dims, dtype=torch.float64)
    for s in range(0, P, chunk):
        coords += m[:, s : s + chunk].double() @ torch.stack([v[s : s + chunk] for v in vs], dim=1)
    for k in range(dims):
        if coords[0, k] < 0:
            coords[:, k] = -coords[:, k]
            vs[k] = -vs[k]
    row_sq = torch.diagonal(gram).clone()
    residual = torch.where(
        row_sq > 0, 1 - coords.pow(2).sum(1) / row_sq.clamp_min(_TINY), torch.zeros_like(row_sq)
    ).clamp_min(0)
    explained = evals[:dims] / total
    result = PCAResult(coords, residual, explained, float(max(0.0, 1 - explained.sum().item())), steps)
    directions = []
    for v in vs:
        parts, off = [], 0
        for t in final:
            parts.append(v[off : off + t.numel()].reshape(t.shape).to(dtype=t.dtype, device=t.device))
            off += t.numel()
        directions.append(parts)
    return directions, result


def pca_directions_for_model(
    model: nn.Module,
    snapshots: Sequence[dict[str, torch.Tensor]],
    dims: int = 2,
    include_bias: bool = False,
    steps: list[int] | None = None,
) -> Directions:
    """PCA directions around the model's current weights from snapshot state dicts (or
    {"model": state_dict} checkpoint records)."""
    params = perturbed_parameters(model, include_bias)
    names = [n for n, _ in params]
    rows = []
    for i, snap in enumerate(snapshots):
        sd = snap["model"] if "model" in snap and isinstance(snap["model"], dict) else snap
        missing = [n for n in names if n not in sd]
        if missing:
            raise ValueError(f"snapshot {i} lacks parameters {missing[:3]}")
        rows.append([sd[n] for n in names])
    vectors, res = pca_directions([p for _, p in params], rows, dims, steps)
    out = Directions(names, vectors, "pca", "none", pca=res)
    out.info["cosine"] = out.cosine()
    return out
