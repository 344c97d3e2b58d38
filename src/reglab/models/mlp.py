"""Fully connected networks on the flattened input.

- `mlp`: study 2's SmallMLP (784-128-128-10) by default, PathProx's `mlp` with widths
  [784, 400, 400, 400, 400, 400, 10]; activation after every hidden layer, optional BatchNorm1d
  between a hidden Linear and its activation.
- `mlp_factorized`: PathProx's variant, activation only after hidden layers 1, 3, 5, ... so the
  layers in between compose into factorised linear maps.

Unit groups for both: disjoint consecutive pairs (L1, L2), (L3, L4), ...; a left-over last layer
is an "other layer". They exist only when every pair is joined by a homogeneous activation.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from .activations import make_activation
from .network import Network, output_head, pair_weight_layers


def check_widths(
    cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int, hidden_default: list[int]
) -> list[int]:
    """The full width list (input and output included), defaulted and checked against the task."""
    n_in = math.prod(input_shape)
    if cfg.width_multiplier != 1.0:
        raise ConfigError(
            "model.width_multiplier", "MLPs take explicit model.widths; the multiplier is for CNNs", [1.0]
        )
    if cfg.widths is None:
        return [n_in, *hidden_default, num_outputs]
    widths = list(cfg.widths)
    if len(widths) < 2:
        raise ConfigError("model.widths", f"needs at least an input and an output width, got {widths}")
    if any(w < 1 for w in widths):
        raise ConfigError("model.widths", f"widths must be positive, got {widths}")
    if widths[0] != n_in:
        raise ConfigError(
            "model.widths",
            f"widths[0] is {widths[0]} but the input has {n_in} features (shape {tuple(input_shape)}); "
            f"expected widths[0] = {n_in}",
        )
    if widths[-1] != num_outputs:
        raise ConfigError(
            "model.widths",
            f"widths[-1] is {widths[-1]} but the task has {num_outputs} output(s); expected widths[-1] = {num_outputs}",
        )
    return widths


def mlp_layers(widths: list[int], cfg: ModelConfig, activate: list[bool], num_outputs: int) -> Network:
    """Linear layers fc1..fcN; after hidden layer i: optional BatchNorm1d, then the activation if activate[i]."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    n_layers = len(widths) - 1
    for i in range(n_layers):
        name = f"fc{i + 1}"
        layers[name] = nn.Linear(widths[i], widths[i + 1], bias=cfg.bias)
        if i == n_layers - 1:
            break
        if cfg.batch_norm:
            layers[f"{name}_bn"] = nn.BatchNorm1d(widths[i + 1])
        if activate[i]:
            layers[f"{name}_act"] = make_activation(cfg.activation)
    layers.update(output_head(num_outputs))
    return Network(layers, pair_weight_layers(layers))


def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> Network:
    widths = check_widths(cfg, input_shape, num_outputs, hidden_default=[128, 128])
    return mlp_layers(widths, cfg, activate=[True] * (len(widths) - 2), num_outputs=num_outputs)


def build_mlp_factorized(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> Network:
    if cfg.batch_norm:
        raise ConfigError("model.batch_norm", "mlp_factorized has no batch-norm variant; use model.name=mlp")
    widths = check_widths(cfg, input_shape, num_outputs, hidden_default=[400] * 5)
    # Activation after L1, L3, L5, ... (0-based hidden index even).
    activate = [i % 2 == 0 for i in range(len(widths) - 2)]
    return mlp_layers(widths, cfg, activate=activate, num_outputs=num_outputs)
