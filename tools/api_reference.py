"""Write reglab's public API reference (docs/api.md) from the docstrings and signatures.

    .venv/bin/python tools/api_reference.py > docs/api.md

`tests/test_api_reference.py` fails when docs/api.md differs from what this prints, so the
reference follows the code."""

from __future__ import annotations

import importlib
import inspect
import sys

import reglab

SKIP = {"__version__"}


def _signature(obj) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    if inspect.isclass(obj):
        sig = sig.replace(return_annotation=inspect.Signature.empty)
    return str(sig).replace("'", "")


def _doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _own_members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties the class defines or inherits from reglab (not object)."""
    out = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
        if owner is None or not owner.__module__.startswith("reglab"):
            continue
        if inspect.isfunction(member) or inspect.ismethod(member) or isinstance(member, property):
            out.append((name, member))
    return out


def reference() -> str:
    step_module = importlib.import_module("reglab.regularization")
    lines = [
        "# reglab API reference",
        "",
        "Generated from the docstrings by `tools/api_reference.py`; do not edit by hand.",
        "Everything below is importable from `reglab` (`import reglab; reglab.term(...)`).",
        "The README's *Use reglab in your own code* shows them in a complete training loop.",
        "",
        "## The step",
        "",
        _doc(step_module),
        "",
    ]
    for name in sorted(n for n in reglab.__all__ if n not in SKIP):
        obj = getattr(reglab, name)
        if inspect.isclass(obj):
            lines += [f"## class `{name}{_signature(obj)}`", "", _doc(obj), ""]
            for member_name, member in _own_members(obj):
                if isinstance(member, property):
                    lines += [f"### `{name}.{member_name}` (property)", "", _doc(member), ""]
                else:
                    lines += [f"### `{name}.{member_name}{_signature(member)}`", "", _doc(member), ""]
        elif callable(obj):
            lines += [f"## `{name}{_signature(obj)}`", "", _doc(obj), ""]
        else:
            lines += [f"## `{name}`", "", f"A `{type(obj).__name__}`: {_doc(type(obj)).splitlines()[0]}", ""]
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
