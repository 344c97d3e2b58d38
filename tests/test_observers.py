"""Observers (reglab.observers) see exactly the rows a run writes, in order, across a resume, and
can stop a run without marking it done."""

from __future__ import annotations

import json

from helpers import small_config
from reglab.observers import RunObserver, StopTraining
from reglab.store import RunDir
from reglab.train import run


class Recorder(RunObserver):
    def __init__(self, stop_after_evals: int | None = None):
        self.calls: list[str] = []
        self.starts: list[int] = []
        self.steps: list[dict] = []
        self.evals: list[dict] = []
        self.summary: dict | None = None
        self.stop_after_evals = stop_after_evals

    def on_start(self, run, resumed_step):
        self.calls.append("start")
        self.starts.append(resumed_step)
        self.info = run

    def on_steps(self, rows):
        self.calls.append("steps")
        self.steps.extend(rows)

    def on_evaluation(self, row):
        self.calls.append("eval")
        self.evals.append(row)
        if self.stop_after_evals is not None and len(self.evals) >= self.stop_after_evals:
            raise StopTraining("pruned")

    def on_finish(self, summary):
        self.calls.append("finish")
        self.summary = summary

    def close(self):
        self.calls.append("close")


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_observers_see_every_row_the_run_writes(tmp_path):
    cfg = small_config(tmp_path / "r", "train.log_every=1", "train.eval_at_start=true")
    rec = Recorder()
    res = run(cfg, observers=[rec])
    rd = RunDir(res.path)
    assert rec.calls[0] == "start" and rec.calls[-2:] == ["finish", "close"]
    assert rec.starts == [0]
    assert rec.info.hash == res.hash and rec.info.path == res.path
    assert rec.info.config["seed"] == cfg.seed
    assert rec.steps == _jsonl(rd.steps_path)
    assert [r["step"] for r in rec.evals] == [r["step"] for r in _jsonl(rd.evals_path)]
    assert rec.summary == json.loads(rd.summary_path.read_text())


def test_a_stopping_observer_leaves_the_run_resumable(tmp_path):
    cfg = small_config(
        tmp_path / "r", "train.epochs=4", "train.log_every=1", "train.eval_every=1", "train.checkpoint_every=1"
    )
    rec = Recorder(stop_after_evals=3)  # at start, epoch 1, epoch 2
    res = run(cfg, observers=[rec])
    assert res.status == "stopped" and rec.calls[-1] == "close" and "finish" not in rec.calls
    rd = RunDir(res.path)
    assert not rd.done and not (rd.path / "error.json").exists()
    # asked for again, it resumes from the last checkpoint and the observer is told where
    again = Recorder()
    res2 = run(cfg, observers=[again])
    assert res2.status == "done" and again.starts == [16]  # saved where it stopped, at epoch 2
    assert again.steps[0]["step"] == again.starts[0]
    uninterrupted = run(cfg.model_copy(update={"output": str(tmp_path / "u")}))
    assert _jsonl(RunDir(uninterrupted.path).steps_path) == _jsonl(rd.steps_path)
