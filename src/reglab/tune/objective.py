"""One trial = one ordinary reglab run.

The trial's values are set on the base config; the run lands in `<root>/<hash>/` like any other,
so a trial whose config matches a finished run reuses it (not trained again), and a retried
trial (same values, same hash) resumes its run from the last checkpoint. The pruner sees each
evaluation as it is written, through a run observer; when it says prune, the observer stops the
run (left resumable, not done) and the trial is PRUNED.

A trial's value is the run's final `tune.metric` (`summary.final`): the last evaluation, or,
under early stopping with `restore_best`, the restored best weights' -- the same number
`reglab runs` shows for that run. The best evaluation during training is not used: picking the
best step on the validation set and then again the best trial would select twice on it.
"""

from __future__ import annotations

import math
import os

import optuna

from ..config import config_hash
from ..observers import RunInfo, RunObserver, StopTraining
from ..store import RunDir
from ..train import run
from .spec import Dist, TuneSetup, search_values


class RunDiverged(Exception):
    """The trial's run diverged (NaN or inf loss): the trial fails, it has no metric."""


class PruningObserver(RunObserver):
    """Reports each evaluation's metric to the trial at its training step and stops the run
    when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial = trial
        self.metric = metric
        self.reported: set[int] = set()

    def on_start(self, run: RunInfo, resumed_step: int) -> None:
        # A resumed run (a retried or re-asked trial) reports its evaluations up to the
        # checkpoint again, so the pruner judges this trial on its whole curve.
        if resumed_step > 0:
            for row in RunDir(run.path).evals():
                if row["step"] <= resumed_step:
                    self._report(row)

    def on_evaluation(self, row: dict) -> None:
        if self._report(row) and self.trial.should_prune():
            raise StopTraining(f"pruned at step {row['step']}: {self.metric} = {row[self.metric]:.4g}")

    def _report(self, row: dict) -> bool:
        value, step = row.get(self.metric), int(row["step"])
        if value is None or not math.isfinite(value) or step in self.reported:
            return False
        self.trial.report(float(value), step)
        self.reported.add(step)
        return True


class Objective:
    """Optuna's objective for a tune setup (a class, so a spawned worker can rebuild it)."""

    def __init__(self, setup: TuneSetup, data_dir: str | None = None, worker: str | None = None):
        self.setup = setup
        self.data_dir = data_dir
        self.worker = worker
        """Who runs the trials, kept as the trials' user attribute `worker` (a SLURM job's id)."""

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.setup
        for key, dist in s.space.items():
            _suggest(trial, key, dist)
        cfg = s.trial_config(trial.params)
        trial.set_user_attr("run_hash", config_hash(cfg))
        trial.set_user_attr("worker_pid", os.getpid())
        if self.worker is not None:
            trial.set_user_attr("worker", self.worker)
        metric = s.block.metric
        try:
            observers = [PruningObserver(trial, metric)]
            res = run(cfg, data_dir=self.data_dir, root=s.root, progress=False, wait=True, observers=observers)
        except KeyboardInterrupt:
            # Ctrl-C: this trial fails, and the same values go back in the queue, so the next
            # `reglab tune` resumes its run instead of sampling new ones.
            trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        trial.set_user_attr("run_status", "reused" if res.skipped else res.status)
        if res.status == "stopped":  # the pruning observer stopped it
            raise optuna.TrialPruned(res.summary.get("stop_reason", "pruned"))
        if res.status == "diverged":
            raise RunDiverged(f"run {res.hash} diverged at step {res.summary.get('diverged_step')}")
        return float(res.summary["final"][metric])


def _suggest(trial: optuna.Trial, key: str, dist: Dist) -> None:
    if dist.kind == "categorical":
        trial.suggest_categorical(key, dist.options())
        return
    assert dist.low is not None and dist.high is not None  # every numeric kind has both
    if dist.kind == "int":
        trial.suggest_int(key, int(dist.low), int(dist.high), step=dist.step or 1)
    else:
        trial.suggest_float(key, float(dist.low), float(dist.high), log=dist.log)


def describe(setup: TuneSetup, t: optuna.trial.FrozenTrial) -> str:
    """One line for a finished trial: state, metric, values, run."""
    metric = setup.block.metric
    if t.state == optuna.trial.TrialState.COMPLETE:
        head = f"{metric}={t.value:.4f}"
    elif t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
        step = max(t.intermediate_values)
        head = f"pruned at step {step} ({metric}={t.intermediate_values[step]:.4f})"
    elif t.user_attrs.get("run_status") == "diverged":
        head = "failed: the run diverged"
    else:
        head = t.state.name.lower()
    values = "  ".join(f"{k}={_short(v)}" for k, v in search_values(setup, t.params).items())
    return f"trial {t.number}: {head}  {values}  run {t.user_attrs.get('run_hash', '-')}"


def _short(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


__all__ = ["Objective", "PruningObserver", "RunDiverged", "describe"]
