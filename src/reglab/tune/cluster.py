"""`reglab tune --executor slurm`: the study's workers as SLURM jobs.

N worker jobs (one array job of N tasks, submitted through submitit as a sweep's runs are) each
run the loop of a local worker (`workers.work`) on the one study that every node reaches (a
journal file on the shared filesystem or a database server: `storage.cluster_url`), until the
study holds `tune.trials` finished trials. Each trial is an ordinary run under the results root,
so trials trained on the cluster and locally share it, and reuse each other's runs.

What SLURM can do to a worker job, and what becomes of the trial it was running:

- time limit: the job gets USR2 `signal_delay_s` before it; the worker is checkpointable, so
  submitit requeues the job, which starts the same worker again (at most `max_requeues` times);
- preemption (PreemptMode=REQUEUE): SLURM requeues the job itself; same;
- `scancel`, a lost node: the job ends.

In each case the trial stays RUNNING in the study and its heartbeat goes silent: the first
worker to start a trial after `tune.grace_period` marks it failed and queues it again with the
same values (storage.py), and the retry resumes its run from the last checkpoint. When no worker
is left, the next `reglab tune` does that.

The submitting command waits. It prints each trial as the study stores it, a progress line when
the counts change (trials finished, pruned, running and failed; worker jobs running and
waiting), and each worker job that ends without finishing its loop, with its state and log. Once
the study is complete, worker jobs that have not started yet are cancelled (they would only
find nothing to do). Exit status 0 when every worker ended well and the study is complete, 1
when a worker failed (rerunning the same command continues the study); Ctrl-C cancels the jobs.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import click
import optuna
from optuna.trial import TrialState
from submitit.helpers import Checkpointable

from ..errors import Interrupted
from ..sweep.executors import Outcome
from ..sweep.slurm import ENDED, SubmititExecutor, _call
from ..sweep.slurm_options import SlurmOptions
from .objective import describe
from .spec import TuneSetup
from .study import FINISHED, finished_trials, missing_trials, quiet_optuna
from .workers import work


class TuneWorker(Checkpointable):
    """What each worker job runs: the study's trials, one after the other, until it is complete.

    Checkpointable: at the time-limit warning submitit resubmits this same call and requeues the
    job, whose worker then carries on with the study (the study is the state; the trial that was
    cut short is retried through its heartbeat and resumes its run)."""

    def __call__(self, setup: TuneSetup, url: str, data_dir: str | None, worker: int, threads: int) -> dict:
        import torch

        torch.set_num_threads(threads)
        quiet_optuna()
        t0 = time.perf_counter()
        work(setup, url, data_dir, worker, label=job_label())
        return {"hash": f"worker {worker}", "status": "done", "wall": time.perf_counter() - t0, "error": None}


def job_label() -> str:
    """This worker's name in its trials (user attribute `worker`): its job's id (`ARRAY_TASK`
    on SLURM), or host:pid outside a job."""
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not in a submitit job
        return f"{socket.gethostname()}:{os.getpid()}"


class WorkerJobs(SubmititExecutor):
    """The study's worker jobs, followed as a sweep's jobs are (sacct, or squeue): each one's
    outcome is "done" when its loop ended, else "failed" with its state and log."""

    def submit_workers(self, setup: TuneSetup, url: str, n: int) -> list[str]:
        jobs = self.ex.map_array(
            TuneWorker(), [setup] * n, [url] * n, [self.data_dir] * n, list(range(n)), [self.threads] * n
        )
        for k, job in enumerate(jobs):
            self.jobs[job.job_id] = (job, f"worker {k}")
        return [job.job_id for job in jobs]

    def counts(self) -> tuple[int, int]:
        """Worker jobs (running, waiting) among those not ended."""
        running = self.running()
        return running, len(self.jobs) - running

    def cancel_waiting(self) -> int:
        """Cancel the jobs that have not started (the study is complete); how many."""
        if self.local:
            return 0
        waiting = [jid for jid in self.jobs if self.states.states.get(jid) == "PENDING"]
        if waiting:
            _call(["scancel", *waiting])
            for jid in waiting:
                self.jobs.pop(jid)
        return len(waiting)

    def _lost(self, job: Any, label: str) -> Outcome:
        state = self.states.states.get(job.job_id, ENDED)
        how = "ended" if state == ENDED else f"ended {state}"
        return Outcome(
            label,
            "failed",
            error=f"job {how} (the trial it was running is retried once its heartbeat is silent and resumes "
            f"its run); {self._where(job)}",
        )


class Progress:
    """What the study holds, read from its storage now and then (every 2 s at first, less often
    as the search ages, at most every 30 s): a line per trial as it is stored, and a line of
    counts when they change."""

    def __init__(self, setup: TuneSetup, study: optuna.Study):
        self.setup = setup
        self.study = study
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.last = ""
        self._held: set[int] = set()
        self._start = time.monotonic()
        self._polled = float("-inf")
        self.complete = False

    def poll(self, jobs: WorkerJobs, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        if not (force or final) and now - self._polled < min(30.0, 2.0 + (now - self._start) / 20):
            return
        self._polled = now
        trials = self.study.get_trials(deepcopy=False)
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                why = self._why(t, trials)
                if t.state == TrialState.FAIL and not why and not final and t.number not in self._held:
                    self._held.add(t.number)  # its retry may be stored a moment later: said next time
                    continue
                self.seen.add(t.number)
                click.echo(describe(self.setup, t) + why)
        count = {s: sum(t.state == s for t in trials) for s in TrialState}
        finished = sum(count[s] for s in FINISHED)
        self.complete = finished >= self.setup.block.trials
        running, waiting = jobs.counts()
        line = (
            f"study {self.setup.study}: {finished} of {self.setup.block.trials} trials finished "
            f"({count[TrialState.PRUNED]} pruned), {count[TrialState.RUNNING]} running, "
            f"{count[TrialState.FAIL]} failed; worker jobs: {running} running, {waiting} waiting"
        )
        if line != self.last:
            click.echo(line)
            self.last = line

    @staticmethod
    def _why(t: optuna.trial.FrozenTrial, trials: list[optuna.trial.FrozenTrial]) -> str:
        if t.state != TrialState.FAIL:
            return ""
        # a retry's history lists the trials it stands for, the one it retries last
        retry = next((r.number for r in trials if r.system_attrs.get("retry_history", [None])[-1] == t.number), None)
        return "" if retry is None else f" (its worker went silent: retried as trial {retry})"


def run_on_cluster(
    setup: TuneSetup, url: str, jobs: int, data_dir: str | None, executor: str, options: SlurmOptions
) -> int:
    """Bring the study to `tune.trials` finished trials with `jobs` worker jobs (fewer when fewer
    trials are missing); returns the exit status."""
    study, missing = missing_trials(setup, url)
    if not missing:
        return 0
    n = min(jobs, missing)
    folder = Path(setup.root) / ".submitit"
    ex = WorkerJobs(folder, data_dir, executor == "submitit_local", options, f"tune-{setup.study}")
    progress = Progress(setup, study)
    failed: list[Outcome] = []
    try:
        ids = ex.submit_workers(setup, url, n)
        what = "SLURM" if executor == "slurm" else "submitit"
        click.echo(f"{n} worker job(s) submitted to {what}: {', '.join(ids)} (logs in {folder})")
        for out in ex.outcomes():
            if out is not None and out.status == "failed":
                failed.append(out)
                click.echo(f"failed: {out.hash}: {out.error}", err=True)
            progress.poll(ex, force=out is not None)
            if progress.complete and ex.cancel_waiting():
                click.echo("the study is complete: worker jobs that had not started are cancelled")
    except KeyboardInterrupt:
        ex.interrupt()
        raise Interrupted(
            f"interrupted: the worker jobs are cancelled; study {setup.study} keeps its finished trials, and the "
            "trials they were running are retried (once their heartbeat is silent) when the same command runs again"
        ) from None
    progress.poll(ex, final=True)
    if failed or not progress.complete:
        head = f"study {setup.study}: {finished_trials(study)} of {setup.block.trials} trials finished"
        if progress.complete:
            click.echo(f"{head}, but {len(failed)} worker job(s) failed (above)", err=True)
        else:
            click.echo(
                f"{head}; {len(failed)} worker job(s) failed (above): rerun the same command to continue", err=True
            )
        return 1
    return 0


__all__ = ["Progress", "TuneWorker", "WorkerJobs", "job_label", "run_on_cluster"]
