"""Per-run quantities a claim can be about besides a run's final value, read from its logs.

A claim's `metric` is one of:

- `name`: the run's final value (its summary), the default;
- `name@STEP`: the value at the last evaluation at or before STEP; missing (NaN) when the run
  stopped before STEP, so a claim about STEP is not testable on shorter runs;
- `plateau_step(name)`: the first evaluation step whose value lies within 5 % of the run's final
  value (study 4's "reaches the plateau");
- `last_change_step(name)` / `last_change_epoch(name)`: the last step (or its epoch, counted from
  0) at which the value differs from the one logged before it, or 0 when it never changes (study
  3's "all of AutoL2's lambda changes happen in the first epoch"). Read from the per-step log
  when the name is logged there (lambda is), else from the evaluations.

`derive(runs, metrics)` adds one column per derived metric to a frame of runs (load_runs rows,
which carry each run's `path`).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pandas as pd

PLATEAU_TOLERANCE = 0.05
"""A curve is on its plateau once within this fraction of its final value."""

_AT = re.compile(r"^(?P<name>[^@()\s]+)@(?P<step>\d+)$")
_CALL = re.compile(r"^(?P<fn>plateau_step|last_change_step|last_change_epoch)\((?P<name>[^@()\s]+)\)$")
FUNCTIONS = ("plateau_step", "last_change_step", "last_change_epoch")


def parse(metric: str) -> tuple[str, str, int | None] | None:
    """(kind, logged name, step) of a derived metric, None for a plain final value. Raises
    ValueError for something that looks derived but is malformed."""
    if m := _AT.match(metric):
        return "at", m["name"], int(m["step"])
    if m := _CALL.match(metric):
        return m["fn"], m["name"], None
    if "@" in metric or "(" in metric or ")" in metric:
        raise ValueError(
            f"cannot read {metric!r}: use NAME, NAME@STEP or one of {', '.join(f + '(NAME)' for f in FUNCTIONS)}"
        )
    return None


def required_steps(metric: str) -> int | None:
    """The step a claim about `metric` needs the runs to reach (NAME@STEP), else None."""
    p = parse(metric)
    return p[2] if p is not None and p[0] == "at" else None


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run; the run's summary is what counts as done
    return rows


def _series(rows: list[dict], name: str) -> list[tuple[int, float, float]]:
    """(step, epoch, value) for each row that logged `name` with a finite number, by step."""
    out = []
    for r in rows:
        v = r.get(name)
        if isinstance(v, int | float) and math.isfinite(v) and isinstance(r.get("step"), int):
            out.append((r["step"], float(r.get("epoch", math.nan)), float(v)))
    return sorted(out)


def value_at(evals: list[dict], name: str, step: int, steps_done: int | None) -> float:
    if steps_done is None or steps_done < step:
        return math.nan
    before = [v for s, _, v in _series(evals, name) if s <= step]
    return before[-1] if before else math.nan


def plateau_step(evals: list[dict], name: str, tolerance: float = PLATEAU_TOLERANCE) -> float:
    s = _series(evals, name)
    if not s:
        return math.nan
    final = s[-1][2]
    for step, _, v in s:
        if abs(v - final) <= tolerance * abs(final):
            return float(step)
    return float(s[-1][0])  # unreachable: the final row is within any tolerance of itself


def last_change(rows: list[dict], name: str, steps_per_epoch: int | None) -> tuple[float, float]:
    """(step, epoch) of the last change of `name`; epoch from the step and steps_per_epoch when
    known (the log's epoch column is the epoch counter, not a fraction)."""
    s = _series(rows, name)
    if not s:
        return math.nan, math.nan
    last = 0
    for (_, _, prev), (step, _, v) in itertools.pairwise(s):
        if v != prev:
            last = step
    epoch = last / steps_per_epoch if steps_per_epoch else math.nan
    return float(last), float(epoch)


def _summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def derive_one(run_dir: Path, metric: str) -> float:
    """One run's value of a derived metric (NaN when its logs lack what it needs)."""
    p = parse(metric)
    if p is None:
        raise ValueError(f"{metric!r} is not a derived metric")  # a caller's bug, not the user's
    kind, name, step = p
    summary = _summary(run_dir)
    evals = _rows(run_dir / "evals.jsonl")
    if kind == "at":
        assert step is not None
        return value_at(evals, name, step, summary.get("steps"))
    if kind == "plateau_step":
        return plateau_step(evals, name)
    steps = _rows(run_dir / "steps.jsonl")
    rows = steps if any(name in r for r in steps) else evals
    at_step, at_epoch = last_change(rows, name, summary.get("steps_per_epoch"))
    return at_step if kind == "last_change_step" else at_epoch


def derive(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """`runs` with a column for each derived metric in `metrics` (plain names are left alone)."""
    out = runs.copy()
    for m in dict.fromkeys(metrics):
        if parse(m) is None or m in out.columns:
            continue
        out[m] = [derive_one(Path(p), m) for p in out["path"]] if "path" in out else math.nan
    return out
