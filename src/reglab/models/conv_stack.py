"""Plain CNNs described by a short plan, so each seed architecture is a few lines of data.

A plan is a tuple of tokens read left to right:
  int n  3×3 conv to n channels (stride 1, `padding`), then [BatchNorm2d], then the activation;
  "M"    2×2 max-pool;  "A"  2×2 average pool;  "G"  global average pool.
Then flatten, the hidden Linear layers (each followed by [BatchNorm1d], activation) and the
output Linear. The flatten size is computed from the input shape, so a CIFAR net also runs on
28×28 images (with a smaller FC input).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from .activations import make_activation
from .network import Network, output_head, pair_weight_layers

PlanToken = int | Literal["M", "A", "G"]


@dataclass(frozen=True)
class ConvStack:
    """A CNN family member; calling it with (cfg, input_shape, num_outputs) builds the model."""

    name: str
    plan: tuple[PlanToken, ...]
    hidden: tuple[int, ...] = ()
    """Widths of the hidden Linear layers between flatten and the output layer."""
    padding: int = 1
    batch_norm: Literal["none", "conv", "conv_and_fc"] = "none"
    """Where the model has a batch-norm variant; "none": batch_norm=True is a ConfigError."""
    fc_bias_always: bool = False
    """Study 1: `bias` switches conv biases only, Linear biases stay on. Else `bias` sets all."""
    pair_across_pooling: bool = True
    """Unit groups may span a pooling layer (False for VGG: pairs stay inside a block)."""

    def __call__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> Network:
        self._check(cfg, input_shape)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, height, width = input_shape
        n_conv = n_pool = 0

        def scaled(n: int) -> int:
            return max(1, round(n * cfg.width_multiplier))

        for token in self.plan:
            if isinstance(token, int):
                token = scaled(token)
                n_conv += 1
                name = f"conv{n_conv}"
                layers[name] = nn.Conv2d(channels, token, 3, padding=self.padding, bias=cfg.bias)
                if cfg.batch_norm:
                    layers[f"{name}_bn"] = nn.BatchNorm2d(token)
                layers[f"{name}_act"] = make_activation(cfg.activation)
                channels, height, width = token, height + 2 * self.padding - 2, width + 2 * self.padding - 2
            elif token in ("M", "A"):
                n_pool += 1
                layers[f"pool{n_pool}"] = nn.MaxPool2d(2) if token == "M" else nn.AvgPool2d(2)
                height, width = height // 2, width // 2
            elif token == "G":
                layers["global_pool"] = nn.AdaptiveAvgPool2d(1)
                height = width = 1
            else:
                raise ValueError(f"{self.name}: unknown plan token {token!r}")
            if height < 1 or width < 1:
                raise ConfigError(
                    "model.name",
                    f"{self.name} needs larger images than {tuple(input_shape)} (its feature maps shrink to nothing)",
                )
        layers["flatten"] = nn.Flatten()
        fc_bias = True if self.fc_bias_always else cfg.bias
        widths = [channels * height * width, *[scaled(h) for h in self.hidden], num_outputs]
        for i in range(len(widths) - 1):
            name = f"fc{i + 1}"
            layers[name] = nn.Linear(widths[i], widths[i + 1], bias=fc_bias)
            if i == len(widths) - 2:
                break
            if cfg.batch_norm and self.batch_norm == "conv_and_fc":
                layers[f"{name}_bn"] = nn.BatchNorm1d(widths[i + 1])
            layers[f"{name}_act"] = make_activation(cfg.activation)
        layers.update(output_head(num_outputs))
        return Network(layers, pair_weight_layers(layers, self.pair_across_pooling))

    def _check(self, cfg: ModelConfig, input_shape: tuple[int, ...]) -> None:
        if cfg.widths is not None:
            raise ConfigError(
                "model.widths",
                f"{self.name} has a fixed architecture; widths is only for mlp models (use model.width_multiplier)",
            )
        if cfg.batch_norm and self.batch_norm == "none":
            raise ConfigError("model.batch_norm", f"{self.name} has no batch-norm variant")
        if len(input_shape) != 3:
            raise ConfigError(
                "model.name", f"{self.name} needs image input (channels, height, width), got shape {tuple(input_shape)}"
            )
