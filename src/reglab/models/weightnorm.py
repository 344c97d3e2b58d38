"""Study 1's weight normalizations, as parametrizations of every weight layer's weight.

- PaperWN (``model.weight_norm: true``): W_l = g_l * V_l / ||V_l||_F, so ||W_l||_F = |g_l|
  always (a scalar g per layer, not per output unit as in Salimans & Kingma). The free tensor V
  is stored by torch.nn.utils.parametrize as `<layer>.parametrizations.weight.original`; g lives
  on the parametrization module as `<layer>.parametrizations.weight[0].g`.
- Rho-WN (``model.weight_norm: rho``): W_l = V_l / ||V_l||_F (no per-layer scale) and one global
  scalar rho, the model's parameter `wn_rho`, multiplies the network's output (a forward hook,
  so `torch.func.functional_call` sees a swapped rho too). For a positively homogeneous network
  this is the same function class as PaperWN with rho = prod_l g_l; rho starts at g0^L.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from .layers import weight_layers


class PaperWN(nn.Module):
    def __init__(self, g0: float):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(float(g0)))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.g * v / v.norm()

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        # Store the direction only; g carries the scale.
        return w / w.norm()


class UnitNorm(nn.Module):
    """Rho-WN's layer map: W = V / ||V||_F (the scale lives in the model's global rho)."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v / v.norm()

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w / w.norm()


RHO = "wn_rho"
"""The name of Rho-WN's global output scale on the model."""


def _scale_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output * getattr(module, RHO)


def apply_rho_wn(model: nn.Module, g0: float | None) -> nn.Module:
    """Make every Linear/Conv2d weight unit-norm and scale the output by one global rho, which
    starts at g0^L (L weight layers), or at prod_l ||W_l||_F when g0 is None."""
    layers = weight_layers(model)
    if not layers:
        raise ValueError("Rho-WN: the model has no Linear or Conv2d layer")
    start = 1.0
    for _, layer in layers:
        start *= float(layer.weight.detach().double().norm()) if g0 is None else float(g0)
        parametrize.register_parametrization(layer, "weight", UnitNorm())
    model.register_parameter(RHO, nn.Parameter(torch.tensor(start)))
    model.register_forward_hook(_scale_output)
    return model


def global_scale(model: nn.Module) -> nn.Parameter | None:
    """Rho-WN's rho, or None for a model without it."""
    return model._parameters.get(RHO)


def is_unit_normalized(layer: nn.Module) -> bool:
    """Whether the layer's weight is Rho-WN's unit-norm map."""
    return parametrize.is_parametrized(layer, "weight") and any(
        isinstance(p, UnitNorm) for p in weight_parametrizations(layer)
    )


def apply_paper_wn(model: nn.Module, g0: float | None) -> nn.Module:
    """Parametrize every Linear/Conv2d weight; g starts at g0, or at ||W||_F when g0 is None."""
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
