"""`reglab tune`: the README's example study prunes and each trial is an ordinary run; --show and
--plot read the study without training; bad tune configs exit 2 writing nothing; a worker killed
with SIGKILL loses no finished trial and its trial is failed, retried and resumes its run; two
workers share one SQLite study; the journal storage finds a silent trial by its heartbeat."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from reglab.cli import cli

REPO = Path(__file__).resolve().parents[1]
ANALYSIS_OFF = ["analysis.margins=false", "analysis.spectra=false", "analysis.sparsity=false"]
SHORT = [
    "train.iterations=120",
    "train.eval_unit=iteration",
    "train.eval_every=20",
    "train.progress=false",
    *ANALYSIS_OFF,
    "tune.trials=8",
    "tune.pruner.n_startup_trials=2",
    "tune.pruner.n_warmup_steps=20",
]
"""The README example's budget shortened: 8 trials of 120 steps, evaluated every 20."""

# A subprocess study: one OpenMP thread per process (two on a loaded 2-core machine can make
# small models 10x slower), and no experimental-feature warnings on its stderr.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def readme_example() -> dict:
    text = (REPO / "README.md").read_text()
    section = text.split("## Hyperparameter search (`reglab tune`)", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "the README's tune section has a yaml block"
    return yaml.safe_load(block.group(1))


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tune(*args: str):
    return CliRunner().invoke(cli, ["tune", *map(str, args)])


def load(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'tune' / f'{name}.db'}")


def finished(study: optuna.Study) -> list:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


@pytest.fixture(scope="module")
def readme_study(tmp_path_factory):
    """The README example, shortened, run in this process: (config path, results root)."""
    tmp = tmp_path_factory.mktemp("tune")
    cfg, root = write(tmp / "tune.yaml", readme_example()), tmp / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = tune(cfg, *SHORT, "-o", root)
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    return cfg, root


def test_the_readme_example_prunes_and_each_trial_is_a_run(readme_study):
    _, root = readme_study
    study = load(root, "digits-l2")
    trials = study.get_trials()
    assert len(finished(study)) == len(trials) == 8
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert complete and pruned  # median pruner, 2 startup trials, seeded sampler: deterministic
    for t in complete:
        run = root / t.user_attrs["run_hash"]
        summary = yaml.safe_load((run / "summary.json").read_text())
        assert (run / "DONE").exists() and summary["final"]["val_acc"] == t.value
        config = yaml.safe_load((run / "config.json").read_text())["config"]
        assert config["optim"]["lr"] == t.params["optim.lr"]
        assert config["regularizers"][0]["lam"] == t.params["regularizers.0.lam"]
    for t in pruned:  # stopped at the evaluation the pruner judged, not done (resumable)
        run = root / t.user_attrs["run_hash"]
        last = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()][-1]
        assert not (run / "DONE").exists() and last["step"] == max(t.intermediate_values)
        assert t.user_attrs["run_status"] == "stopped"
    assert len({t.user_attrs["run_hash"] for t in trials}) == 8


def test_show_and_plot_read_the_study_and_train_nothing(readme_study, tmp_path):
    cfg, root = readme_study
    before = sorted(p.name for p in root.iterdir())
    png = tmp_path / "search.png"
    r = tune(cfg, *SHORT, "-o", root, "--show", "--plot", png)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in root.iterdir()) == before
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = r.output.splitlines()
    header = next(line for line in lines if line.startswith("#"))
    assert header.split() == ["#", "state", "regularizers.0.lam", "optim.lr", "val_acc", "run", "note"]
    best = load(root, "digits-l2").best_trial
    assert f"best: trial {best.number}: val_acc = {best.value:.4f}" in r.output
    assert best.user_attrs["run_hash"] in next(line for line in lines if line.startswith("best:"))
    assert sum(" PRUNED " in line for line in lines) >= 1
    assert "8 of 8 finished" in lines[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.update(metric="test_acc"), "tune.metric: test_acc is measured on the test set"),
        (lambda t: t["space"].update({"optim.lrr": {"uniform": [0.1, 0.2]}}), "tune.space.optim.lrr: unknown key"),
        (lambda t: t["space"].update({"regularizers.0.lam": {"uniform": [-1, 1]}}), "tune.space.regularizers.0.lam"),
        (lambda t: t.update(sampler="grid"), "tune.space.regularizers.0.lam: the grid sampler needs the values"),
        (lambda t: t["pruner"].update(min_resource=2), "tune.pruner.min_resource: is not an option of the median"),
    ],
    ids=["test-metric", "unknown-key", "refused-value", "grid-of-floats", "other-pruner-option"],
)
def test_bad_tune_configs_exit_2_naming_the_field_and_write_nothing(tmp_path, change, expected):
    config = readme_example()
    change(config["tune"])
    r = tune(write(tmp_path / "bad.yaml", config), "-o", tmp_path / "runs")
    assert r.exit_code == 2, r.output
    assert r.output.startswith(f"error: {expected}") and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "runs").exists()


def test_without_optuna_one_message_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    r = tune(write(tmp_path / "tune.yaml", readme_example()), "-o", tmp_path / "runs")
    assert r.exit_code == 2 and "pip install 'reglab[tune]'" in r.output, r.output
    assert not (tmp_path / "runs").exists()


def small_study(name: str, trials: int, iterations: int, grace: int) -> dict:
    """A study without pruning whose trials run `iterations` steps, a checkpoint every 25; a
    trial silent for `grace` seconds (heartbeat every second) counts as dead."""
    return {
        "name": name,
        "data": {"dataset": "digits", "val_fraction": 0.2},
        "model": {"name": "mlp", "widths": [64, 32, 10]},
        "train": {"iterations": iterations, "batch_size": 32, "eval_unit": "iteration", "eval_every": 25},
        "analysis": {"margins": False, "spectra": False, "sparsity": False},
        "tune": {
            "space": {"optim.lr": {"log_uniform": [0.01, 0.1]}},
            "metric": "val_acc",
            "trials": trials,
            "sampler": "random",
            "pruner": "none",
            "heartbeat_interval": 1,
            "grace_period": grace,
        },
    }


def reglab_tune(*args) -> list[str]:
    return [sys.executable, "-m", "reglab.cli", "tune", *map(str, args)]


def test_a_killed_worker_loses_no_finished_trial_and_its_trial_resumes(tmp_path):
    cfg, root = write(tmp_path / "kill.yaml", small_study("kill", trials=2, iterations=300, grace=1)), tmp_path / "runs"
    proc = subprocess.Popen(reglab_tune(cfg, "-o", root), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while True:  # kill once one trial finished and the next one has checkpointed mid-run
        runs = [d for d in root.glob("*") if d.name != "tune"]
        done = [d for d in runs if (d / "DONE").exists()]
        mid = [d for d in runs if not (d / "DONE").exists() and _lines(d / "evals.jsonl") >= 3]
        if done and mid:
            break
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert time.monotonic() < deadline, "the study never got mid-run"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    study = load(root, "kill")
    (first,) = finished(study)
    (killed,) = study.get_trials(states=(TrialState.RUNNING,))
    assert killed.user_attrs["run_hash"] == mid[0].name
    time.sleep(1.2)  # past the grace period: the killed trial's heartbeat has gone quiet

    r = subprocess.run(reglab_tune(cfg, "-o", root), env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    study = load(root, "kill")
    assert study.trials[killed.number].state == TrialState.FAIL
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["run_hash"] == killed.user_attrs["run_hash"]
    assert study.trials[first.number].value == first.value  # the finished trial is kept as it was
    assert len(finished(study)) == 2
    summary = yaml.safe_load((mid[0] / "summary.json").read_text())
    assert len(summary["trained_by"]) == 2  # resumed from its checkpoint, not trained again


def _lines(path: Path) -> int:
    try:
        return len(path.read_bytes().splitlines())
    except FileNotFoundError:
        return 0


def test_two_workers_share_one_sqlite_study(tmp_path):
    cfg, root = write(tmp_path / "two.yaml", small_study("two", trials=4, iterations=100, grace=10)), tmp_path / "runs"
    r = subprocess.run(reglab_tune(cfg, "-o", root, "-j", 2), env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    study = load(root, "two")
    trials = study.get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials)  # none lost, failed or left running
    assert 4 <= len(trials) <= 5  # both workers may finish their last trial together
    assert len({t.user_attrs["run_hash"] for t in trials}) == len(trials)  # distinct trials
    assert len({t.user_attrs["worker_pid"] for t in trials}) == 2
    assert all((root / t.user_attrs["run_hash"] / "DONE").exists() for t in trials)


def test_the_journal_storage_fails_a_silent_trial_and_queues_it_again(tmp_path):
    from reglab.tune import load_tune
    from reglab.tune.study import open_study

    cfg = write(tmp_path / "j.yaml", small_study("journal", trials=2, iterations=10, grace=1))
    setup = load_tune(cfg, [], str(tmp_path / "runs"))
    study = open_study(setup, f"journal:{tmp_path / 'study.log'}")
    with pytest.warns(UserWarning):  # heartbeats are meant for optimize(); here the trial stays silent
        silent = study.ask({"optim.lr": optuna.distributions.FloatDistribution(0.01, 0.1, log=True)})
    time.sleep(1.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[silent.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.system_attrs["failed_trial"] == silent.number and retry.params == trials[silent.number].params


@pytest.mark.parametrize(
    ("args", "block", "expected"),
    [
        (
            ["--executor", "slurm", "--storage", "sqlite:///study.db"],
            None,
            "error: --storage: SQLite cannot hold a study shared by SLURM jobs",
        ),
        (["--slurm", "time=0"], None, "error: slurm.time: must be > 0 minutes (got 0)"),
        (["--slurm", "partition"], None, "error: --slurm: 'partition': expected KEY=VALUE"),
        (["--executor", "local", "--slurm", "time=5"], None, "error: --slurm: needs --executor slurm (not local)"),
        ([], {"cpus_per_task": 0}, "error: slurm.cpus_per_task: must be an integer >= 1 (got 0)"),
        (["--slurm", "time=5"], None, "error: --executor: slurm: no sbatch or srun on PATH"),
    ],
    ids=["sqlite-refused", "bad-option", "not-key-value", "local-executor", "config-block", "no-cluster"],
)
def test_slurm_workers_are_checked_before_anything_is_written(tmp_path, monkeypatch, args, block, expected):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch, no srun: not a machine of a cluster
    config = small_study("checked", trials=2, iterations=10, grace=2)
    if block is not None:
        config["slurm"] = block
    r = tune(write(tmp_path / "c.yaml", config), "-o", tmp_path / "runs", *args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith(expected) and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "runs").exists()


def test_cluster_storage_is_a_shared_journal_or_a_database_server(tmp_path, monkeypatch):
    from reglab.tune import load_tune
    from reglab.tune.storage import choose_url, cluster_url

    monkeypatch.chdir(tmp_path)
    setup = load_tune(write(tmp_path / "s.yaml", small_study("s", 2, 10, 2)), [], "runs")
    journal = f"journal:{tmp_path / 'runs' / 'tune' / 's.journal'}"
    assert choose_url(setup, None, cluster=True) == journal  # the default on SLURM
    assert choose_url(setup, None) == f"sqlite:///{tmp_path / 'runs' / 'tune' / 's.db'}"  # and locally
    assert cluster_url("journal:studies/s.log") == f"journal:{tmp_path / 'studies' / 's.log'}"  # absolute for the nodes
    assert cluster_url("postgresql://db.cluster/optuna") == "postgresql://db.cluster/optuna"
    for url in ("sqlite:///s.db", "sqlite+pysqlite:///s.db"):
        with pytest.raises(Exception, match="SQLite cannot hold a study shared by SLURM jobs"):
            cluster_url(url)
    (tmp_path / "runs" / "tune").mkdir(parents=True)
    (tmp_path / "runs" / "tune" / "s.journal").touch()
    assert choose_url(setup, None) == journal  # a study started on SLURM, continued or shown here


def test_submitit_local_workers_run_the_cluster_path_on_this_machine(tmp_path):
    pytest.importorskip("submitit")
    cfg, root = write(tmp_path / "sub.yaml", small_study("sub", trials=2, iterations=50, grace=10)), tmp_path / "runs"
    run = reglab_tune(cfg, "-o", root, "--executor", "submitit_local", "-j", 2)
    r = subprocess.run(run, env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"storage journal:{root / 'tune' / 'sub.journal'}" in r.stdout
    assert "2 worker job(s) submitted to submitit" in r.stdout
    shown = subprocess.run(reglab_tune(cfg, "-o", root, "--show"), env=ENV, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert f"(journal:{root / 'tune' / 'sub.journal'})" in shown.stdout  # found without --storage
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(
        study_name="sub", storage=JournalStorage(JournalFileBackend(str(root / "tune" / "sub.journal")))
    )
    trials = study.get_trials()
    assert 2 <= len(finished(study)) == len(trials) <= 3
    jobs = sorted(p.name.split("_")[0] for p in (root / ".submitit").glob("*_submitted.pkl"))
    assert len(jobs) == 2 and {t.user_attrs["worker"] for t in trials} <= set(jobs)
    for t in trials:
        assert (root / t.user_attrs["run_hash"] / "DONE").exists()
        assert f"trial {t.number}: val_acc={t.value:.4f}" in r.stdout
