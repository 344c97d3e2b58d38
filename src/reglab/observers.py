"""Observers see what a run writes, at the moment it writes it: the one place trackers
(TensorBoard, W&B, MLflow) and searches (an Optuna pruner) plug into training.

A run's trainer calls, in this order:

- `on_start(run, resumed_step)` once per start of training (again after each resume), with
  the step training continues from (0 for a fresh run). Rows of steps at or after
  `resumed_step` that an earlier, killed start already reported are reported again: an
  observer that keeps history must drop what it holds from that step on (the run's own logs
  are truncated to the same step);
- `on_steps(rows)` with each block of per-step rows as it is appended to `steps.jsonl`
  (a diverged run's last block ends at its first non-finite row);
- `on_evaluation(row)` with each row appended to `evals.jsonl`;
- `on_finish(summary)` once, with the run's summary (status, final metrics, analysis) just
  before its DONE marker;
- `close()` always, also when training failed or was interrupted.

An observer may raise `StopTraining` from `on_evaluation` (observers are told last, when the
trainer's own books on that evaluation are complete) to end the run there, a pruned trial say:
the run saves a resume point at that step and is not marked done, so the same config asked for
again later resumes it where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunInfo:
    """What an observer needs to name and file a run."""

    hash: str
    path: Path
    name: str
    """The config's `name` (the sweep's name for runs of a sweep)."""
    config: dict
    """The full config, as plain data."""


class RunObserver:
    """Base class: every hook is a no-op; override the ones you need."""

    def on_start(self, run: RunInfo, resumed_step: int) -> None:
        pass

    def on_steps(self, rows: list[dict]) -> None:
        pass

    def on_evaluation(self, row: dict) -> None:
        pass

    def on_finish(self, summary: dict) -> None:
        pass

    def close(self) -> None:
        pass


class StopTraining(Exception):
    """Raised by an observer to end a run early without marking it done (e.g. a pruned trial)."""
