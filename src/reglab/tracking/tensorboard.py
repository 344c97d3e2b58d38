"""TensorBoard: event files in `<run>/tensorboard/`, so `tensorboard --logdir <results root>`
shows every run, its scalars, and its config in the HParams tab.

Resume uses TensorBoard's own convention: a writer opened with `purge_step=P` first writes a
SessionLog.START at step P, and readers (TensorBoard, its EventAccumulator) then drop every
event at a step >= P that earlier files hold. This segment rewrites what it purged from the
run's logs and goes on from there, so each step is shown once, with this segment's numbers.
P is the checkpoint's step, or earlier when the event files are not known to be complete up
to it (the tracker was off for a while): `reglab.json` beside them records, after each flush,
the first step from which they may lack rows. The writer flushes at every evaluation, hence
before every checkpoint, so rows before a checkpoint never wait in its queue when a run is
killed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..observers import RunInfo
from ..store import atomic_write_json
from .base import EVAL, STEP, Held, TrackerObserver, as_text, final_scalars, flat_config, scalars

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

STATE = "reglab.json"
EVENTS = "events.out.tfevents.*"


class TensorBoardObserver(TrackerObserver):
    def __init__(self, log_dir: Path | None = None):
        """`log_dir`: where the event files go (None: `<run>/tensorboard`)."""
        super().__init__()
        self.log_dir = log_dir
        self.writer: SummaryWriter | None = None
        self.dir = Path()
        self.last = Held()
        """The last step of each kind of row written (flushed or not)."""

    def open(self, run: RunInfo, resumed_step: int) -> Held:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        assert self.labels is not None
        self.dir = self.log_dir or run.path / "tensorboard"
        earlier = sorted(self.dir.glob(EVENTS))
        purge = min(resumed_step, self._complete_before()) if earlier else 0
        if earlier:
            _after_second_of(earlier[-1])
        self.writer = SummaryWriter(str(self.dir), purge_step=purge if earlier else None, max_queue=1000)
        if purge == 0:
            config = {k: as_text(v) if isinstance(v, list) else v for k, v in flat_config(run.config).items()}
            _, start, _ = hparams({**config, **self.labels.tags()}, {})
            self._file_writer().add_summary(start)
            self.writer.add_text("config", "```\n" + json.dumps(run.config, indent=2) + "\n```", 0)
        self.last = Held(purge - 1, purge - 1)
        self._flush()
        return self.last

    def write(self, kind: str, rows: list[dict]) -> None:
        assert self.writer is not None
        for row in rows:
            for key, value in scalars(row, kind).items():
                self.writer.add_scalar(key, value, row["step"])
        last = rows[-1]["step"]
        self.last = Held(last, self.last.evals) if kind == STEP else Held(self.last.steps, last)
        if kind == EVAL:
            self._flush()

    def write_finish(self, summary: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        assert self.writer is not None
        step = summary.get("steps", 0)
        for key, value in final_scalars(summary).items():
            self.writer.add_scalar(key, value, step)
        self.writer.add_text("status", str(summary.get("status")), step)
        _, _, end = hparams({}, {})
        self._file_writer().add_summary(end)

    def end(self, finished: bool) -> None:
        if self.writer is not None:
            self._flush()
            self.writer.close()
            self.writer = None

    def _file_writer(self):
        assert self.writer is not None and self.writer.file_writer is not None
        return self.writer.file_writer

    def _flush(self) -> None:
        """Flush the writer, then record how far the event files are complete (never further
        than they are: a kill between the two leaves the older, smaller record)."""
        assert self.writer is not None
        self.writer.flush()
        atomic_write_json(self.dir / STATE, {"complete_before": min(self.last.steps, self.last.evals) + 1})

    def _complete_before(self) -> int:
        try:
            return int(json.loads((self.dir / STATE).read_text())["complete_before"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0  # unknown: rewrite everything


def _after_second_of(newest: Path) -> None:
    """Wait until the clock is past the second in the newest event file's name: readers take
    the files in name order, which starts with that second, so a new file must sort after it."""
    try:
        stamp = int(newest.name.split(".")[3])
    except (IndexError, ValueError):
        return
    while time.time() < stamp + 1:
        time.sleep(stamp + 1 - time.time())
