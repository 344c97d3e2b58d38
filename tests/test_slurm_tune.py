"""`reglab tune --executor slurm`: the study's workers as jobs of a real SLURM cluster (the
session's `cluster` fixture, conftest.py; tests/slurm_cluster.py).

Two worker jobs share one journal study and both run trials; a worker cancelled with `scancel`
mid-trial is reported with its log, its trial is failed through its heartbeat and retried by the
other worker, resuming its run from the checkpoint, and no finished trial is lost; a preempted
worker is requeued and retries its own trial. (A time limit takes the same path as preemption,
through submitit's requeue; it is left out, a one-minute limit being too slow here.) Trials use
`slurm_nets:paced_mlp`, which pauses at each training step inside a SLURM job, so a trial lasts
long enough to be cancelled mid-way. Marked `slurm` (`make test-slurm`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_slurm import env, evals, job_ids, take_the_node, wait_for

optuna = pytest.importorskip("optuna", reason="reglab tune needs Optuna: pip install 'reglab[tune]'")
pytest.importorskip("submitit", reason="the SLURM executor needs submitit: pip install 'reglab[slurm]'")

from optuna.storages.journal import JournalFileBackend, JournalStorage  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

pytestmark = pytest.mark.slurm


def study_config(path: Path, name: str, trials: int, iterations: int) -> Path:
    """A digits MLP study without pruning, its trials `iterations` paced steps long (5 ms each on
    the cluster), evaluated and checkpointed every 100; a trial silent for 3 s is dead."""
    config = {
        "name": name,
        "data": {"dataset": "digits", "val_fraction": 0.2},
        "model": {"name": "slurm_nets:paced_mlp", "widths": [64, 32, 10]},
        "train": {
            "iterations": iterations,
            "batch_size": 32,
            "eval_unit": "iteration",
            "eval_every": 100,
            "progress": False,
        },
        "analysis": {"margins": False, "spectra": False, "sparsity": False},
        "tune": {
            "space": {"optim.lr": {"log_uniform": [0.01, 0.1]}},
            "metric": "val_acc",
            "trials": trials,
            "sampler": "random",
            "pruner": "none",
            "heartbeat_interval": 1,
            "grace_period": 3,
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tune_args(cfg: Path, root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "reglab.cli", "tune", str(cfg), "-o", str(root), "--executor", "slurm", *args]


def tune(cfg: Path, root: Path, *args: str, cluster, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        tune_args(cfg, root, *args), capture_output=True, text=True, env=env(cluster), cwd=root.parent, timeout=timeout
    )


def start_tune(cfg: Path, root: Path, cluster, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        tune_args(cfg, root, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(cluster),
        cwd=root.parent,
    )


def run_dirs(root: Path) -> list[Path]:
    """The run directories under the results root (the trials' runs)."""
    return [d for d in root.glob("*") if d.is_dir() and d.name not in ("tune", ".submitit")]


def load(root: Path, name: str) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(root / "tune" / f"{name}.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def finished(study: optuna.Study) -> list:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_two_worker_jobs_share_one_study_and_both_run_trials(cluster, tmp_path):
    cfg, root = study_config(tmp_path / "two.yaml", "two", trials=4, iterations=600), tmp_path / "runs"
    r = tune(cfg, root, "-j", "2", "--slurm", "cpus_per_task=1", cluster=cluster)
    assert r.returncode == 0, r.stdout + r.stderr
    study = load(root, "two")
    trials = study.get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials), trials  # none failed or left running
    assert 4 <= len(trials) <= 5  # both workers may finish their last trial together
    assert len({t.user_attrs["run_hash"] for t in trials}) == len(trials)  # distinct trials
    assert all((root / t.user_attrs["run_hash"] / "DONE").exists() for t in trials)
    (job,) = job_ids(root)  # one array job of two tasks
    assert {t.user_attrs["worker"] for t in trials} == {f"{job}_0", f"{job}_1"}
    script = (root / ".submitit" / f"{job}_submission.sh").read_text()
    assert "#SBATCH --array=0-1" in script and "#SBATCH --job-name=reglab-tune-two" in script, script
    tasks = lambda: {row["JobID"]: row["State"] for row in cluster.sacct(job) if "." not in row["JobID"]}  # noqa: E731
    # the command ends once both results are stored; the jobs' processes end a moment later
    wait_for(lambda: set(tasks().values()) == {"COMPLETED"}, "both worker jobs to be COMPLETED", 60)
    assert sorted(tasks()) == [f"{job}_0", f"{job}_1"]
    for t in trials:  # the waiting command shows each trial as the study stores it
        assert f"trial {t.number}: val_acc={t.value:.4f}" in r.stdout, r.stdout
    last = [line for line in r.stdout.splitlines() if "worker jobs:" in line][-1]
    assert re.search(rf"{len(trials)} of 4 trials finished .* 0 failed; worker jobs: 0 running, 0 waiting$", last)


def test_a_cancelled_worker_loses_no_finished_trial_and_its_trial_resumes(cluster, tmp_path):
    cfg, root = study_config(tmp_path / "cancel.yaml", "cancel", trials=5, iterations=2000), tmp_path / "runs"
    p = start_tune(cfg, root, cluster, "-j", "2")
    runs = lambda: run_dirs(root)  # noqa: E731
    done = lambda: [d for d in runs() if (d / "DONE").exists()]  # noqa: E731
    # a run checkpointed early in its trial (steps 300-700 of 2000: seconds of paced steps left), not
    # the other worker's first trial, which is near its end when the first one finishes
    mid = lambda: [d for d in runs() if not (d / "DONE").exists() and 4 <= len(evals(d)) <= 8]  # noqa: E731
    wait_for(lambda: done() and mid(), "a finished trial and one checkpointed early in its run", 180, p)
    study = load(root, "cancel")
    (victim,) = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.user_attrs["run_hash"] == mid()[0].name]
    kept = {t.number: t.value for t in finished(study)}
    job = victim.user_attrs["worker"]
    subprocess.run(["scancel", job], env=env(cluster), check=True)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 1, out + err  # a worker failed; the other one completed the study
    (line,) = [line for line in err.splitlines() if line.startswith("failed:")]
    log = root / ".submitit" / f"{job}_0_log.err"
    assert re.fullmatch(rf"failed: worker \d: job ended CANCELLED .*; SLURM job {job}, log {re.escape(str(log))}", line)
    assert log.exists()

    again = tune(cfg, root, "-j", "2", cluster=cluster)
    assert again.returncode == 0, again.stdout + again.stderr
    study = load(root, "cancel")
    assert len(finished(study)) >= 5
    for number, value in kept.items():  # every trial finished before the cancel is kept as it was
        assert study.trials[number].state == TrialState.COMPLETE and study.trials[number].value == value
    assert study.trials[victim.number].state == TrialState.FAIL  # found by its silent heartbeat
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert retry.user_attrs["run_hash"] == victim.user_attrs["run_hash"] and retry.user_attrs["worker"] != job
    assert f"(its worker went silent: retried as trial {retry.number})" in out, out
    run = root / victim.user_attrs["run_hash"]
    starts = [s["from_step"] for s in json.loads((run / "summary.json").read_text())["trained_by"]]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0, starts  # resumed from its checkpoint
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_a_preempted_worker_is_requeued_and_its_trial_resumes(cluster, tmp_path):
    cfg, root = study_config(tmp_path / "low.yaml", "low", trials=1, iterations=2000), tmp_path / "runs"
    p = start_tune(cfg, root, cluster, "--slurm", "partition=low")
    runs = lambda: run_dirs(root)  # noqa: E731
    wait_for(lambda: any(len(evals(d)) >= 4 for d in runs()), "the first trial to checkpoint", 180, p)
    (run,) = runs()
    high = take_the_node(cluster)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, out + err  # requeued, not failed
    (job,) = job_ids(root)
    states = [row["State"] for row in cluster.sacct(job) if row["JobID"] == job]
    assert states[0] == "PREEMPTED" and states[-1] in ("COMPLETED", "RUNNING"), states
    assert [row["State"] for row in cluster.sacct(high) if row["JobID"] == high] == ["COMPLETED"]
    study = load(root, "low")
    (lost,) = study.get_trials(states=(TrialState.FAIL,))
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == lost.number]
    assert (
        retry.state == TrialState.COMPLETE and retry.user_attrs["run_hash"] == run.name == lost.user_attrs["run_hash"]
    )
    assert retry.user_attrs["worker"] == lost.user_attrs["worker"] == job  # the same job, requeued
    starts = [s["from_step"] for s in json.loads((run / "summary.json").read_text())["trained_by"]]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0, starts
    assert len(finished(study)) == 1
