"""What a model is made of, in the terms regularizers need.

- weight layers: every nn.Linear and nn.Conv2d, in registration order (L = their count);
- unit groups (PathProx): a W-layer whose output units are positively homogeneous (ReLU) units,
  and the V-layer that reads them. Unit j has input weights w_j = row j of W (a filter for a
  conv) and output weights v_j = column j of V (the slice V[:, j] for a conv). Groups are
  Linear->Linear or Conv->Conv. A model declares them with a `unit_groups()` method;
- parameter roles: weight, bias or norm (batch-norm affine parameters), so a regularizer can
  select parameters by role. Under PaperWN the direction V has role weight and the scale g
  has role weight too (it is the layer's norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from .layers import WEIGHT_LAYER_TYPES, WeightLayer, weight_layers
from .weightnorm import is_unit_normalized, is_weight_normalized, weight_parametrizations, wn_scale

__all__ = ["WEIGHT_LAYER_TYPES", "WeightLayer", "weight_layers"]  # and the names defined below

NORM_LAYER_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class UnitGroup:
    name: str
    inp: WeightLayer
    """W-layer: its output units are the group's units."""
    out: WeightLayer
    """V-layer: reads the units; its bias is never touched by PathProx."""

    @property
    def size(self) -> int:
        return self.inp.weight.shape[0]


def unit_groups(model: nn.Module) -> list[UnitGroup]:
    """The model's unit groups: from its `unit_groups()` method (reglab's models), else from the
    (W-layer name, V-layer name) pairs in its `group_pairs` attribute (`declare_unit_groups`)."""
    fn = getattr(model, "unit_groups", None)
    if callable(fn):
        return list(fn())
    pairs = getattr(model, "group_pairs", None)
    if not pairs:
        return []
    layer = lambda name: cast(WeightLayer, model.get_submodule(name))  # noqa: E731  (checked by declare_unit_groups)
    return [UnitGroup(f"{w}-{v}", layer(w), layer(v)) for w, v in pairs]


def other_layers(model: nn.Module) -> list[tuple[str, WeightLayer]]:
    """Weight layers that are in no unit group (PathProx gives them plain weight decay)."""
    grouped = {id(m) for g in unit_groups(model) for m in (g.inp, g.out)}
    return [(n, m) for n, m in weight_layers(model) if id(m) not in grouped]


def layer_norm_sq(layer: WeightLayer) -> torch.Tensor:
    """||W_l||_F^2, differentiable; g_l^2 under PaperWN (the quantity the penalties act on); the
    constant 1 under Rho-WN, whose scale is the model's global rho."""
    if is_weight_normalized(layer):
        return wn_scale(layer) ** 2
    if is_unit_normalized(layer):
        original = weight_parametrizations(layer).original
        return torch.ones((), dtype=original.dtype, device=original.device)
    return layer.weight.pow(2).sum()


def params_by_role(model: nn.Module, roles: list[str] | tuple[str, ...]) -> list[tuple[str, nn.Parameter]]:
    """Parameters whose role is in `roles` (weight, bias, norm), in model order."""
    wanted = set(roles)
    seen: set[int] = set()
    out = []
    for mod_name, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{pname}" if mod_name else pname
            if _role(mod, pname) in wanted:
                out.append((full, p))
    return out


def _role(mod: nn.Module, pname: str) -> str:
    if isinstance(mod, NORM_LAYER_TYPES):
        return "norm"
    if pname == "bias":
        return "bias"
    return "weight"
