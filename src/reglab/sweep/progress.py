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
    def __init__(self, name: str, total: int, already_done: int, live: bool = True):
        self.name = name
        self.total = total
        self.done = already_done
        self.failed = 0
        self.diverged = 0
        self.running = 0
        self.walls: list[float] = []
        self.t0 = time.perf_counter()
        self.live_enabled = live and sys.stderr.isatty()
        self._live: Live | None = None

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed

    def eta(self) -> float | None:
        from .runner import eta_seconds

        return eta_seconds(self.walls, self.remaining, max(1, self.running))

    def line(self) -> str:
        return (
            f"sweep {self.name}: {self.done} done, {self.failed} failed, {self.running} running, "
            f"{self.remaining} remaining (of {self.total}), {self.diverged} diverged, ETA {eta_text(self.eta())}"
        )

    def start(self, running: int, remaining: int) -> None:
        self.running = running
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
            print(self.line(), flush=True)

    def refresh(self, running: int) -> None:
        self.running = running
        if self._live is not None:
            self._live.update(self.line())

    def stop(self) -> None:
        self.running = 0
        if self._live is not None:
            self._live.update(self.line())
            self._live.stop()
        else:
            print(self.line() + f" [{time.perf_counter() - self.t0:.1f} s]", flush=True)
