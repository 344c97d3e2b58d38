"""Initialisation schemes and the two post-init rescalings the seed studies use.

build_model applies them in this order: scheme (`init_scheme`), then `scale_parameters`
(study 1's init scaling), then `set_weight_norms` (SKS "normalized" init).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .structure import weight_layers

INIT_SCHEMES = ("default", "kaiming", "he_normal_conv")


@torch.no_grad()
def init_scheme(model: nn.Module, scheme: str) -> None:
    """Re-initialise the weight layers in place; `default` keeps PyTorch's own init."""
    if scheme == "default":
        return
    if scheme == "kaiming":
        # SKS and PathProx: Kaiming-normal, fan_in, ReLU gain, on every Linear/Conv; zero biases.
        for _, layer in weight_layers(model):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            if layer.bias is not None:
                layer.bias.zero_()
        return
    if scheme == "he_normal_conv":
        # Study 3 (AutoL2 ConvNet): conv weights N(0, 2/fan_in), fan_in = in_ch·k·k; conv biases
        # and every Linear keep PyTorch's defaults (as the code did, not as its report claims).
        for _, layer in weight_layers(model):
            if isinstance(layer, nn.Conv2d):
                fan_in = layer.weight[0].numel()
                layer.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
        return
    raise ValueError(f"unknown init scheme {scheme!r}; expected one of {INIT_SCHEMES}")


@torch.no_grad()
def scale_parameters(model: nn.Module, factor: float) -> None:
    """Multiply every parameter (weights, biases, batch-norm affine) by `factor`."""
    if factor == 1.0:
        return
    for p in model.parameters():
        p.mul_(factor)


@torch.no_grad()
def set_weight_norms(model: nn.Module, norm: float) -> None:
    """Rescale each weight layer so that ||W_l||_F = norm (biases untouched)."""
    for _, layer in weight_layers(model):
        layer.weight.mul_(norm / layer.weight.norm())
