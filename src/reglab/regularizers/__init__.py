"""Regularizers looked up by name. Each module registers its classes in REGULARIZERS."""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import validate_options

# Importing the modules registers their classes.
from . import _all  # noqa: F401  (after REGULARIZERS exists)
from .base import Options, Regularizer, StepContext
from .registry import REGULARIZERS

_BASE_KEYS = {"name", "lam", "schedule", "roles"}


def regularizer_options(cfg) -> dict:
    """The regularizer's own options: every key of its config but the common ones."""
    return {k: v for k, v in cfg.model_dump().items() if k not in _BASE_KEYS}


def check_regularizer_options(cfg, where: str) -> None:
    """Config-time check of one regularizer entry: its name, its options and everything its
    constructor checks (e.g. roles), by building it (cheap: no model is involved). Raises
    ConfigError with fields under `where`. Checks that need the model happen at `setup`."""
    build_regularizer(cfg, where)


def prefixed(error: ConfigError, where: str) -> ConfigError:
    """`error` with its field under `where` (e.g. roles -> regularizers.0.roles); `error` itself
    when its field is already `where` or below it."""
    if error.field == where or error.field.startswith(f"{where}."):
        return error
    message = str(error)[len(error.field) + 2 :]  # str(e) = "<field>: <message>[ (allowed: ...)]"
    if error.allowed is not None:
        suffix = f" (allowed: {', '.join(map(str, error.allowed))})"
        if message.endswith(suffix):
            message = message[: -len(suffix)]
    return ConfigError(f"{where}.{error.field}", message, error.allowed)


def build_regularizer(cfg, where: str = "regularizers") -> Regularizer:
    cls = REGULARIZERS.get(cfg.name, f"{where}.name")
    opts = validate_options(cls, regularizer_options(cfg), where, "regularizer")
    try:
        return cls(opts, roles=cfg.roles)
    except ConfigError as e:
        raise prefixed(e, where) from None


__all__ = [
    "REGULARIZERS",
    "Options",
    "Regularizer",
    "StepContext",
    "build_regularizer",
    "check_regularizer_options",
    "prefixed",
]
