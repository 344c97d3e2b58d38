"""Sweeps: grid expansion, execution, resumption after SIGKILL, concurrent sweeps, bad axes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import SMALL, _Fault
from reglab.cli import cli
from reglab.errors import ConfigError
from reglab.results import load_evals, load_runs
from reglab.store import RunDir
from reglab.sweep import build_spec, expand, run_sweep
from reglab.sweep.grid import split_top_level


def axes_of(runs):
    return sorted(tuple(sorted(r.axes.items())) for r in runs)


# ----------------------------------------------------------------------------- grid


def test_yaml_lists_are_axes_but_list_fields_need_lists_of_lists(tmp_path):
    spec = build_spec(None, [*SMALL, "optim.lr=0.1,0.01", "seed=0,1,2"])
    spec["model"]["widths"] = [[20, 8, 4], [20, 16, 4]]
    runs = expand(spec)
    assert len(runs) == 2 * 3 * 2
    assert {tuple(r.config.model.widths) for r in runs} == {(20, 8, 4), (20, 16, 4)}
    # A plain list for a list-valued field is one value, not an axis.
    spec["model"]["widths"] = [20, 8, 4]
    assert len(expand(spec)) == 6


def test_axes_inside_regularizers_and_over_regularizer_sets():
    spec = build_spec(
        None, [*SMALL, "regularizers=[{name: l2_mul, lam: [0.1, 0.01], depth_normalization: [none, geometric]}]"]
    )
    runs = expand(spec)
    assert len(runs) == 4
    assert {
        (r.config.regularizers[0].lam, r.config.regularizers[0].model_extra["depth_normalization"]) for r in runs
    } == {(0.1, "none"), (0.1, "geometric"), (0.01, "none"), (0.01, "geometric")}
    spec = build_spec(None, [*SMALL, "regularizers=[],[{name: l2, lam: 0.1}]"])
    runs = expand(spec)
    assert sorted(len(r.config.regularizers) for r in runs) == [0, 1]


def test_variants_write_study1_structure_without_listing_runs():
    spec = build_spec(None, [*SMALL, "seed=0,1"])
    spec["variants"] = [
        {"regularizers": [{"name": "l2_sum", "lam": [0.1, 0.01], "depth_normalization": ["none", "mean"]}]},
        {"regularizers": [{"name": "l2_mul", "lam": [0.1, 0.01], "depth_normalization": ["none", "geometric"]}]},
        {"regularizers": []},
    ]
    runs = expand(spec)
    # (2 lam x 2 depth) for each penalty, plus the baseline, each with 2 seeds.
    assert len(runs) == (4 + 4 + 1) * 2
    names = [r.config.regularizers[0].name if r.config.regularizers else "none" for r in runs]
    assert names.count("l2_sum") == 8 and names.count("l2_mul") == 8 and names.count("none") == 2


def test_duplicate_runs_are_run_once():
    spec = build_spec(None, [*SMALL, "optim.lr=0.1,0.1"])
    assert len(expand(spec)) == 1


def test_split_top_level_respects_brackets():
    assert split_top_level("[1,2],[3,4]") == ["[1,2]", "[3,4]"]
    assert split_top_level("{name: l2, lam: 1},{name: l2_mul}") == ["{name: l2, lam: 1}", "{name: l2_mul}"]
    assert split_top_level("0.1") == ["0.1"]


def test_invalid_axis_value_fails_before_any_run_naming_the_value(tmp_path):
    out = tmp_path / "runs"
    r = CliRunner().invoke(cli, ["sweep", *SMALL, "optim.lr=0.1,-1", "--output", str(out), "-j", "1"])
    assert r.exit_code == 2, r.output
    assert "optim.lr" in r.output and "-1" in r.output
    assert not out.exists() or not any(p for p in out.rglob("*") if p.is_file())
    with pytest.raises(ConfigError, match=r"regularizers\.0\.name"):
        expand(build_spec(None, [*SMALL, "regularizers=[{name: l2, lam: 0.1}],[{name: nope, lam: 0.1}]"]))


# ----------------------------------------------------------------------------- execution


def test_sweep_runs_skips_done_and_records_failures(tmp_path):
    spec = build_spec(
        None, [*SMALL, "seed=0,1", "regularizers=[],[{name: _test_fault, lam: 1.0}]", f"output={tmp_path}"]
    )
    runs = expand(spec)
    _Fault.raise_at = 3
    try:
        res = run_sweep("s", tmp_path, spec, runs, live=False)
    finally:
        _Fault.raise_at = None
    assert res.count("done") == 2 and len(res.failed) == 2
    assert all("injected crash" in o.error for o in res.failed)
    df = load_runs(tmp_path, sweep="s")
    assert sorted(df["status"]) == ["done", "done", "failed", "failed"]
    # Again: finished runs are skipped, the failed ones are retried (and now succeed).
    res = run_sweep("s", tmp_path, spec, runs, live=False)
    assert res.count("skipped") == 2 and res.count("done") == 2 and not res.failed


def test_process_pool_and_submitit_local_give_the_same_results(tmp_path):
    spec = build_spec(None, [*SMALL, "seed=0,1", "optim.lr=0.1,0.05"])
    runs = expand(spec)
    run_sweep("ref", tmp_path / "inline", spec, runs, live=False)
    res = run_sweep("p", tmp_path / "pool", spec, runs, executor="process", jobs=2, live=False)
    assert res.count("done") == 4
    ref = load_evals(tmp_path / "inline").drop(columns=["time"]).sort_values(["run", "step"]).reset_index(drop=True)
    got = load_evals(tmp_path / "pool").drop(columns=["time"]).sort_values(["run", "step"]).reset_index(drop=True)
    assert ref.equals(got)
    pytest.importorskip("submitit")
    res = run_sweep("s", tmp_path / "sub", spec, runs[:1], executor="submitit_local", jobs=1, live=False)
    assert res.count("done") == 1, res.outcomes
    got = load_evals(tmp_path / "sub").drop(columns=["time"]).sort_values(["run", "step"]).reset_index(drop=True)
    assert ref[ref["run"].isin(got["run"].unique())].reset_index(drop=True).equals(got)


# ----------------------------------------------------------------------------- reliability

# Runs long enough (~1-3 s each) to be killed in the middle, with a checkpoint every epoch.
SLOW = [
    "data.dataset=synthetic",
    "data.synthetic.n_train=8192",
    "data.synthetic.n_test=256",
    "data.synthetic.dim=20",
    "model.widths=[20,256,4]",
    "train.batch_size=32",
    "train.epochs=4",
    "train.progress=false",
]


def _sweep_cmd(root: Path, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "reglab.cli",
        "sweep",
        *SLOW,
        "seed=0,1,2",
        "--output",
        str(root),
        "--name",
        name,
        "-j",
        "1",
        "--vectorize",
        "off",
    ]


def _env():
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _evals(root: Path):
    return load_evals(root).drop(columns=["time"]).sort_values(["run", "step"]).reset_index(drop=True)


def _hashes(root: Path) -> list[str]:
    return [r.hash for r in expand(build_spec(None, [*SLOW, "seed=0,1,2", f"output={root}"]))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted sweep, trained once in this process for both reliability tests."""
    root = tmp_path_factory.mktemp("ref")
    spec = build_spec(None, [*SLOW, "seed=0,1,2", f"output={root}"])
    run_sweep("ref", root, spec, expand(spec), live=False)
    return _evals(root)


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_loses_and_redoes_nothing(tmp_path, reference):
    root = tmp_path / "killed"
    first, second, _ = _hashes(root)
    proc = subprocess.Popen(_sweep_cmd(root, "k"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Kill once the first run is finished and the second has a checkpoint but is not done.
    while time.time() < deadline:
        if RunDir(root / first).done and (root / second / "checkpoints" / "last.pt").exists():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert RunDir(root / first).done and not RunDir(root / second).done, "the kill came too late to test a resume"
    before = {p.name: p.stat().st_mtime_ns for p in (root / first).iterdir() if p.is_file()}
    second_steps_before = RunDir(root / second).steps()
    r = subprocess.run(_sweep_cmd(root, "k"), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (root / first).iterdir() if p.is_file()}
    assert before == after  # the finished run was not touched
    steps = [s["step"] for s in RunDir(root / second).steps()]
    assert steps == sorted(set(steps)) == list(range(len(steps)))  # no step lost or logged twice
    assert len(second_steps_before) > 0
    assert all(RunDir(root / h).done for h in _hashes(root))
    assert reference.equals(_evals(root))


@pytest.mark.slow
def test_two_sweeps_on_one_root_at_once_corrupt_nothing(tmp_path, reference):
    root = tmp_path / "shared"
    a = subprocess.Popen(_sweep_cmd(root, "a"), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    b = subprocess.Popen(_sweep_cmd(root, "b"), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0
    for h in _hashes(root):
        rd = RunDir(root / h)
        assert rd.done
        steps = [s["step"] for s in rd.steps()]
        assert steps == list(range(len(steps)))
    assert reference.equals(_evals(root))
    manifests = sorted(p.name for p in (root / "sweeps").iterdir())
    assert manifests == ["a.json", "b.json"]
    assert json.loads((root / "sweeps" / "a.json").read_text())["runs"][0]["hash"] in _hashes(root)


def test_vectorized_sweep_matches_one_by_one_and_reports_its_plan(tmp_path, capsys):
    spec = build_spec(None, [*SMALL, "seed=0,1,2", "regularizers=[{name: l2, lam: [0.01, 0.001]}]"])
    runs = expand(spec)
    run_sweep("one", tmp_path / "one", spec, runs, live=False, vectorize="off")
    res = run_sweep("vec", tmp_path / "vec", spec, runs, live=False, vectorize="auto")
    assert res.count("done") == 6
    assert "vectorized group of 6 runs" in capsys.readouterr().out
    a = load_evals(tmp_path / "one").drop(columns=["time"]).sort_values(["run", "step"]).reset_index(drop=True)
    b = load_evals(tmp_path / "vec").drop(columns=["time"]).sort_values(["run", "step"]).reset_index(drop=True)
    import pandas as pd

    pd.testing.assert_frame_equal(a, b, rtol=1e-5, atol=1e-6)
    # batch norm cannot be grouped: the plan says so and the runs train one by one
    spec = build_spec(None, [*SMALL, "seed=0,1", "model.batch_norm=true"])
    res = run_sweep("bn", tmp_path / "bn", spec, expand(spec), live=False, vectorize="auto")
    assert res.count("done") == 2
    assert "batch norm" in capsys.readouterr().out


def test_groups_of_a_parallel_sweep_train_on_all_threads_before_any_worker_starts(tmp_path, monkeypatch):
    """A `-j 2` sweep gives each pool worker cores / 2 threads; its vectorized groups train in the
    sweep's own process first, with every thread (a group of 16 MNIST MLPs is 0.29x per model at
    two threads against 0.47x at one), and the pool starts after them."""
    import torch

    import reglab.vectorized as group_trainer
    from reglab.sweep import runner

    events: list[tuple[str, int]] = []
    real_group, real_executor = group_trainer.train_group, runner.make_executor

    def group(*args, **kwargs):
        events.append(("group", torch.get_num_threads()))
        return real_group(*args, **kwargs)

    def executor(*args, **kwargs):
        events.append(("pool", 0))
        return real_executor(*args, **kwargs)

    monkeypatch.setattr(group_trainer, "train_group", group)
    monkeypatch.setattr(runner, "make_executor", executor)
    threads = torch.get_num_threads()
    spec = build_spec(
        None, [*SMALL, "seed=0,1", "regularizers=[{name: l2, lam: 0.01}, {name: gradient_norm, lam: 0.0}]"]
    )
    spec2 = build_spec(None, [*SMALL, "seed=0,1,2"])
    runs = expand(spec) + expand(spec2)  # gradient_norm does not vectorize: two runs go to the pool
    res = run_sweep("mixed", tmp_path, spec, runs, executor="process", jobs=2, live=False, vectorize="auto")
    assert res.count("done") == 5
    assert events == [("group", threads), ("pool", 0)]


def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker pids from Linux /proc")
def test_pool_workers_exit_when_the_sweep_is_killed(tmp_path):
    """A SIGKILLed sweep leaves no worker training on (it would hold its run's lock)."""
    root = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "reglab.cli",
        "sweep",
        *SLOW,
        "train.epochs=2",
        "seed=0,1",
        "--output",
        str(root),
        "--name",
        "k",
        "-j",
        "2",
        "--executor",
        "process",
        "--vectorize",
        "off",
    ]
    hashes = [r.hash for r in expand(build_spec(None, [*SLOW, "train.epochs=2", "seed=0,1", f"output={root}"]))]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers: set[int] = set()
    while time.time() < deadline and not any((root / h / "steps.jsonl").exists() for h in hashes):
        time.sleep(0.05)
    workers = {
        c for c in _children(proc.pid) if "multiprocessing" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")
    }
    assert workers, "no pool worker found"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "pool workers outlived the killed sweep"
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert all(RunDir(root / h).done for h in hashes)


def test_the_sweep_display_counts_add_up_and_share_the_eta_among_workers(capsys):
    from reglab.sweep.executors import Outcome
    from reglab.sweep.progress import SweepDisplay

    d = SweepDisplay("s", total=6, already_done=1, live=False, workers=2)
    d.start(running=2, remaining=5)
    assert "1 done (0 diverged), 0 failed, 2 running, 3 waiting (of 6), ETA ?" in capsys.readouterr().out
    d.finished(Outcome(hash="a", status="done", wall=60.0))
    assert "waiting" not in capsys.readouterr().out  # the line waits until the next run started
    d.refresh(running=2)
    line = capsys.readouterr().out.strip()
    # 4 runs not finished, 60 s each, 2 at a time: 2 minutes
    assert line.endswith("2 done (0 diverged), 0 failed, 2 running, 2 waiting (of 6), ETA 2m00s"), line
    d.finished(Outcome(hash="b", status="diverged", wall=60.0))
    d.refresh(running=1)
    assert "3 done (1 diverged), 0 failed, 1 running, 2 waiting" in capsys.readouterr().out
    d.stop()
    assert capsys.readouterr().out.rstrip().endswith("s]")


def test_a_tune_file_given_to_sweep_is_one_line_naming_the_command(tmp_path):
    """A config with a tune: block run as a sweep: its search space must not read as axes."""
    from click.testing import CliRunner

    from reglab.cli import cli

    y = tmp_path / "t.yaml"
    y.write_text(
        "data: {dataset: digits, val_fraction: 0.2}\n"
        "tune: {space: {regularizers.0.lam: {log_uniform: [1.0e-6, 1.0e-2]}}, metric: val_acc}\n"
    )
    r = CliRunner().invoke(cli, ["sweep", str(y), "-o", str(tmp_path / "runs")])
    assert r.exit_code == 2 and "tune: a sweep does not search" in r.output and "reglab tune" in r.output
    assert not (tmp_path / "runs").exists()
    r = CliRunner().invoke(cli, ["train", str(y), "-o", str(tmp_path / "runs")])
    assert r.exit_code == 2 and "tune: a tune: block is read by `reglab tune FILE`" in r.output
    assert not (tmp_path / "runs").exists()
