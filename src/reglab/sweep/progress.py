"""The live view of a sweep: runs done, failed, running and remaining, and an ETA.

On a terminal it is a rich live panel; elsewhere (CI, logs, pipes) one line per finished run.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from .executors import Outcome

if TYPE_CHECKING:
    from rich.live import Live


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class SweepDisplay:
    """Counts that add up: done + failed + running + waiting = total (diverged runs are among
    the done); the ETA shares the waiting and running runs among `workers`."""

    def __init__(self, name: str, total: int, already_done: int, live: bool = True, workers: int = 1):
        self.name = name
        self.total = total
        self.workers = max(1, workers)
        self.done = already_done
        self.failed = 0
        self.diverged = 0
        self.running = 0
        self.walls: list[float] = []
        self.t0 = time.perf_counter()
        self.live_enabled = live and sys.stderr.isatty()
        self._live: Live | None = None
        self._line_due = False

    @property
    def remaining(self) -> int:
        """Runs not finished yet, the running ones included."""
        return self.total - self.done - self.failed

    @property
    def waiting(self) -> int:
        return max(0, self.remaining - self.running)

    def eta(self) -> float | None:
        return eta_seconds(self.walls, self.remaining, max(self.workers, self.running))

    def line(self) -> str:
        return (
            f"sweep {self.name}: {self.done} done ({self.diverged} diverged), {self.failed} failed, "
            f"{self.running} running, {self.waiting} waiting (of {self.total}), ETA {eta_text(self.eta())}"
        )

    def start(self, running: int, remaining: int) -> None:
        self.running = min(running, self.remaining)
        if self.live_enabled:
            from rich.live import Live

            self._live = Live(self.line(), refresh_per_second=4, transient=False)
            self._live.start()
        else:
            print(self.line(), flush=True)

    def finished(self, out: Outcome) -> None:
        self.running = max(0, self.running - 1)
        if out.status == "failed":
            self.failed += 1
        else:
            self.done += 1
            if out.status == "diverged":
                self.diverged += 1
        if out.status not in ("skipped",) and out.wall:
            self.walls.append(out.wall)
        if not self.live_enabled:
            extra = f": {out.error}" if out.error else ""
            print(f"  run {out.hash} {out.status} ({out.wall:.1f} s){extra}", flush=True)
            self._line_due = True  # printed by the next refresh, once the next run has started

    def refresh(self, running: int) -> None:
        self.running = min(running, self.remaining)  # counts add up even when an executor lags
        if self._live is not None:
            self._live.update(self.line())
        elif self._line_due:
            print(self.line(), flush=True)
            self._line_due = False

    def stop(self) -> None:
        """The final line, with the sweep's wall time since the display was made."""
        self.running = 0
        self._line_due = False
        if self._live is not None:
            self._live.update(self.line() + f" [{eta_text(time.perf_counter() - self.t0)}]")
            self._live.stop()
        else:
            print(self.line() + f" [{eta_text(time.perf_counter() - self.t0)}]", flush=True)


def eta_seconds(walls: list[float], remaining: int, workers: int) -> float | None:
    """Remaining runs times the mean duration of finished runs, shared among the workers."""
    if not walls or remaining <= 0:
        return None if remaining > 0 else 0.0
    return sum(walls) / len(walls) * remaining / max(1, workers)
