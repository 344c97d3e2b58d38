"""Weights & Biases: one W&B run per reglab run, its id the run's hash; offline by default.

Files. W&B's `dir` (default: the run directory) gets `wandb/<offline-run|run>-<time>-<hash>/`,
one folder per start of the run; `wandb sync <run>/wandb` uploads an offline run, every start
in order into one W&B run.

Axes. Each row is one W&B history row carrying the run's step as `reglab/step`, the x axis of
`step/*` and `eval/*` (define_metric). W&B's own `_step` only counts rows: it goes on across
starts, from the largest one in the run's files (or the server's, online).

Resume. Every start calls wandb.init with id = hash and resume="allow". Online, W&B continues
the same run. Offline, W&B ignores resume: each start is a new file with the same id (and
group and name), which `wandb sync` appends in start order. In both modes what W&B already
holds is read back from the run's W&B files (W&B writes every record there before anything
else), and a row is logged only past the last step of its kind held; rows missing before the
checkpoint are taken from the run's logs (reglab.tracking.base). So every step is logged once,
and a row logged before a kill keeps its values (a resumed run recomputes the same ones).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from ..observers import RunInfo
from .base import EVAL, STEP, Held, TrackerObserver, final_scalars, scalars

X_AXIS = "reglab/step"


class WandbObserver(TrackerObserver):
    def __init__(
        self,
        project: str = "reglab",
        entity: str | None = None,
        mode: Literal["offline", "online"] = "offline",
        dir: Path | None = None,
    ):
        """`dir`: where W&B keeps its files (None: the run directory)."""
        super().__init__()
        self.project, self.entity, self.mode, self.dir = project, entity, mode, dir
        self.run: Any = None
        self.next_step = 0
        """W&B's `_step` of the next row."""

    def open(self, run: RunInfo, resumed_step: int) -> Held:
        import wandb

        from .wandb_files import segments

        assert self.labels is not None
        root = self.dir or run.path
        root.mkdir(parents=True, exist_ok=True)
        held, last_step = _held(segments(root, run.hash))
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            dir=str(root),
            id=run.hash,
            name=self.labels.run_name,
            group=self.labels.group,
            tags=[run.hash],
            config={**run.config, "reglab": {k.removeprefix("reglab."): v for k, v in self.labels.tags().items()}},
            resume="allow",
            mode=self.mode,
            reinit="create_new",  # runs of a vectorized group are open at once
            settings=wandb.Settings(
                console="off", save_code=False, disable_git=True, x_save_requirements=False, quiet=True
            ),
        )
        self.run.define_metric(X_AXIS)
        for kind in (STEP, EVAL):
            self.run.define_metric(f"{kind}/*", step_metric=X_AXIS)
        self.next_step = max(last_step + 1, self.run.starting_step)
        return held

    def write(self, kind: str, rows: list[dict]) -> None:
        for row in rows:
            self.run.log({**scalars(row, kind), X_AXIS: row["step"]}, step=self.next_step)
            self.next_step += 1

    def write_finish(self, summary: dict) -> None:
        self.run.summary.update({**final_scalars(summary), "status": summary.get("status")})

    def end(self, finished: bool) -> None:
        if self.run is not None:
            file = Path(self.run.dir).parent / f"run-{self.run.id}.wandb"
            self.run.finish(exit_code=0 if finished else 1)
            self.run = None
            wait_until_written(file)


def wait_until_written(file: Path, timeout: float = 30.0) -> None:
    """Wait until W&B's file holds the segment's exit record: `finish` returns while W&B's
    core may still be writing it, and the next start of the run (in this process: a retried
    trial, the next test) reads that file to know what W&B holds."""
    from .wandb_files import read_segment

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if file.exists() and read_segment(file).exit_code is not None:
            return
        time.sleep(0.02)


def _held(segments: list) -> tuple[Held, int]:
    """The last reglab step of each kind of row in these segments, and the last W&B `_step`."""
    steps = evals = last = -1
    for seg in segments:
        for row in seg.history:
            x = row.get(X_AXIS)
            last = max(last, int(row.get("_step", -1)))
            if x is None:
                continue
            if any(k.startswith(STEP + "/") for k in row):
                steps = max(steps, int(x))
            if any(k.startswith(EVAL + "/") for k in row):
                evals = max(evals, int(x))
    return Held(steps, evals), last
