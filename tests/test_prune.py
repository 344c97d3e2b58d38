"""`reglab prune` and train.keep_checkpoints: what a finished run no longer reads goes, what a
resume, a landscape or a report reads stays; unfinished and busy runs are untouched."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from helpers import _Fault, small_config
from reglab.cli import cli
from reglab.config import config_hash
from reglab.landscape.run_landscape import landscape_for_run, parse_landscape_overrides
from reglab.report import build_report
from reglab.store import RunDir, RunLock
from reglab.train import run


def _ckpts(path) -> set[str]:
    return {p.name for p in (path / "checkpoints").iterdir()}


def test_prune_removes_what_finished_runs_no_longer_read(tmp_path):
    root = tmp_path / "runs"
    done = run(small_config(root, "train.snapshot_every=1", "data.val_size=64"))
    assert _ckpts(done.path) >= {"last.pt", "best.pt", "final.pt", "snap_00000000.pt"}
    _Fault.raise_at = 12  # after the epoch-1 checkpoint: an unfinished run with a resume point
    unfinished = small_config(root, "seed=1", "regularizers=[{name: _test_fault, lam: 1.0}]")
    try:
        with pytest.raises(RuntimeError, match="injected crash"):
            run(unfinished)
    finally:
        _Fault.raise_at = None
    rd_unfinished = RunDir(root / config_hash(unfinished))
    before = _ckpts(rd_unfinished.path)
    assert "last.pt" in before

    sizes = sum((done.path / "checkpoints" / n).stat().st_size for n in ("last.pt", "best.pt"))
    r = CliRunner().invoke(cli, ["prune", "--root", str(root), "--dry-run"])
    assert r.exit_code == 0 and f"would free {sizes / 2**20:.1f} MiB: 2 files of 1 finished runs" in r.output
    assert "last.pt" in _ckpts(done.path)  # a dry run removes nothing
    r = CliRunner().invoke(cli, ["prune", "--root", str(root)])
    assert r.exit_code == 0, r.output
    left = _ckpts(done.path)
    assert "last.pt" not in left and "best.pt" not in left and "final.pt" in left and "snap_00000000.pt" in left
    assert _ckpts(rd_unfinished.path) == before  # its resume point stays
    # what is read later still works: a PCA landscape (final + snapshots), a report, the resume
    landscape_for_run(done.path, parse_landscape_overrides(["directions=pca", "resolution=3", "examples=32"]))
    build_report(root, tmp_path / "report")
    assert run(unfinished).status == "done"
    # snapshots only when asked
    r = CliRunner().invoke(cli, ["prune", "--root", str(root), "--snapshots"])
    assert r.exit_code == 0 and not any(n.startswith("snap_") for n in _ckpts(done.path))


def test_prune_leaves_a_run_another_process_holds(tmp_path):
    res = run(small_config(tmp_path))
    with RunLock(res.path) as lock:
        assert lock.acquire(blocking=False)
        r = CliRunner().invoke(cli, ["prune", "--root", str(tmp_path)])
    assert r.exit_code == 0 and "another process holds it" in r.output
    assert "last.pt" in _ckpts(res.path)


def test_keep_checkpoints_final_prunes_at_the_end_and_keeps_the_hash(tmp_path):
    cfg = small_config(tmp_path, "train.keep_checkpoints=final")
    assert config_hash(cfg) == config_hash(small_config(tmp_path))  # what is kept is not what is computed
    res = run(cfg)
    assert _ckpts(res.path) == {"final.pt"}
