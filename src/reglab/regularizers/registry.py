"""REGULARIZERS, the name -> class registry every regularizer module registers its classes in.

It lives in its own module, imported by the package and by each regularizer module, so that no
module imports the package that imports it (no import cycle)."""

from __future__ import annotations

from ..registry import Registry, subclass_of
from .base import Regularizer


class _RegularizerRegistry(Registry[type[Regularizer]]):
    """Registering a class also gives it its name, so the name is written once."""

    def register(self, name: str):
        register = super().register(name)

        def deco(cls: type[Regularizer]) -> type[Regularizer]:
            if cls.__dict__.get("name") not in (None, "", name):
                raise ValueError(f"{cls.__name__}.name is {cls.name!r} but it is registered as {name!r}")
            cls.name = name
            return register(cls)

        return deco

    def _import(self, name: str, field: str) -> type[Regularizer]:
        """A class named by import path is named so in messages and logs, unless it has a name."""
        cls = super()._import(name, field)
        if not cls.name:
            cls.name = name
        return cls


REGULARIZERS: Registry[type[Regularizer]] = _RegularizerRegistry(
    "regularizer", ("a subclass of reglab.regularizers.Regularizer", subclass_of(Regularizer))
)
