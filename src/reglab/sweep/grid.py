"""Grid expansion: a sweep spec becomes a list of validated run configs.

A sweep spec is a config in which some values are lists of alternatives (sweep axes):

- a list where the config expects a single value (``optim.lr: [0.1, 0.01]``) is an axis;
- where the config expects a list (``model.widths``, ``lr_schedule.milestones``), an axis is a
  list of lists (``model.widths: [[784, 128, 10], [784, 256, 10]]``);
- ``regularizers`` is a list of regularizer mappings; values inside them can be axes
  (``regularizers: [{name: l2, lam: [1e-3, 1e-4]}]``), and a list of such lists is an axis over
  whole regularizer sets;
- on the command line, ``key=a,b,c`` (commas outside brackets) is an axis.

``variants:`` (top level) lists partial configs, each deep-merged over the rest of the spec and
expanded on its own; the sweep is the union. This writes study 1's structure -- the L2-sum grid
over its own normalizations, the L2-mul grid over its own, and the unregularized baseline --
without listing runs by hand.

Runs are identified by their config hash, so duplicates (two variants producing the same run)
are run once.
"""

from __future__ import annotations

import copy
import itertools
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..config import RegularizerConfig, RunConfig, config_hash, merge, parse_overrides, parse_value
from ..errors import ConfigError
from ..validation import validate


@dataclass
class PlannedRun:
    config: RunConfig
    hash: str
    axes: dict[str, Any] = field(default_factory=dict)
    """The value of every sweep axis for this run (dotted path -> value)."""


# ----------------------------------------------------------------------------- schema lookup


def _unwrap(ann: Any) -> Any:
    """Optional[X] -> X."""
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _field_kind(path: list[str]) -> str:
    """'list', 'model', 'scalar' or 'unknown' (regularizer and schedule options) for a path."""
    model: type[BaseModel] | None = RunConfig
    ann: Any = None
    i = 0
    while i < len(path):
        p = path[i]
        if model is None:
            return "unknown"
        if p not in model.model_fields:
            return "unknown"  # extra keys: a regularizer's or schedule's own options
        ann = _unwrap(model.model_fields[p].annotation)
        origin = typing.get_origin(ann)
        if origin in (list, tuple):
            args = typing.get_args(ann)
            elem = args[0] if args else None
            if i + 1 < len(path) and path[i + 1].isdigit():
                i += 2
                model = elem if isinstance(elem, type) and issubclass(elem, BaseModel) else None
                ann = elem
                if i == len(path):
                    return "model" if model is not None else "scalar"
                continue
            if i == len(path) - 1:
                return "list"
            return "unknown"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
            i += 1
            if i == len(path):
                return "model"
            continue
        return "scalar" if i == len(path) - 1 else "unknown"
    return "model"


# ----------------------------------------------------------------------------- axes


def find_axes(d: Any, path: list[str] | None = None) -> list[tuple[str, list]]:
    """Every (dotted path, alternatives) in a spec, in a stable order."""
    path = path or []
    axes: list[tuple[str, list]] = []
    if not isinstance(d, dict):
        return axes
    for k, v in d.items():
        p = [*path, str(k)]
        kind = _field_kind(p)
        if isinstance(v, dict):
            axes += find_axes(v, p)
        elif isinstance(v, list):
            if kind == "list":
                if v and all(isinstance(x, list) for x in v):
                    axes.append((".".join(p), v))
                elif p == ["regularizers"]:
                    for i, item in enumerate(v):
                        axes += find_axes(item, [*p, str(i)])
            elif kind in ("scalar", "unknown"):
                axes.append((".".join(p), v))
            else:
                raise ConfigError(".".join(p), "a list of alternatives is not allowed here (this field is a section)")
    return axes


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _set_path(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = d
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets, braces or quotes."""
    pieces: list[str] = []
    cur: list[str] = []
    depth, quote = 0, None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            pieces.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    pieces.append("".join(cur))
    return pieces


def sweep_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """key=value overrides where key=a,b,c becomes a list of alternatives."""
    out = []
    for item, (key, value) in zip(items, parse_overrides(items)):
        pieces = split_top_level(item.partition("=")[2])
        if len(pieces) > 1:
            value = [parse_value(p.strip()) for p in pieces]
            if _field_kind(key.split(".")) == "list" and not all(isinstance(v, list) for v in value):
                raise ConfigError(key, "alternatives of a list-valued field are lists: key=[..],[..]")
        out.append((key, value))
    return out


def expand(spec: dict) -> list[PlannedRun]:
    """All runs of a sweep spec, validated. The first invalid value stops everything."""
    spec = copy.deepcopy(spec)
    if "tune" in spec:  # its search space would read as sweep axes
        raise ConfigError("tune", "a sweep does not search: run this file with `reglab tune FILE`, or remove the block")
    variants = spec.pop("variants", None) or [{}]
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ConfigError("variants", "must be a list of partial configs (mappings)")
    planned: dict[str, PlannedRun] = {}
    for vi, variant in enumerate(variants):
        merged = _deep_merge(spec, variant)
        axes = find_axes(merged)
        for path, values in axes:
            if len(values) == 0:
                raise ConfigError(path, "an empty list of alternatives gives no runs")
        names = [p for p, _ in axes]
        for combo in itertools.product(*[v for _, v in axes]):
            d = copy.deepcopy(merged)
            for p, val in zip(names, combo):
                _set_path(d, p, val)
            cfg = _validate_run(d, dict(zip(names, combo)), vi if len(variants) > 1 else None)
            h = config_hash(cfg)
            planned.setdefault(h, PlannedRun(cfg, h, dict(zip(names, combo))))
    return list(planned.values())


def _validate_run(d: dict, axes: dict, variant: int | None) -> RunConfig:
    try:
        return validate(d)
    except ConfigError as e:
        where = f" in variants.{variant}" if variant is not None else ""
        bad = {
            p: v for p, v in axes.items() if e.field == p or e.field.startswith(p + ".") or p.startswith(e.field + ".")
        }
        if bad:
            ((_p, v),) = list(bad.items())[:1]
            raise ConfigError(e.field, f"sweep value {v!r}{where} is invalid: {str(e).split(': ', 1)[1]}") from None
        if where:
            raise ConfigError(e.field, f"{str(e).split(': ', 1)[1]}{where}") from None
        raise


def with_overrides(spec: dict, overrides: list[str]) -> dict:
    """`spec` with command-line key=a,b overrides applied to it and to each of its variants: what
    is given on the command line wins over the file, a variant's own value included
    (train.epochs=2 shortens every variant, also one that sets its own budget)."""
    pairs = sweep_overrides(overrides)
    out = merge(spec, pairs)
    variants = out.get("variants")
    if pairs and isinstance(variants, list):
        out["variants"] = [merge(v, pairs) if isinstance(v, dict) else v for v in variants]
    return out


def build_spec(path: str | None, overrides: list[str]) -> dict:
    """A sweep spec from a YAML file and key=a,b overrides. A preset's `reproduce:` block says how
    `reglab reproduce` reads the results; a plain sweep has no use for it and leaves it aside."""
    from ..config import load_yaml

    base = load_yaml(path) if path else {}
    base.pop("reproduce", None)
    return with_overrides(base, overrides)


__all__ = [
    "PlannedRun",
    "RegularizerConfig",
    "build_spec",
    "expand",
    "find_axes",
    "split_top_level",
    "sweep_overrides",
    "with_overrides",
]
