"""Shared helpers for the penalty regularizer tests: building regularizers, small float64 models, gradients and
gradcheck."""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

from reglab.config import RegularizerConfig
from reglab.regularizers import build_regularizer


def make(name: str, roles=("weight",), **options):
    """Build a registered regularizer through the config path (validates its options)."""
    cfg = RegularizerConfig(name=name, lam=1.0, roles=list(roles), **options)
    return build_regularizer(cfg, "regularizers.0")


def set_weights(layer: nn.Module, weight, bias=None) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))


def mlp(*widths: int, bias: bool = True, dtype=torch.float64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def small_cnn(dtype=torch.float64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    ).to(dtype)


class _PenaltyOf(nn.Module):
    """forward() = reg.penalty(model): lets functional_call substitute the parameters."""

    def __init__(self, reg, model):
        super().__init__()
        self.model = model
        self.reg = reg

    def forward(self):
        return self.reg.penalty(self.model, None)


def assert_gradcheck(reg, model: nn.Module) -> None:
    """gradcheck of the penalty w.r.t. every parameter of the (float64) model."""
    reg.setup(model)
    wrapper = _PenaltyOf(reg, model)
    names = [n for n, _ in wrapper.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in wrapper.named_parameters())

    def f(*ps):
        return functional_call(wrapper, dict(zip(names, ps, strict=True)), ())

    assert gradcheck(f, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def grads_of(reg, model) -> dict[str, torch.Tensor]:
    model.zero_grad()
    reg.penalty(model, None).backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}
