"""The one container every reglab model is: named layers in a row, plus its unit groups.

Models are flat nn.Sequential stacks with readable layer names (conv1, conv1_act, pool1, fc1,
...). Being flat keeps the forward pass a plain loop over modules and lets the unit groups be
read off the layer order by one rule (`pair_weight_layers`) instead of being hand-listed per
model.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .structure import WEIGHT_LAYER_TYPES, UnitGroup

# Modules that commute with a positive per-unit rescaling: f(s·x) = s·f(x) for s > 0, channel
# by channel. A unit whose input weights are multiplied by s and whose output weights are divided
# by s leaves the network unchanged only if everything between the two layers is of this kind.
POSITIVELY_HOMOGENEOUS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
)
POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


class SqueezeLastDim(nn.Module):
    """(batch, 1) -> (batch,): one-output models regress onto ±1 targets with plain MSE."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1)


class Network(nn.Sequential):
    """A flat stack of named layers that knows its PathProx unit groups.

    `group_pairs` holds (W-layer name, V-layer name); names rather than modules, so the pairs
    stay valid after copying, loading a state dict or registering parametrizations.
    """

    def __init__(self, layers: OrderedDict[str, nn.Module], group_pairs: list[tuple[str, str]]):
        super().__init__(layers)
        self.group_pairs = list(group_pairs)

    def unit_groups(self) -> list[UnitGroup]:
        return [UnitGroup(f"{w}-{v}", getattr(self, w), getattr(self, v)) for w, v in self.group_pairs]


def pair_weight_layers(layers: OrderedDict[str, nn.Module], pair_across_pooling: bool = True) -> list[tuple[str, str]]:
    """Disjoint pairs of consecutive same-type weight layers, read off a homogeneous network.

    Groups are only defined for a positively homogeneous network: one batch norm, GELU, tanh or
    other such module anywhere gives no groups at all (rather than odd partial pairings such as
    two linear layers that happen to sit next to each other in a GELU mlp_factorized).
    Otherwise the walk is greedy: a weight layer closes the pair opened by the previous unpaired
    weight layer when both have the same type, else it opens a new pair. With
    pair_across_pooling=False a pooling layer closes nothing (VGG: pairs stay inside a block).
    """
    if not all(isinstance(m, (*WEIGHT_LAYER_TYPES, *POSITIVELY_HOMOGENEOUS, SqueezeLastDim)) for m in layers.values()):
        return []
    pairs: list[tuple[str, str]] = []
    open_name: str | None = None
    for name, layer in layers.items():
        if isinstance(layer, WEIGHT_LAYER_TYPES):
            if open_name is not None and type(layers[open_name]) is type(layer):
                pairs.append((open_name, name))
                open_name = None
            else:
                open_name = name
        elif isinstance(layer, POOLING) and not pair_across_pooling:
            open_name = None
    return pairs


def output_head(num_outputs: int) -> OrderedDict[str, nn.Module]:
    """What follows the last layer: a squeeze for one-output (binary ±1) models, else nothing."""
    return OrderedDict(squeeze=SqueezeLastDim()) if num_outputs == 1 else OrderedDict()


def declare_unit_groups(model: nn.Module, pairs: list[tuple[str, str]] | None = None) -> nn.Module:
    """Give any module PathProx / path-norm unit groups, in place; returns the model.

    `pairs` are (W-layer, V-layer) submodule names, e.g. [("0", "2")] for
    nn.Sequential(nn.Linear, nn.ReLU(), nn.Linear): unit j has input weights W[j] and output
    weights V[:, j]. Without `pairs` the model must be an nn.Sequential, whose pairs are read off
    its layer order as for reglab's own models (every module between two paired layers must be
    positively homogeneous: ReLU, pooling, ...). Names, not modules, are stored, so the groups
    survive copies and state-dict loads."""
    if pairs is None:
        if not isinstance(model, nn.Sequential):
            raise ValueError(
                f"{type(model).__name__} is not an nn.Sequential: name its layer pairs, "
                "declare_unit_groups(model, pairs=[('fc1', 'fc2')])"
            )
        layers = OrderedDict(model.named_children())
        pairs = pair_weight_layers(layers)
        if not pairs:
            others = sorted({type(m).__name__ for m in layers.values()} - {"Linear", "Conv2d"})
            raise ValueError(
                "no unit groups: PathProx needs consecutive weight layers of one type with only positively "
                f"homogeneous modules (ReLU, pooling, Flatten) between them; this model has {others}"
            )
    for w, v in pairs:
        for name in (w, v):
            layer = model.get_submodule(name)
            if not isinstance(layer, WEIGHT_LAYER_TYPES):
                raise ValueError(f"{name!r} is a {type(layer).__name__}, not a Linear or Conv2d layer")
    model.__dict__["group_pairs"] = list(pairs)  # a plain attribute (nn.Module.__setattr__ takes modules and tensors)
    return model
