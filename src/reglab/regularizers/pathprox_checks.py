"""Which models PathProx can handle: plain Linear->Linear / Conv2d->Conv2d unit groups, in an
order that makes unit rescaling and the layerwise balance function-preserving."""

from __future__ import annotations

import itertools

from torch import nn
from torch.nn.utils import parametrize

from ..errors import UserError
from ..models.structure import UnitGroup, weight_layers


class UnsupportedModelError(UserError, ValueError):
    """The model's unit groups cannot be handled by PathProx."""


# --------------------------------------------------------------------------- checks


def _check_layer(layer: nn.Module, where: str) -> None:
    if parametrize.is_parametrized(layer) or not isinstance(getattr(layer, "weight", None), nn.Parameter):
        raise UnsupportedModelError(
            f"pathprox: {where} has a parametrized (e.g. weight-normalized) weight; PathProx rescales "
            "weights in place and needs plain nn.Linear/nn.Conv2d layers in its unit groups"
        )


def check_groups(groups: list[UnitGroup]) -> None:
    """Raise UnsupportedModelError unless every group is a plain Linear->Linear or Conv2d->Conv2d
    pair whose V-layer reads exactly the W-layer's N units, and no layer is in two groups."""
    if not groups:
        raise UnsupportedModelError(
            "pathprox: the model declares no unit groups (it needs a `unit_groups()` method returning "
            "UnitGroup(name, W-layer, V-layer) pairs of ReLU units); use a model with unit groups"
        )
    seen: set[int] = set()
    for g in groups:
        kinds = (type(g.inp).__name__, type(g.out).__name__)
        if not any(isinstance(g.inp, t) and isinstance(g.out, t) for t in (nn.Linear, nn.Conv2d)):
            raise UnsupportedModelError(
                f"pathprox: unit group {g.name!r} is {kinds[0]}->{kinds[1]}; only Linear->Linear and "
                "Conv2d->Conv2d groups are supported"
            )
        _check_layer(g.inp, f"unit group {g.name!r} W-layer")
        _check_layer(g.out, f"unit group {g.name!r} V-layer")
        n_units, n_read = g.inp.weight.shape[0], g.out.weight.shape[1]
        if n_units != n_read:
            raise UnsupportedModelError(
                f"pathprox: unit group {g.name!r}: the W-layer has {n_units} units but the V-layer "
                f"reads {n_read} inputs (grouped convolutions are not supported)"
            )
        for layer in (g.inp, g.out):
            if id(layer) in seen:
                raise UnsupportedModelError(f"pathprox: unit group {g.name!r} shares a layer with another group")
            seen.add(id(layer))


def check_layer_order(model: nn.Module, groups: list[UnitGroup], groups_in_order: bool) -> None:
    """Raise UnsupportedModelError unless, in the model's registration order of weight layers,
    each group's V-layer directly follows its W-layer (no weight layer between them, so unit
    rescaling preserves the function) and, with groups_in_order, the groups follow each other
    (V_g before W_{g+1}, as the layerwise balance needs)."""
    order = {id(m): i for i, (_, m) in enumerate(weight_layers(model))}
    for g in groups:
        if id(g.inp) not in order or id(g.out) not in order:
            raise UnsupportedModelError(f"pathprox: unit group {g.name!r} holds a layer that is not part of the model")
        if order[id(g.out)] != order[id(g.inp)] + 1:
            raise UnsupportedModelError(
                f"pathprox: unit group {g.name!r}: its V-layer must be the weight layer right after its W-layer"
            )
    if groups_in_order:
        for a, b in itertools.pairwise(groups):
            if order[id(a.out)] >= order[id(b.inp)]:
                raise UnsupportedModelError(
                    f"pathprox: unit groups {a.name!r} and {b.name!r} are not listed in forward order, "
                    "which the layerwise balance needs (or set balance: false)"
                )
