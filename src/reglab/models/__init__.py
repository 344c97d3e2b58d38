"""Models looked up by name. See registry.py for the names and build_model()."""

from .registry import MODELS, build_model
from .structure import UnitGroup, layer_norm_sq, other_layers, params_by_role, unit_groups, weight_layers

__all__ = [
    "MODELS",
    "UnitGroup",
    "build_model",
    "layer_norm_sq",
    "other_layers",
    "params_by_role",
    "unit_groups",
    "weight_layers",
]
