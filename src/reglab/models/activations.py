"""Activation modules by config name (ModelConfig.activation)."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    # The config schema already restricts the names; a KeyError here is a programming error.
    return ACTIVATIONS[name]()
