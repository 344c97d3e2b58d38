"""Regularizers looked up by name. Each module registers its classes in REGULARIZERS."""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import Registry
from .base import Options, Regularizer, StepContext

REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")

# Importing the modules registers their classes.
from . import _all  # noqa: E402,F401

_BASE_KEYS = {"name", "lam", "schedule", "roles"}


def regularizer_options(cfg) -> dict:
    """The regularizer's own options: every key of its config but the common ones."""
    return {k: v for k, v in cfg.model_dump().items() if k not in _BASE_KEYS}


def check_regularizer_options(cfg, where: str) -> None:
    cls = REGULARIZERS.get(cfg.name, f"{where}.name")
    _validate_options(cls, regularizer_options(cfg), where)


def _validate_options(cls, opts: dict, where: str):
    from pydantic import ValidationError

    try:
        return cls.Options.model_validate(opts)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{where}.{key}", f"unknown option of {cls.name}", sorted(cls.Options.model_fields)) from None
        raise ConfigError(f"{where}.{key}", f"{err['msg']} (got {err.get('input')!r})") from None


def build_regularizer(cfg, where: str = "regularizers") -> Regularizer:
    cls = REGULARIZERS.get(cfg.name, f"{where}.name")
    opts = _validate_options(cls, regularizer_options(cfg), where)
    return cls(opts, roles=cfg.roles)


__all__ = ["REGULARIZERS", "Options", "Regularizer", "StepContext", "build_regularizer", "check_regularizer_options"]
