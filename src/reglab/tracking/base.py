"""What the three trackers share: how a run is named, which values are logged under which
names, and the resume rule that keeps every step in a tracker exactly once.

Names. One tracker run per reglab run, tagged with the run's hash. Its *setting* is the hash of
the run's identity without its seed (the runs a results table pools), so a tracker can group the
seeds of a setting: group `<name>-<setting>`, run name `<name>-<setting>-seed<seed>`, where
`<name>` is the config's name (the sweep's name for runs of a sweep).

Values. Per-step rows are logged as `step/<key>`, evaluation rows as `eval/<key>` (every
number in the row but its step), the summary's final metrics as `final/<key>`, all against
the row's step: the same numbers as steps.jsonl and evals.jsonl, under the same keys.

Resume. A resumed run reports again every row from its checkpoint on, and the tracker may
already hold some of them (written before the kill), or lack some before the checkpoint (it
was switched on only now, or was off for a while). At each start a tracker says which rows it
holds (`Held`, the last step of each kind of row, after any rewind it can do); then the rows it
lacks before the checkpoint are logged from the run's own logs, and a reported row is logged
only if its step is past what the tracker held. A resumed run recomputes its rows exactly, so
a row kept from before the kill equals the one reported again (except the wall-clock `time`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, canonical_dict
from ..observers import RunInfo, RunObserver
from ..store import RunDir

STEP, EVAL = "step", "eval"
"""The two kinds of row, also the prefixes of their keys in a tracker."""

BACKLOG_BLOCK = 500
"""Step rows logged at a time when a tracker catches up from the run's logs."""


@dataclass(frozen=True)
class Labels:
    """How a reglab run is named in a tracker."""

    run_hash: str
    setting: str
    """Hash of the run's identity without its seed: the runs of one setting share it."""
    name: str
    seed: int

    @classmethod
    def of(cls, run: RunInfo) -> Labels:
        cfg = RunConfig.model_validate(run.config)
        identity = canonical_dict(cfg)
        identity.pop("seed", None)
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return cls(run.hash, hashlib.sha256(blob.encode()).hexdigest()[:12], run.name, cfg.seed)

    @property
    def group(self) -> str:
        return f"{self.name}-{self.setting}"

    @property
    def run_name(self) -> str:
        return f"{self.group}-seed{self.seed}"

    def tags(self) -> dict[str, str]:
        return {
            "reglab.run_hash": self.run_hash,
            "reglab.setting": self.setting,
            "reglab.name": self.name,
            "reglab.seed": str(self.seed),
        }


@dataclass(frozen=True)
class Held:
    """The last step of each kind of row a tracker holds (-1: none)."""

    steps: int = -1
    evals: int = -1

    def last(self, kind: str) -> int:
        return self.steps if kind == STEP else self.evals


def scalars(row: dict, prefix: str) -> dict[str, float]:
    """The numbers of a log row under `prefix/` (its step is the x axis, not a value)."""
    return {
        f"{prefix}/{k}": float(v)
        for k, v in row.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def final_scalars(summary: dict) -> dict[str, float]:
    """The summary's final metrics under `final/`."""
    return scalars(summary.get("final") or {}, "final")


def flat_config(config: dict) -> dict[str, Any]:
    """The config as dotted keys (regularizers.0.lam); lists of values stay one value."""
    out: dict[str, Any] = {}

    def visit(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                visit(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for i, item in enumerate(value):
                visit(item, f"{key}.{i}")
        else:
            out[key] = value

    visit(config, "")
    return out


def as_text(value: Any) -> str:
    """A config value as a tracker parameter: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def backlog(run_path: Path, held: Held, resumed_step: int) -> Iterator[tuple[str, list[dict]]]:
    """The rows a tracker lacks before `resumed_step`, from the run's own logs (which a resume
    has just truncated to it: step rows < resumed_step, evaluation rows <= resumed_step), in the
    order training wrote them: at one step, its evaluation before its step row."""
    if held.steps >= resumed_step - 1 and held.evals >= resumed_step:
        return
    rd = RunDir(run_path)
    steps = [r for r in rd.steps() if held.steps < r["step"] < resumed_step]
    evals = [r for r in rd.evals() if held.evals < r["step"] <= resumed_step]
    i = 0
    for ev in evals:
        j = i
        while j < len(steps) and steps[j]["step"] < ev["step"]:
            j += 1
        yield from _blocks(steps[i:j])
        yield EVAL, [ev]
        i = j
    yield from _blocks(steps[i:])


def _blocks(rows: list[dict]) -> Iterator[tuple[str, list[dict]]]:
    for k in range(0, len(rows), BACKLOG_BLOCK):
        yield STEP, rows[k : k + BACKLOG_BLOCK]


class TrackerObserver(RunObserver):
    """A run observer that mirrors a run into a tracker. Subclasses open and end the tracker
    run and write rows; this class decides which rows to write (see the module docstring)."""

    def __init__(self) -> None:
        self.labels: Labels | None = None
        self.held = Held()
        self.finished = False
        self.opened = False

    # -- what a tracker implements
    def open(self, run: RunInfo, resumed_step: int) -> Held:
        """Start (or continue) the tracker run; return what it holds from earlier starts (after
        any rewind it does), so that only later rows are logged."""
        raise NotImplementedError

    def write(self, kind: str, rows: list[dict]) -> None:
        """Log rows of one kind (STEP or EVAL) against their steps."""
        raise NotImplementedError

    def write_finish(self, summary: dict) -> None:
        """Log the final metrics and status."""
        raise NotImplementedError

    def end(self, finished: bool) -> None:
        """Close the tracker run (finished: the reglab run is done, not stopped or failed)."""
        raise NotImplementedError

    # -- the observer protocol
    def on_start(self, run: RunInfo, resumed_step: int) -> None:
        self.labels = Labels.of(run)
        self.finished = False
        self.held = self.open(run, resumed_step)
        self.opened = True
        for kind, rows in backlog(run.path, self.held, resumed_step):
            self.write(kind, rows)

    def on_steps(self, rows: list[dict]) -> None:
        fresh = [r for r in rows if r["step"] > self.held.steps]
        if fresh:
            self.write(STEP, fresh)

    def on_evaluation(self, row: dict) -> None:
        if row["step"] > self.held.evals:
            self.write(EVAL, [row])

    def on_finish(self, summary: dict) -> None:
        self.write_finish(summary)
        self.finished = True

    def close(self) -> None:
        if self.opened:
            self.opened = False
            self.end(self.finished)
