"""PathProx: a proximal step for the per-unit path norm sum_j ||w_j||_2 ||v_j||_2 (study 4).

Notation (models.structure.UnitGroup). A unit group pairs a W-layer (`inp`) whose N output units
are ReLU units with the V-layer (`out`) that reads them. Unit j has

    w_j = inp.weight[j]        (a row of a Linear, a (C, k, k) filter of a Conv2d), flattened;
    b_j = inp.bias[j]          (absent when the layer has no bias);
    v_j = out.weight[:, j]     (a column of a Linear, an (O, k, k) slice of a Conv2d), flattened.

With `include_bias` the unit's input vector is [w_j, b_j] instead of w_j. A ReLU unit is positively
homogeneous: replacing (w_j, b_j, v_j) by (w_j / s, b_j / s, s v_j) for any s > 0 leaves the network
function unchanged. Every rescaling below that claims to preserve the function relies on this.

Objectives for a loss L and strength lam (the trainer multiplies the penalty by lam):

    weight decay   F_wd = L + lam * [ 1/2 sum_g (||W_g||_F^2 + ||V_g||_F^2) + 1/2 sum_o ||W_o||_F^2 ]
    path norm      F_pp = L + lam * [ sum_g sum_j ||w_j|| ||v_j|| + 1/2 sum_o ||W_o||_F^2 ]

(o runs over the weight layers in no group.) With regularize_bias, F_wd adds
1/2 (||b_W||^2 + ||b_V||^2) per group and 1/2 ||b_o||^2 per other layer (each bias once), and F_pp
uses ||[w_j, b_j]|| in the unit norm and adds 1/2 ||b_V||^2 per group and 1/2 ||b_o||^2.
By AM-GM, 1/2 (||w||^2 + ||v||^2) >= ||w|| ||v||, so F_pp <= F_wd, with equality when every unit
is balanced; both have the same minimisers.

Algorithms (option `algorithm`):

- "weight_decay": the study's baseline (`--with-loss-term`): penalty = the bracket of F_wd, no prox.
- "prox" (PathProx): penalty = 1/2 sum_o ||W_o||^2 (+ the bias terms above), and after each
  optimizer step (threshold tau = lam * lr):
    1. layerwise balance between groups (`balance_groups`; skipped with regularize_bias);
    2. per group, s_j = max(||w_j||, 1e-6); w_j <- w_j / s_j, b_j <- b_j / s_j, and, with
       `compensate`, v_j <- s_j v_j (`normalize_units`);
    3. group soft-thresholding of the v_j (`prox_group_lasso`):
       v_j <- 0 if ||v_j|| <= tau, else (1 - tau / ||v_j||) v_j.
  The V-layer bias is never touched by steps 2-3.

Unit normalisation is the paper's projection (w <- y/||y||) and does not rescale v_j, so the
function moves by O(lr) per step, as in the constrained formulation. The original code also
jumped at the *first* step, because the initial ||w_j|| are far from 1 (about 0.58 for a default
Linear(784, 400)): reglab removes that jump by normalising every unit once at setup *with*
compensation (`normalize_at_start`, function-preserving). `compensate: true` would compensate at
every step; it is off by default because with momentum it is unstable: momentum keeps pushing
||w_j|| above 1 and every compensation then multiplies v_j by that excess, so ||v|| grows without
bound (seen on a digits MLP with momentum 0.9, where the path norm went from 21 to 5000 in 200 steps).
`normalize_at_start: false` reproduces the original code's first-step jump.

Differences from the original code (study 4, section 4.11): biases are included in the
measurements when they are regularised (bug 2); the V-layer bias is penalised once (bug 3);
bias-free layers work, and the balance compensates the next group even when a V-layer has no bias
(bug 8); the first-step jump is removed by `normalize_at_start` (bug 8). A balance step is skipped when some group
has path norm below 1e-6 (a dead group): the product of the P_g is then 0 and the original code
would shift up to a factor 1e6 of scale into the next group's bias every step.

Layout: the operators are in `pathprox_ops` (rescalings, prox, normalisation, balance), the model
checks in `pathprox_checks`; this module holds the objectives and the regularizer, and re-exports
the public names of both.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.structure import UnitGroup, layer_norm_sq, other_layers, unit_groups
from .base import Options, Regularizer, StepContext
from .path_norm import unit_path_norms
from .pathprox_checks import UnsupportedModelError, check_groups, check_layer_order
from .pathprox_ops import (
    _prox_unit_outputs,
    balance_groups,
    group_path_norms,
    layers_between_groups,
    normalize_units,
    prox_group_lasso,
)
from .registry import REGULARIZERS

# --------------------------------------------------------------------------- penalties


def _half_sq(t: Tensor | None) -> Tensor | float:
    """1/2 ||t||^2 (0 for a missing tensor)."""
    return 0.0 if t is None else 0.5 * t.pow(2).sum()


def _other_l2(model: nn.Module, include_bias: bool) -> Tensor | float:
    """1/2 sum_o ||W_o||_F^2 (+ 1/2 ||b_o||^2 with include_bias) over layers in no group.

    ||W_o||_F^2 is the layer's norm (g^2 under PaperWN, see models.structure.layer_norm_sq).
    """
    total: Tensor | float = 0.0
    for _, layer in other_layers(model):
        total = total + 0.5 * layer_norm_sq(layer)
        if include_bias:
            total = total + _half_sq(layer.bias)
    return total


def _group_l2(group: UnitGroup, include_bias: bool) -> Tensor | float:
    """1/2 (||W||_F^2 + ||V||_F^2) (+ 1/2 (||b_W||^2 + ||b_V||^2) with include_bias)."""
    total = _half_sq(group.inp.weight) + _half_sq(group.out.weight)
    if include_bias:
        total = total + _half_sq(group.inp.bias) + _half_sq(group.out.bias)
    return total


def _group_vbias_l2(group: UnitGroup, include_bias: bool) -> Tensor | float:
    """1/2 ||b_V||^2 with include_bias, else 0 (PathProx's only direct penalty on a group)."""
    return _half_sq(group.out.bias) if include_bias else 0.0


def _as_tensor(value: Tensor | float, model: nn.Module) -> Tensor:
    if isinstance(value, Tensor):
        return value
    p = next(model.parameters(), None)
    return torch.tensor(float(value), device=p.device if p is not None else None)


def weight_decay_objective(model: nn.Module, groups: list[UnitGroup], include_bias: bool) -> Tensor:
    """R_wd = 1/2 sum_g (||W_g||^2 + ||V_g||^2) + 1/2 sum_o ||W_o||^2 (+ biases, each once)."""
    total = sum((_group_l2(g, include_bias) for g in groups), _other_l2(model, include_bias))
    return _as_tensor(total, model)


def prox_penalty(model: nn.Module, groups: list[UnitGroup], include_bias: bool) -> Tensor:
    """R_pp-smooth = 1/2 sum_o ||W_o||^2 (+ 1/2 sum_o ||b_o||^2 + 1/2 sum_g ||b_V_g||^2 with biases)."""
    total = sum((_group_vbias_l2(g, include_bias) for g in groups), _other_l2(model, include_bias))
    return _as_tensor(total, model)


# --------------------------------------------------------------------------- the regularizer


class PathProxOptions(Options):
    algorithm: Literal["prox", "weight_decay"] = "prox"
    """prox: PathProx; weight_decay: the study's baseline (1/2 ||.||^2 on grouped layers, no prox)."""
    regularize_bias: bool = False
    """Penalise biases too (each once); W-layer biases join the unit norm; disables the balance."""
    balance: bool = True
    """Layerwise balance between groups before each prox step (never with regularize_bias)."""
    compensate: bool = False
    """v_j <- s_j v_j at every normalisation (function-preserving per step; unstable with momentum)."""
    normalize_at_start: bool = True
    """Normalise every unit once at setup, with compensation (removes the first-step jump)."""
    active_threshold: float = Field(default=1e-8, ge=0.0)
    """A unit counts in active_units_pct_thresh when its path norm exceeds this."""


@REGULARIZERS.register("pathprox")
class PathProx(Regularizer):
    """PathProx (proximal gradient on the per-unit path norm) or its weight-decay baseline.

    penalty: R_wd (algorithm weight_decay) or the smooth part of the path-norm objective (prox);
    prox:    balance, unit normalisation and group soft-thresholding with tau = lam * lr (prox only);
    report:  the same measurements for both algorithms (see `report`).
    Parameter roles are not used: which parameters are regularised is fixed by the algorithm and
    `regularize_bias`, so roles other than the default [weight] are a ConfigError (rather than
    silently ignored).
    """

    vectorizes = True

    Options = PathProxOptions
    options: PathProxOptions

    def __init__(self, options: PathProxOptions, roles=("weight",)):
        super().__init__(options, roles)
        if self.roles != ("weight",):
            raise ConfigError(
                "roles",
                f"pathprox does not select parameters by role (got {list(self.roles)}); set "
                "regularize_bias: true to regularise biases",
                ["[weight]"],
            )
        self._zeroed: Tensor | None = None

    def setup(self, model: nn.Module) -> None:
        groups = unit_groups(model)
        check_groups(groups)
        check_layer_order(model, groups, groups_in_order=self._balances)
        if self.options.algorithm == "prox" and self.options.normalize_at_start:
            with torch.no_grad():
                for g in groups:
                    normalize_units(g, compensate=True, include_bias=self._include_bias)

    @property
    def _balances(self) -> bool:
        return self.options.algorithm == "prox" and self.options.balance and not self.options.regularize_bias

    @property
    def _include_bias(self) -> bool:
        return self.options.regularize_bias

    def penalty(self, model: nn.Module, ctx: StepContext | None = None) -> Tensor:
        """R_wd for weight_decay; 1/2 sum_o ||W_o||^2 (+ bias terms) for prox (see module doc)."""
        groups = unit_groups(model)
        if self.options.algorithm == "weight_decay":
            return weight_decay_objective(model, groups, self._include_bias)
        return prox_penalty(model, groups, self._include_bias)

    def _unit_path_norms(self, groups: list[UnitGroup]) -> list[Tensor]:
        return [unit_path_norms(g, self._include_bias) for g in groups]

    @torch.no_grad()
    def prox(self, model: nn.Module, lam: float, lr: float) -> dict[str, float]:
        """Balance (unless regularize_bias or balance=False), normalise units, soft-threshold v_j.

        A no-op for algorithm weight_decay. Returns {}: this runs every step, and measurements
        belong to `report` (evaluation time). The only by-product kept is the number of units the
        thresholding zeroed (from the shrink factors it computes anyway; a device tensor, so no
        host sync), reported as ``units_zeroed``.
        """
        if self.options.algorithm != "prox":
            return {}
        self._zeroed = self._prox_step(model, unit_groups(model), float(lam) * float(lr))
        return {}

    def _prox_step(self, model: nn.Module, groups: list[UnitGroup], tau: float) -> Tensor | None:
        """The prox step; returns the number of units it zeroed (0-d tensor; None without groups)."""
        if self._balances:
            balance_groups(groups, layers_between_groups(model, groups))
        zeroed = None
        for g in groups:
            normalize_units(g, compensate=self.options.compensate, include_bias=self._include_bias)
            n = _prox_unit_outputs(g, tau)
            zeroed = n if zeroed is None else zeroed + n
        return zeroed

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        """Measurements (identical keys for both algorithms), p_j = ||w_j|| ||v_j||:

        active_units_pct        = 100 * #{j : p_j > 0} / #units
        active_units_pct_thresh = 100 * #{j : p_j > active_threshold} / #units
        units_zeroed            = #units whose v_j the last prox step set to exactly zero
                                  (||v_j|| > 0 after the optimizer step, <= tau); 0 before the
                                  first prox step and for weight_decay
        path_norm               = sum_g sum_j p_j;  path_norm.<group> = sum_j p_j over that group
        objective_path_norm     = path_norm + 1/2 sum_o ||W_o||^2 (+ bias terms): the regulariser
                                  of F_pp (equals path_norm when there are no other layers and
                                  biases are not regularised)
        objective_l2            = 1/2 sum_g (||W||^2 + ||V||^2) + 1/2 sum_o ||W_o||^2 (+ biases)
        (w_j includes b_j when regularize_bias.) objective_path_norm <= objective_l2 (AM-GM).
        """
        groups = unit_groups(model)
        per_unit = self._unit_path_norms(groups)
        flat = torch.cat(per_unit)
        path_norm = float(flat.sum())
        out = {
            "active_units_pct": _percent(flat > 0),
            "active_units_pct_thresh": _percent(flat > self.options.active_threshold),
            "units_zeroed": 0.0 if self._zeroed is None else float(self._zeroed),
            "path_norm": path_norm,
        }
        out.update({f"path_norm.{g.name}": float(p.sum()) for g, p in zip(groups, per_unit)})
        out["objective_path_norm"] = path_norm + float(prox_penalty(model, groups, self._include_bias))
        out["objective_l2"] = float(weight_decay_objective(model, groups, self._include_bias))
        return out


def _percent(mask: Tensor) -> float:
    """100 * mean(mask) (0 for an empty mask)."""
    return 100.0 * float(mask.sum()) / max(mask.numel(), 1)


__all__ = [
    "PathProx",
    "PathProxOptions",
    "UnsupportedModelError",
    "balance_groups",
    "check_groups",
    "check_layer_order",
    "group_path_norms",
    "layers_between_groups",
    "normalize_units",
    "prox_group_lasso",
]
