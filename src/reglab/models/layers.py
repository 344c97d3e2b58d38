"""Weight layers: every nn.Linear and nn.Conv2d of a model, in registration order. The one
definition both the model's structure (reglab.models.structure) and weight normalization
(reglab.models.weightnorm) build on."""

from __future__ import annotations

from typing import TypeAlias

from torch import nn

WEIGHT_LAYER_TYPES = (nn.Linear, nn.Conv2d)
WeightLayer: TypeAlias = nn.Linear | nn.Conv2d
"""A weight layer (one of WEIGHT_LAYER_TYPES); under PaperWN its `weight` is the parametrized one."""


def weight_layers(model: nn.Module) -> list[tuple[str, WeightLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYER_TYPES)]
