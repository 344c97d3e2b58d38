"""Name -> object registries, so configs name models, datasets and regularizers as strings.

Besides the registered names, a name with a colon is an import path, "module.path:attribute"
(as in entry points), for a user's own model, dataset, regularizer or schedule. It is resolved
at every lookup, so config checks, runs and spawned sweep workers all resolve it the same way;
importlib keeps each imported module in sys.modules, so only the first lookup imports.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError, pydantic_message

T = TypeVar("T")


class Registry(Generic[T]):
    """`kind` names the registry's objects in messages; `expects` is (what an object named by
    import path must be, in words; the test of it), given by the module that owns the registry
    and knows its base type."""

    def __init__(self, kind: str, expects: tuple[str, Callable[[object], bool]] | None = None):
        self.kind = kind
        self.expects = expects if expects is not None else (f"a {kind}", lambda obj: True)
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if ":" in name:  # a colon marks an import path (see `get`); a registered name never has one
                raise ValueError(f"{self.kind} name {name!r} has a colon")
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str, field: str = "name") -> T:
        """Look a name up, or import it when it is "module.path:attribute"; an unknown name or
        a bad import path is a ConfigError naming `field`."""
        if ":" in name:
            return self._import(name, field)
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                field, f"unknown {self.kind} {name!r}; one of your own is named module.path:attribute", self.names()
            ) from None

    def _import(self, name: str, field: str) -> T:
        module_name, _, attr = name.partition(":")
        if not module_name or not attr:
            raise ConfigError(field, f"{name!r} is not an import path: write module.path:attribute")
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # the user's module may fail in any way while it runs; say how, in one line
            raise ConfigError(field, f"cannot import module {module_name!r}: {_one_line(e)}") from None
        obj: object = module
        for part in attr.split("."):  # "module:Class.attribute", as entry points allow
            if not hasattr(obj, part):
                raise ConfigError(field, f"module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        what, fits = self.expects
        if not fits(obj):
            raise ConfigError(field, f"{name} is {_describe(obj)}, not {what}")
        return obj  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def subclass_of(base: type) -> Callable[[object], bool]:
    """The test that an object is a subclass of `base` (for `expects`)."""
    return lambda obj: isinstance(obj, type) and issubclass(obj, base)


def _describe(obj: object) -> str:
    return f"the class {obj.__qualname__}" if isinstance(obj, type) else f"of type {type(obj).__name__}"


def _one_line(e: BaseException) -> str:
    """An exception raised while importing, in one line: its type, its message and, when it is
    not an ImportError (whose message says what is missing), where the user's code raised it."""
    text = f"{type(e).__name__}: {' '.join(str(e).split())}"
    if not isinstance(e, ImportError | SyntaxError) and e.__traceback__ is not None:
        last = traceback.extract_tb(e.__traceback__)[-1]
        text += f" (at {last.filename}:{last.lineno})"
    return text


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
