"""Run one reglab training run and SIGKILL the process at a chosen point (reliability tests).

    python tests/kill_points.py POINT N OUTPUT [key=value ...]

POINT is where the process kills itself, at the N-th time it gets there (1-based):
    step           the start of the training step with 0-based index N
    after_flush    just after the N-th block of per-step rows reached steps.jsonl
    in_checkpoint  halfway through writing the N-th resume checkpoint (a partial temporary file)
    in_analysis    inside the final analysis (the N-th call)
    before_done    after summary.json, before the DONE marker
The patches live here, never in reglab: the process is killed as `kill -9` would kill it.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from reglab import analysis, loop, store, train
from reglab.validation import load_config


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def at_step(n: int, nth: Callable[[], bool]) -> None:
    original = loop.OneModelStep.step

    def step(self, step, *args):
        if step == n:
            die()
        return original(self, step, *args)

    loop.OneModelStep.step = step  # type: ignore[method-assign]


def after_flush(n: int, nth: Callable[[], bool]) -> None:
    original = store.RunDir.append

    def append(self, path, rows):
        original(self, path, rows)
        if Path(path) == self.steps_path and nth():
            die()

    store.RunDir.append = append


def in_checkpoint(n: int, nth: Callable[[], bool]) -> None:
    original = store.atomic_torch_save

    def save(path, obj, sync=True):
        if Path(path).name == "last.pt" and nth():
            buf = io.BytesIO()
            torch.save(obj, buf)
            fd, _ = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
            os.write(fd, buf.getvalue()[: len(buf.getvalue()) // 2])
            os.fsync(fd)
            die()
        return original(path, obj, sync)

    store.atomic_torch_save = save


def in_analysis(n: int, nth: Callable[[], bool]) -> None:
    original = analysis.analyze_final

    def analyze(*args, **kwargs):
        if nth():
            die()
        return original(*args, **kwargs)

    analysis.analyze_final = analyze


def before_done(n: int, nth: Callable[[], bool]) -> None:
    def mark_done(self):
        if nth():
            die()

    store.RunDir.mark_done = mark_done


POINTS = {
    "step": at_step,
    "after_flush": after_flush,
    "in_checkpoint": in_checkpoint,
    "in_analysis": in_analysis,
    "before_done": before_done,
}


def install(point: str, n: int) -> None:
    count = [0]

    def nth() -> bool:
        count[0] += 1
        return count[0] == n

    POINTS[point](n, nth)


if __name__ == "__main__":
    point, n, output, *overrides = sys.argv[1:]
    install(point, int(n))
    train.run(load_config(None, [*overrides, f"output={output}", "train.progress=false"]))
    print("finished without being killed")
