"""Sweeps through a real SLURM scheduler: a single-node cluster started from Debian's packages
(tests/slurm_cluster.py), with accounting, two partitions and preemption.

Marked `slurm`: `make test` leaves them out, `make test-slurm` runs them (CI runs both). They
skip, with the reason, where the cluster cannot start (not root, packages missing).

Runs that must be interrupted mid-way use `slurm_nets:paced_mlp`, which pauses at each training
step inside a SLURM job only, so the same config trains unpaused as the reference that every
interrupted run's files are compared with. The `cluster` fixture (one cluster per session) is in
conftest.py; test_slurm_tune.py runs `reglab tune`'s worker jobs on it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import SlurmCluster
from test_reliability import _strip_times  # wall-clock fields and provenance left out

pytestmark = pytest.mark.slurm

TESTS = Path(__file__).resolve().parent
BASE = {
    "data": {"dataset": "synthetic", "synthetic": {"n_train": 256, "n_test": 128, "dim": 20, "classes": 4}},
    "model": {"name": "mlp", "widths": [20, 32, 4]},
    "optim": {"lr": 0.05},
    "train": {"batch_size": 32, "epochs": 2, "progress": False},
    "analysis": {"margins": False, "spectra": False, "sparsity": False},
}


# ----------------------------------------------------------------------------- helpers


def config(path: Path, **sections) -> Path:
    """BASE with `sections` merged in (one level deep), as a sweep YAML."""
    spec = json.loads(json.dumps(BASE))
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    if "iterations" in spec["train"]:
        del spec["train"]["epochs"]  # one budget
    path.write_text(yaml.safe_dump(spec))
    return path


def env(cluster: SlurmCluster | None, **extra: str) -> dict[str, str]:
    """The environment of a sweep: the cluster's (none for a local sweep, which must not look
    like a SLURM job), tests/ importable, one torch thread as in every cluster run."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    e.update(cluster.env() if cluster else {})
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["OMP_NUM_THREADS"] = "1"
    e.update(extra)
    return e


def sweep_args(yaml_path: Path, root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "reglab.cli", "sweep", str(yaml_path), "-o", str(root), *args]


def sweep(yaml_path: Path, root: Path, *args: str, cluster: SlurmCluster | None, timeout: float = 240, **extra):
    """`reglab sweep` as a user runs it; on the cluster unless `cluster` is None (inline)."""
    how = ["--executor", "slurm"] if cluster else ["--executor", "inline", "--vectorize", "off"]
    return subprocess.run(
        sweep_args(yaml_path, root, *how, *args),
        capture_output=True,
        text=True,
        env=env(cluster, **extra),
        cwd=root.parent,
        timeout=timeout,
    )


def _default_sigint() -> None:
    """In the child: Ctrl-C acts again. A test run started in the background (`cmd &`, nohup)
    inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_sweep(yaml_path: Path, root: Path, cluster: SlurmCluster, *args: str, **extra) -> subprocess.Popen:
    return subprocess.Popen(
        sweep_args(yaml_path, root, "--executor", "slurm", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(cluster, **extra),
        cwd=root.parent,
        preexec_fn=_default_sigint,
    )


def planned(yaml_path: Path) -> list:
    from reglab.sweep import build_spec, expand

    spec = build_spec(str(yaml_path), [])
    spec.pop("slurm", None)
    return expand(spec)


def logs(run_dir: Path) -> dict[str, object]:
    """A finished run's logs and summary, without wall-clock fields."""
    out: dict[str, object] = {}
    for name in ("steps.jsonl", "evals.jsonl"):
        out[name] = [_strip_times(json.loads(line)) for line in (run_dir / name).read_text().splitlines()]
    out["summary.json"] = _strip_times(json.loads((run_dir / "summary.json").read_text()))
    return out


def segments(run_dir: Path) -> list[dict]:
    trained_by: list[dict] = json.loads((run_dir / "summary.json").read_text())["trained_by"]
    return trained_by


def wait_for(condition, what: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sweep ended before {what}: {out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


ACTIVE = ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "CONFIGURING", "SUSPENDED")


def wait_until_ended(cluster: SlurmCluster, *jobs: str, timeout: float = 90) -> None:
    """Wait until every task of `jobs` has ended in SLURM's accounting: a sweep returns once its
    runs' results are stored, and the jobs' processes (and sacct's record) end a moment later."""

    def ended() -> bool:
        last: dict[str, str] = {}
        for job in jobs:
            for row in cluster.sacct(job):
                if "." not in row["JobID"]:
                    last[row["JobID"]] = row["State"].split()[0]
        return bool(last) and not any(state in ACTIVE for state in last.values())

    wait_for(ended, f"jobs {', '.join(jobs)} to end in sacct", timeout)


def job_ids(root: Path) -> list[str]:
    """Ids of the jobs (arrays) the sweeps under `root` submitted, oldest first."""
    return sorted((p.name.split("_")[0] for p in (root / ".submitit").glob("*_submission.sh")), key=int)


def display_lines(stdout: str) -> list[tuple[int, int, int, int, int]]:
    """(done, failed, running, waiting, total) of every progress line."""
    pattern = r"(\d+) done \(\d+ diverged\), (\d+) failed, (\d+) running, (\d+) waiting \(of (\d+)\)"
    return [tuple(map(int, m.groups())) for m in re.finditer(pattern, stdout)]  # type: ignore[misc]


def assert_counts_add_up(stdout: str) -> None:
    lines = display_lines(stdout)
    assert lines, stdout
    for done, failed, running, waiting, total in lines:
        assert done + failed + running + waiting == total, stdout


def paced(iterations, **train) -> dict:
    return {
        "model": {"name": "slurm_nets:paced_mlp", "widths": [20, 32, 4]},
        "train": {"iterations": iterations, "eval_every": 100, "eval_unit": "iteration", **train},
    }


# ----------------------------------------------------------------------------- tests


def test_an_array_with_a_concurrency_limit_gives_the_local_results(cluster, tmp_path):
    slurm = {
        "array_parallelism": 2,
        "partition": "high",
        "account": "reglab",
        "qos": "normal",
        "cpus_per_task": 1,
        "mem_gb": 0.5,
        "sbatch_args": ["--comment=reglab-test"],
    }
    y = config(tmp_path / "grid.yaml", optim={"lr": [0.1, 0.05]}, seed=[0, 1], slurm=slurm)
    r = sweep(y, tmp_path / "cluster", cluster=cluster)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr
    assert_counts_add_up(r.stdout)
    (job,) = job_ids(tmp_path / "cluster")
    script = (tmp_path / "cluster" / ".submitit" / f"{job}_submission.sh").read_text()
    for line in ("--array=0-3%2", "--partition=high", "--account=reglab", "--qos=normal", "--mem=512MB"):
        assert f"#SBATCH {line}" in script, script
    assert "#SBATCH --comment=reglab-test" in script and "#SBATCH --job-name=reglab-grid" in script
    wait_until_ended(cluster, job)
    rows = [row for row in cluster.sacct(job) if "." not in row["JobID"]]
    assert sorted(row["JobID"] for row in rows) == [f"{job}_{i}" for i in range(4)]
    assert {(row["State"], row["Partition"]) for row in rows} == {("COMPLETED", "high")}
    assert max_overlap(cluster, job) <= 2

    local = sweep(y, tmp_path / "local", cluster=None)
    assert local.returncode == 0, local.stderr
    hashes = sorted(r.hash for r in planned(y))
    assert sorted(p.parent.name for p in (tmp_path / "cluster").glob("*/DONE")) == hashes
    assert sorted(p.parent.name for p in (tmp_path / "local").glob("*/DONE")) == hashes
    for h in hashes:
        summary = {w: json.loads((tmp_path / w / h / "summary.json").read_text()) for w in ("cluster", "local")}
        assert summary["cluster"]["final"] == summary["local"]["final"]
        assert logs(tmp_path / "cluster" / h) == logs(tmp_path / "local" / h)


def max_overlap(cluster: SlurmCluster, job: str) -> int:
    """The most array tasks of `job` that ran at the same time (from sacct's start and end)."""
    out = cluster._run(["sacct", "-j", job, "-X", "-n", "-P", "-o", "Start,End"])
    spans = [line.split("|") for line in out.splitlines() if line.strip()]
    return max(sum(s <= start < e for s, e in spans) for start, _ in spans)


def test_scancel_then_the_same_sweep_skips_the_finished_and_resumes_the_cancelled(cluster, tmp_path):
    y = config(tmp_path / "cancel.yaml", **paced([200, 2500]), slurm={"array_parallelism": 2})
    short, long = sorted(planned(y), key=lambda r: r.config.train.iterations)
    root = tmp_path / "runs"
    p = start_sweep(y, root, cluster)
    wait_for(lambda: (root / short.hash / "DONE").exists(), "the short run to finish", 120, p)
    wait_for(lambda: len(evals(root / long.hash)) >= 4, "the long run to checkpoint", 120, p)
    assert not (root / long.hash / "DONE").exists()
    (job,) = job_ids(root)
    subprocess.run(["scancel", job], env=env(cluster), check=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, out + err
    (line,) = [line for line in err.splitlines() if line.startswith("failed:")]
    log = tmp_path / "runs" / ".submitit"
    assert line.startswith(f"failed: {long.hash}: job ended CANCELLED without a result"), line
    assert re.search(rf"SLURM job {job}_\d, log {re.escape(str(log))}/{job}_\d_0_log\.err$", line), line
    assert_counts_add_up(out)
    done_at = (root / short.hash / "DONE").stat().st_mtime

    again = sweep(y, root, cluster=cluster)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (root / short.hash / "DONE").stat().st_mtime == done_at  # skipped, not retrained
    _, second = job_ids(root)
    assert "--array" not in (log / f"{second}_submission.sh").read_text()  # one job: the cancelled run
    starts = [s["from_step"] for s in segments(root / long.hash)]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0, starts
    ref = sweep(y, tmp_path / "ref", cluster=None)
    assert ref.returncode == 0, ref.stderr
    for r in (short, long):
        assert logs(root / r.hash) == logs(tmp_path / "ref" / r.hash)


def evals(run_dir: Path) -> list[str]:
    path = run_dir / "evals.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def test_ctrl_c_cancels_the_sweeps_jobs_and_a_rerun_finishes_them(cluster, tmp_path):
    y = config(tmp_path / "interrupt.yaml", **paced(1500))
    (run,) = planned(y)
    root = tmp_path / "runs"
    p = start_sweep(y, root, cluster)
    wait_for(lambda: len(evals(root / run.hash)) >= 2, "the run to start", 120, p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, out + err
    assert "Rerun the same command to resume them" in err, err
    (job,) = job_ids(root)
    wait_for(lambda: not cluster.squeue(), "the job to leave the queue", 60)
    assert [row["State"].split()[0] for row in cluster.sacct(job) if row["JobID"] == job] == ["CANCELLED"]
    again = sweep(y, root, cluster=cluster)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(segments(root / run.hash)) == 2


def test_a_time_limit_mid_run_requeues_the_jobs_which_finish_the_runs(cluster, tmp_path):
    # The warning comes 25 s before the 1-minute limit, give or take slurmctld's 30-s tick:
    # between 5 and 35 s into the job. Each run needs about 40 s on the cluster.
    slurm = {"time": 1, "signal_delay_s": 25, "max_requeues": 5}
    y = config(tmp_path / "limit.yaml", **paced(6000), seed=[0, 1], slurm=slurm)
    runs = planned(y)
    root = tmp_path / "runs"
    r = sweep(y, root, cluster=cluster, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (job,) = job_ids(root)
    wait_until_ended(cluster, job)
    for task in (f"{job}_0", f"{job}_1"):
        states = [row["State"] for row in cluster.sacct(job) if row["JobID"] == task]
        assert "REQUEUED" in states and states[-1] == "COMPLETED", (task, states)
        log = (root / ".submitit" / f"{task}_0_log.err").read_text()
        assert "Caught signal SIGUSR2" in log and "timed-out" in log, log
    assert_resumed_exactly(y, root, runs, tmp_path / "ref")


def assert_resumed_exactly(y: Path, root: Path, runs: list, ref: Path) -> None:
    """Every run was trained in more than one start, and its files equal an uninterrupted run's."""
    r = sweep(y, ref, cluster=None)
    assert r.returncode == 0, r.stderr
    for run in runs:
        starts = [s["from_step"] for s in segments(root / run.hash)]
        assert len(starts) >= 2 and starts[0] == 0 and starts[1] > 0, starts
        assert logs(root / run.hash) == logs(ref / run.hash)


def take_the_node(cluster: SlurmCluster) -> str:
    """Submit a 2-second job that needs the whole node, at the high partition's priority tier
    (it preempts what runs on `low`); returns its job id."""
    return subprocess.run(
        ["sbatch", "--parsable", "-p", "high", "--cpus-per-task=4", "-o", "/dev/null", "--wrap", "sleep 2"],
        env=env(cluster),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_preempted_runs_are_requeued_and_resume(cluster, tmp_path):
    y = config(tmp_path / "low.yaml", **paced(2500), seed=[0, 1], slurm={"partition": "low"})
    runs = planned(y)
    root = tmp_path / "runs"
    p = start_sweep(y, root, cluster)
    for run in runs:
        wait_for(lambda run=run: len(evals(root / run.hash)) >= 4, "the runs to checkpoint", 120, p)
    high = take_the_node(cluster)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, out + err
    (job,) = job_ids(root)
    wait_until_ended(cluster, job, high)
    for task in (f"{job}_0", f"{job}_1"):
        states = [row["State"] for row in cluster.sacct(job) if row["JobID"] == task]
        assert states[0] == "PREEMPTED" and states[-1] == "COMPLETED", (task, states)
    assert [row["State"] for row in cluster.sacct(high) if row["JobID"] == high] == ["COMPLETED"]
    assert_resumed_exactly(y, root, runs, tmp_path / "ref")


def test_a_run_failing_on_the_cluster_is_reported_with_its_error_and_log(cluster, tmp_path):
    y = config(tmp_path / "fail.yaml", model={"name": ["slurm_nets:failing_mlp", "mlp"]})
    bad = next(r for r in planned(y) if r.config.model.name.endswith("failing_mlp"))
    root = tmp_path / "runs"
    r = sweep(y, root, cluster=cluster)
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    m = re.fullmatch(
        rf"failed: {bad.hash}: RuntimeError: injected failure on the cluster; SLURM job \S+, log (\S+)", line
    )
    assert m, line
    assert "Traceback" in Path(m.group(1)).read_text()  # the log shows where it failed
    assert json.loads((root / bad.hash / "error.json").read_text())["type"] == "RuntimeError"
    assert len(list(root.glob("*/DONE"))) == 1


def test_without_sacct_jobs_are_followed_with_squeue(cluster, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    (fake / "sacct").chmod(0o755)
    path = f"{fake}{os.pathsep}{os.environ['PATH']}"
    y = config(tmp_path / "nosacct.yaml", **paced([200, 4000]), slurm={"array_parallelism": 2})
    short, long = sorted(planned(y), key=lambda r: r.config.train.iterations)
    root = tmp_path / "runs"
    p = start_sweep(y, root, cluster, PATH=path)
    wait_for(lambda: (root / short.hash / "DONE").exists(), "the short run to finish", 120, p)
    wait_for(lambda: len(evals(root / long.hash)) >= 2, "the long run to start", 120, p)
    (job,) = job_ids(root)
    subprocess.run(["scancel", job], env=env(cluster), check=True)  # its end is known from squeue only
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, out + err
    assert err.count("note: sacct: sacct: error: Slurm accounting storage is disabled") == 1, err
    assert "Bypassing" not in err and "WARNING" not in err, err
    assert any(line.startswith(f"failed: {long.hash}: job ended CANCELLED") for line in err.splitlines()), err
    assert_counts_add_up(out)


def test_local_and_cluster_sweeps_share_one_results_root(cluster, tmp_path):
    root = tmp_path / "runs"
    two = config(tmp_path / "shared.yaml", seed=[0, 1])
    assert sweep(two, root, cluster=cluster).returncode == 0
    four = config(tmp_path / "shared.yaml", seed=[0, 1, 2, 3])
    local = sweep(four, root, cluster=None)
    assert local.returncode == 0, local.stderr
    trained_here = re.findall(r"run (\w+) done", local.stdout)
    assert len(trained_here) == 2 and len(list(root.glob("*/DONE"))) == 4, local.stdout
    five = config(tmp_path / "shared.yaml", seed=[0, 1, 2, 3, 4])
    r = sweep(five, root, cluster=cluster)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(re.findall(r"run (\w+) done", r.stdout)) == 1 and len(list(root.glob("*/DONE"))) == 5
    assert len(job_ids(root)) == 2  # the last sweep submitted one job, for its one new run
    from reglab.results import load_runs

    df = load_runs(root)
    assert len(df) == 5 and set(df["status"]) == {"done"}


@pytest.mark.parametrize(
    ("option", "field", "needle"),
    [
        ("partition=nope", "slurm.partition", "invalid partition specified: nope (allowed: high, low)"),
        ("account=nope", "slurm.account", "Invalid account"),
        ("qos=nope", "slurm.qos", "Invalid qos"),
    ],
)
def test_options_the_cluster_refuses_stop_the_sweep_before_anything_is_written(
    cluster, tmp_path, option, field, needle
):
    root = tmp_path / "runs"
    y = config(tmp_path / "grid.yaml")
    r = sweep(y, root, "--slurm", option, cluster=cluster)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {field}: the cluster refuses the job") and needle in line, line
    assert not root.exists()
    assert not cluster.squeue()
