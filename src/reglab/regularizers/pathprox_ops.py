"""The PathProx operators on unit groups (see pathprox.py for the notation and the algorithm):
in-place rescalings of a unit's input and output weights, the group soft-threshold (the prox of
tau * ||.||_2), unit normalisation, and the function-preserving layerwise balance."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from ..models.structure import UnitGroup, WeightLayer, weight_layers
from .path_norm import unit_input_norms, unit_output_norms, unit_path_norms

EPS = 1e-6
"""Floor of unit norms and group path norms (as in the original code)."""


# --------------------------------------------------------------------------- per-unit views


group_path_norms = unit_path_norms
"""(N,) vector of per-unit path norms p_j = ||w_j||_2 * ||v_j||_2 (w_j with b_j if include_bias);
the same function as `path_norm.unit_path_norms`, under the name PathProx has always used."""


def _broadcast(scale: Tensor, ndim: int, dim: int) -> Tensor:
    """`scale` (N,) reshaped to broadcast along dimension `dim` of an ndim-d weight."""
    shape = [1] * ndim
    shape[dim] = -1
    return scale.reshape(shape)


# --------------------------------------------------------------------------- in-place rescaling


@torch.no_grad()
def _divide_unit_inputs(group: UnitGroup, s: Tensor) -> None:
    """w_j <- w_j / s_j and b_j <- b_j / s_j (the bias is scaled whether or not it is regularised)."""
    w = group.inp.weight
    w.div_(_broadcast(s, w.ndim, 0))
    if group.inp.bias is not None:
        group.inp.bias.div_(s)


@torch.no_grad()
def _scale_unit_outputs(group: UnitGroup, s: Tensor) -> None:
    """v_j <- s_j * v_j, i.e. column j of V (slice V[:, j] of a conv) times s_j."""
    v = group.out.weight
    v.mul_(_broadcast(s, v.ndim, 1))


@torch.no_grad()
def _scale_layer(layer: WeightLayer, s: float, with_bias: bool) -> None:
    """W <- s W (and b <- s b when with_bias and the layer has a bias)."""
    layer.weight.mul_(s)
    if with_bias and layer.bias is not None:
        layer.bias.mul_(s)


# --------------------------------------------------------------------------- the three operators


def _shrink_factors(norms: Tensor, tau: float) -> Tensor:
    """Group soft-threshold factors c_j = max(0, 1 - tau / max(||v_j||, 1e-6)).

    c_j is exactly 0 when ||v_j|| <= tau, so c_j * v_j is an exact zero.
    """
    if tau < 0:
        raise ValueError(f"prox threshold tau must be >= 0, got {tau}")
    factors = 1.0 - tau / norms.clamp_min(EPS)
    return torch.where(norms <= tau, torch.zeros_like(factors), factors.clamp_min(0.0))


def prox_group_lasso(v: Tensor, tau: float) -> Tensor:
    """Row-wise proximal operator of tau * ||.||_2 on a (units, d) matrix.

    For each row z: prox(z) = argmin_x 1/2 ||x - z||^2 + tau ||x||_2
                            = 0 if ||z|| <= tau, else (1 - tau / ||z||) z.
    """
    if v.ndim != 2:
        raise ValueError(f"prox_group_lasso expects a (units, d) matrix, got shape {tuple(v.shape)}")
    return v * _shrink_factors(v.norm(dim=1), tau).unsqueeze(1)


@torch.no_grad()
def _prox_unit_outputs(group: UnitGroup, tau: float) -> Tensor:
    """In place, v_j <- prox_group_lasso(v_j, tau) for every unit of the group (V bias untouched).

    Returns, as a 0-d tensor on the weights' device (no host sync), the number of units this
    thresholding set to zero: ||v_j|| > 0 before it and shrink factor exactly 0."""
    norms = unit_output_norms(group)
    factors = _shrink_factors(norms, tau)
    _scale_unit_outputs(group, factors)
    return ((norms > 0) & (factors == 0)).sum()


@torch.no_grad()
def normalize_units(group: UnitGroup, compensate: bool = True, include_bias: bool = False) -> Tensor:
    """Project each unit's input weights onto the unit sphere; returns s (N,).

    s_j = max(||w_j||_2, 1e-6)  (||[w_j, b_j]||_2 with include_bias);
    w_j <- w_j / s_j,  b_j <- b_j / s_j,  and with compensate v_j <- s_j v_j.
    With compensate the network function is unchanged (ReLU is positively homogeneous) and the
    unit path norm ||w_j|| ||v_j|| is preserved; without it (the original code) the unit's
    contribution to the output is divided by s_j.
    """
    s = unit_input_norms(group, include_bias).clamp_min(EPS)
    _divide_unit_inputs(group, s)
    if compensate:
        _scale_unit_outputs(group, s)
    return s


@torch.no_grad()
def balance_groups(groups: list[UnitGroup], between: list[list[WeightLayer]] | None = None) -> list[float]:
    """Layerwise balance: rescale consecutive groups so all group path norms become equal.

    P_g = sum_j ||w_j|| ||v_j|| (biases excluded), G = (prod_g P_g)^(1/n). For g = 1..n-1 in order:
    s_g = G / P_g (P_g as updated by the previous step) and

        V_g.weight, V_g.bias        <- s_g * (.)      (P_g <- G)
        b of every layer in between[g], W_{g+1}.bias  <- s_g * (.)
        V_{g+1}.weight              <- (.) / s_g      (P_{g+1} <- P_{g+1} / s_g)

    Why this preserves the function: scaling V_g (weight and bias) scales its output by s_g; ReLU,
    max/avg pooling and flatten commute with positive scaling, so the input of the next weight
    layer is scaled by s_g; a weight layer A whose bias is scaled too gives A(s x) = s A(x), so the
    factor travels on through any layers in between[g] (weight layers between V_g and W_{g+1}, their
    weights untouched) and through W_{g+1} and its ReLU to the input of V_{g+1}; dividing V_{g+1}'s
    weight by s_g restores V_{g+1}'s output (its bias untouched). Missing biases need nothing. The
    last group has nothing downstream to compensate it and is left alone: since prod_g P_g is
    invariant, its path norm is then prod_g P_g / G^(n-1) = G as well.

    Assumes the groups are listed in forward order, every map between V_g and V_{g+1} other than
    the weight layers named here is positively homogeneous (ReLU, pooling, flatten), and
    `between` (default: no layers) lists the weight layers between V_g and W_{g+1}.
    Skipped (returns []) when some P_g < 1e-6. Returns the scales s_1..s_{n-1} applied.
    """
    if len(groups) < 2:
        return []
    between = between if between is not None else [[] for _ in groups[1:]]
    p = torch.stack([group_path_norms(g).sum() for g in groups]).double()
    if bool((p < EPS).any()):
        return []
    target = p.log().mean().exp()
    scales = []
    for g in range(len(groups) - 1):
        s = float(target / p[g])
        nxt = groups[g + 1]
        _scale_layer(groups[g].out, s, with_bias=True)
        for layer in [*between[g], nxt.inp]:
            if layer.bias is not None:
                layer.bias.mul_(s)
        nxt.out.weight.div_(s)
        p[g + 1] = p[g + 1] / s
        scales.append(s)
    return scales


def layers_between_groups(model: nn.Module, groups: list[UnitGroup]) -> list[list[WeightLayer]]:
    """For each consecutive pair of groups, the weight layers strictly between V_g and W_{g+1}
    in the model's registration order (taken as its forward order)."""
    order = {id(m): i for i, (_, m) in enumerate(weight_layers(model))}
    layers = [m for _, m in weight_layers(model)]
    return [layers[order[id(a.out)] + 1 : order[id(b.inp)]] for a, b in itertools.pairwise(groups)]
