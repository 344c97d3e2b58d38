"""The reliability contract: what a kill -9, a second process or a hostile file may do to a run.

Each scenario kills a training process at a chosen point (tests/kill_points.py patches the point
in a subprocess and SIGKILLs itself there), reruns the same config, and compares every file of
the run directory with an uninterrupted run's: the logs row for row (wall-clock fields aside), the
analysis, the summary and the set of files. Other scenario tests of the contract live beside the
code they exercise: sweeps killed mid-run and two sweeps on one root (test_sweep.py), interrupted
vectorized groups (test_vectorized.py), hostile pickles and corrupt files (test_data_readers.py,
test_store.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reglab import train as train_module
from reglab.config import load_config
from reglab.store import RunDir
from reglab.train import run

HERE = Path(__file__).parent
# digits, batch 16: 94 steps an epoch; 3 epochs = 282 steps; evaluations (and resume checkpoints)
# at steps 94 and 188; per-step rows reach the disk every 50 steps; spectra every evaluation.
CONFIG = [
    "data.dataset=digits",
    "model.widths=[64,24,10]",
    "train.batch_size=16",
    "train.epochs=3",
    "optim.lr=0.05",
    "analysis.spectra_every=1",
    "regularizers=[{name: path_energy, lam: 0.01}]",
]
TIME_FIELDS = {"time", "wall_time"}


def _strip_times(x):
    if isinstance(x, dict):
        return {k: _strip_times(v) for k, v in x.items() if k not in TIME_FIELDS}
    if isinstance(x, list):
        return [_strip_times(v) for v in x]
    return x


def snapshot(run_dir: Path) -> dict[str, object]:
    """Every file of a run directory, comparable across runs: JSON and JSONL parsed with their
    wall-clock fields dropped, npz arrays as lists, other files as bytes; checkpoints by name."""
    out: dict[str, object] = {}
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file() or p.name == ".lock":
            continue
        rel = str(p.relative_to(run_dir))
        if p.suffix == ".pt":
            out[rel] = "checkpoint"
        elif p.suffix == ".jsonl":
            out[rel] = [_strip_times(json.loads(line)) for line in p.read_text().splitlines()]
        elif p.suffix == ".json":
            out[rel] = _strip_times(json.loads(p.read_text()))
            if rel == "config.json":
                out[rel]["config"].pop("output")  # the results root: differs by construction
        elif p.suffix == ".npz":
            with np.load(p) as z:
                out[rel] = {k: z[k].tolist() for k in z.files}
        else:
            out[rel] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("uninterrupted")
    res = run(load_config(None, [*CONFIG, f"output={root}", "train.progress=false"]))
    assert res.status == "done" and res.summary["steps"] == 282
    return snapshot(res.path)


def kill_then_rerun(tmp_path: Path, point: str, n: int, monkeypatch) -> tuple[RunDir, int]:
    """Kill a run at (point, n) in a subprocess, then rerun it here; returns the run directory and
    the number of training steps the rerun took."""
    p = subprocess.run(
        [sys.executable, str(HERE / "kill_points.py"), point, str(n), str(tmp_path), *CONFIG],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == -9, f"not killed at {point} {n}: rc {p.returncode}\n{p.stdout}\n{p.stderr[-2000:]}"
    steps = [0]
    original = train_module.Trainer._train_step

    def counting(self, x, y):
        steps[0] += 1
        return original(self, x, y)

    monkeypatch.setattr(train_module.Trainer, "_train_step", counting)
    res = run(load_config(None, [*CONFIG, f"output={tmp_path}", "train.progress=false"]))
    assert res.status == "done"
    return RunDir(res.path), steps[0]


@pytest.mark.parametrize(
    ("point", "n", "replayed"),
    [
        ("step", 30, 282),  # before the first flush, before any checkpoint: starts over
        ("step", 120, 282 - 94),  # after the checkpoint at 94, before the next flush
        ("step", 160, 282 - 94),  # after the checkpoint at 94 and a flush of later steps (at 150)
        ("after_flush", 5, 282 - 188),  # rows up to step 237 on disk, checkpoint at 188
        ("in_checkpoint", 2, 282 - 94),  # the checkpoint at 188 half written: resumes from 94
        ("in_analysis", 1, 0),  # training finished: the rerun goes straight to the analysis
        ("before_done", 1, 0),  # everything written but DONE
    ],
    ids=["step30", "step120", "step160-after-flush", "after-flush5", "in-checkpoint2", "in-analysis", "before-done"],
)
def test_kill_then_rerun_gives_the_uninterrupted_files(tmp_path, monkeypatch, reference, point, n, replayed):
    rd, steps = kill_then_rerun(tmp_path, point, n, monkeypatch)
    got = snapshot(rd.path)
    assert sorted(got) == sorted(reference), "a file is missing or left over"
    for name in reference:
        assert got[name] == reference[name], f"{name} differs from the uninterrupted run's"
    assert steps == replayed, f"the rerun trained {steps} steps"
