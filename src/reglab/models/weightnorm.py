"""PaperWN: weight normalization with one scalar scale per layer, as a parametrization.

W_l = g_l * V_l / ||V_l||_F, so ||W_l||_F = |g_l| always. This is study 1's "PaperWN" (a scalar
g per layer, not per output unit as in Salimans & Kingma). The free tensor V is stored by
torch.nn.utils.parametrize as `<layer>.parametrizations.weight.original`; g lives on the
parametrization module as `<layer>.parametrizations.weight[0].g`.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn.utils import parametrize


class PaperWN(nn.Module):
    def __init__(self, g0: float):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(float(g0)))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.g * v / v.norm()

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        # Store the direction only; g carries the scale.
        return w / w.norm()


def apply_paper_wn(model: nn.Module, g0: float | None) -> nn.Module:
    """Parametrize every Linear/Conv2d weight; g starts at g0, or at ||W||_F when g0 is None."""
    from .structure import weight_layers

    for _, layer in weight_layers(model):
        start = float(layer.weight.detach().norm()) if g0 is None else float(g0)
        parametrize.register_parametrization(layer, "weight", PaperWN(start))
    return model


def weight_parametrizations(layer: nn.Module) -> parametrize.ParametrizationList:
    """`layer.parametrizations.weight`, the list torch.nn.utils.parametrize attached to a layer
    whose weight is parametrized (the attribute is added at runtime, so torch's types miss it)."""
    parametrizations = cast(nn.ModuleDict, layer.parametrizations)
    return cast(parametrize.ParametrizationList, parametrizations["weight"])


def is_weight_normalized(layer: nn.Module) -> bool:
    return parametrize.is_parametrized(layer, "weight") and any(
        isinstance(p, PaperWN) for p in weight_parametrizations(layer)
    )


def wn_scale(layer: nn.Module) -> nn.Parameter:
    """The scalar g of a PaperWN layer."""
    for p in weight_parametrizations(layer):
        if isinstance(p, PaperWN):
            return p.g
    raise ValueError("layer is not weight-normalized")
