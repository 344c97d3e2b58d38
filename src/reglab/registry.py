"""Name -> object registries, so configs name models, datasets and regularizers as strings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError, pydantic_message

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str, field: str = "name") -> T:
        """Look a name up; an unknown name is a ConfigError naming `field`."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(field, f"unknown {self.kind} {name!r}", self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def validate_options(cls, opts: dict, where: str, kind: str):
    """Validate `opts` against `cls.Options` (a pydantic model); the first problem becomes a
    ConfigError naming `<where>.<option>` and, for an unknown option, the allowed ones."""
    from pydantic import ValidationError

    try:
        return cls.Options.model_validate(opts)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"{where}.{key}", f"unknown option of {kind} {cls.name}", sorted(cls.Options.model_fields)
            ) from None
        raise ConfigError(f"{where}.{key}", pydantic_message(err)) from None
