"""Run-directory durability modes: fsync per write, or deferred to one sync by the owner."""

from __future__ import annotations

import os

import pytest
import torch

from helpers import small_config
from reglab.store import RunDir
from reglab.train import run


def _count_fsyncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def _write_everything(rd: RunDir) -> None:
    rd.create({"hash": "x"})
    rd.append(rd.steps_path, [{"step": 0, "loss": 1.0}])
    rd.save_checkpoint("last", {"step": 0})
    rd.write_summary({"status": "done"})
    rd.mark_done()


def test_sync_false_writes_the_same_files_without_fsync(tmp_path, monkeypatch):
    calls = _count_fsyncs(monkeypatch)
    _write_everything(RunDir(tmp_path / "a"))
    assert len(calls) == 5  # one per write by default
    calls.clear()
    _write_everything(RunDir(tmp_path / "b", sync=False))
    assert calls == []
    for name in ("config.json", "steps.jsonl", "summary.json", "DONE"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (
        RunDir(tmp_path / "b").load_checkpoint("last") == RunDir(tmp_path / "a").load_checkpoint("last") == {"step": 0}
    )


def test_a_checkpoint_cut_short_by_a_crash_counts_as_none_and_the_run_starts_over(tmp_path):
    cfg = small_config(tmp_path, "train.epochs=2", "train.checkpoint_every=1")
    res = run(cfg, root=tmp_path / "ref")
    ref = RunDir(res.path)
    # A crashed copy: the run's logs and a zero-length resume checkpoint, no DONE.
    rd = RunDir(tmp_path / "crashed" / res.path.name)
    rd.create(ref.read_config())
    rd.append(rd.steps_path, ref.steps()[:3])
    rd.ckpt("last").parent.mkdir(parents=True, exist_ok=True)
    rd.ckpt("last").write_bytes(b"")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        assert rd.load_checkpoint("last") is None
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        again = run(cfg, root=tmp_path / "crashed")
    assert again.status == "done"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(RunDir(again.path).evals()) == strip(ref.evals())
    assert [r["step"] for r in RunDir(again.path).steps()] == [r["step"] for r in ref.steps()]
    torch.testing.assert_close(
        RunDir(again.path).load_checkpoint("final")["model"], ref.load_checkpoint("final")["model"]
    )
