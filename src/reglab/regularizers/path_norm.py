"""Differentiable path norm over unit groups (study 4's PathProx penalty, seed-studies.md §4.6).

A unit group pairs a layer W whose output units j are positively homogeneous (ReLU) with the
layer V that reads them. Unit j has input weights w_j and output weights v_j:

- Linear -> Linear: w_j = W[j, :] (row j), v_j = V[:, j] (column j);
- Conv -> Conv:     w_j = W[j] flattened (the filter, C*k*k entries), v_j = V[:, j, :, :] flattened;
- with ``include_bias``, w_j also holds W's bias b_j (V's bias is never part of any unit).

    R = sum_groups sum_j ||w_j||_2 ||v_j||_2

Biases are excluded by default. R is invariant to rescaling a unit (w_j -> s w_j, v_j -> v_j / s,
s > 0), and lam * R has the same minimizers as (lam/2) sum (||W||_F^2 + ||V||_F^2) (AM-GM).
The per-unit views (`unit_input_weights`, `unit_output_weights`), their row norms
(`unit_input_norms`, `unit_output_norms`) and `unit_path_norms` are public: PathProx and the
analysis reuse them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.structure import UnitGroup, unit_groups
from .base import Options, Regularizer, StepContext
from .l2 import require_weight_role_only
from .registry import REGULARIZERS


def unit_input_weights(group: UnitGroup, include_bias: bool = False) -> torch.Tensor:
    """(units, fan_in) matrix whose row j is w_j (row / filter j of the W-layer, plus b_j with
    include_bias; a layer without bias contributes no bias entry)."""
    weight = group.inp.weight
    w = weight.reshape(weight.shape[0], -1)
    bias = getattr(group.inp, "bias", None)
    if include_bias and bias is not None:
        w = torch.cat([w, bias[:, None]], dim=1)
    return w


def unit_output_weights(group: UnitGroup) -> torch.Tensor:
    """(units, fan_out) matrix whose row j is v_j (column j of the V-layer, V[:, j, :, :] for a conv)."""
    weight = group.out.weight
    units = group.inp.weight.shape[0]
    if weight.shape[1] != units:
        raise ValueError(
            f"unit group {group.name!r}: the V-layer reads {weight.shape[1]} inputs but the W-layer has {units} units"
        )
    return weight.transpose(0, 1).reshape(units, -1)


def unit_input_norms(group: UnitGroup, include_bias: bool = False) -> torch.Tensor:
    """(units,) vector of ||w_j||_2 (||[w_j, b_j]||_2 with include_bias), differentiable."""
    return torch.linalg.vector_norm(unit_input_weights(group, include_bias), dim=1)


def unit_output_norms(group: UnitGroup) -> torch.Tensor:
    """(units,) vector of ||v_j||_2, differentiable."""
    return torch.linalg.vector_norm(unit_output_weights(group), dim=1)


def unit_path_norms(group: UnitGroup, include_bias: bool = False) -> torch.Tensor:
    """Per-unit path norms ||w_j||_2 * ||v_j||_2, shape (units,), differentiable."""
    return unit_input_norms(group, include_bias) * unit_output_norms(group)


def path_norm(groups: list[UnitGroup], include_bias: bool = False) -> torch.Tensor:
    """sum_groups sum_j ||w_j|| ||v_j||."""
    if not groups:
        raise ValueError("path_norm needs at least one unit group")
    return torch.stack([unit_path_norms(g, include_bias).sum() for g in groups]).sum()


def require_unit_groups(model: nn.Module, name: str) -> list[UnitGroup]:
    groups = unit_groups(model)
    if not groups:
        raise ValueError(
            f"{name} needs a model that declares unit groups (a unit_groups() method: pairs of a ReLU layer and "
            f"the layer reading it); {type(model).__name__} declares none"
        )
    return groups


class PathNormOptions(Options):
    include_bias: bool = False
    """Include the W-layer's bias b_j in w_j."""


@REGULARIZERS.register("path_norm")
class PathNorm(Regularizer):
    """R = sum_groups sum_j ||w_j|| ||v_j|| (module docstring). Weight layers in no group are not
    penalized (combine with l2 or frobenius for those)."""

    vectorizes = True

    Options = PathNormOptions
    options: PathNormOptions

    def __init__(self, options, roles=("weight",)):
        super().__init__(options, roles)
        require_weight_role_only(self.name, self.roles)

    def setup(self, model: nn.Module) -> None:
        for g in require_unit_groups(model, self.name):
            unit_output_weights(g)  # shape check, fails early

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        return path_norm(require_unit_groups(model, self.name), self.options.include_bias)

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        """``total`` and ``group.<name>`` (each group's sum of unit path norms)."""
        out: dict[str, float] = {}
        total = 0.0
        for g in require_unit_groups(model, self.name):
            value = float(unit_path_norms(g, self.options.include_bias).sum())
            out[f"group.{g.name}"] = value
            total += value
        out["total"] = total
        return out
