"""Run a study: one worker in this process, or N local worker processes sharing the study.

Every worker runs Optuna's own loop (`Study.optimize`, which keeps the heartbeats and fails
dead workers' trials before each new one) until the study holds `tune.trials` finished
(complete or pruned) trials, counted over the whole study: a restarted `reglab tune` continues
from what is stored and trains only what is missing. Workers that finish trials at the same
moment may each start one more, so a study run with -j N can end with up to N - 1 trials beyond
`tune.trials`; none is lost.

Worker processes are spawned (no forked torch state), each with cores / N torch threads, and
exit as soon as this process is gone, so a killed `reglab tune` leaves no orphan training; the
trials they held are found by their heartbeats and retried by the next `reglab tune`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time

import click
from optuna.study import MaxTrialsCallback

from ..errors import Interrupted, UserError
from .objective import Objective, RunDiverged, describe
from .spec import TuneSetup
from .study import FINISHED, finished_trials, missing_trials, open_study, quiet_optuna


def run_study(setup: TuneSetup, url: str, jobs: int = 1, data_dir: str | None = None) -> int:
    """Bring the study to `tune.trials` finished trials; returns the exit status (0, or 1 when
    a worker failed)."""
    _study, missing = missing_trials(setup, url)
    if not missing:
        return 0
    if jobs == 1:
        work(setup, url, data_dir, worker=0)
        return 0
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(setup, url, data_dir, k, threads, os.getpid()), name=f"tune-{k}")
        for k in range(jobs)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join()
        raise Interrupted(
            f"interrupted: study {setup.study} keeps its finished trials; rerun the same command to continue"
        ) from None
    return 0 if all(p.exitcode == 0 for p in procs) else 1


def work(setup: TuneSetup, url: str, data_dir: str | None, worker: int, label: str | None = None) -> None:
    """One worker's loop over trials, in this process; `label` names it in each trial it runs
    (user attribute `worker`)."""
    study = open_study(setup, url, worker=worker, create=False)
    target = setup.block.trials
    if finished_trials(study) >= target:
        return

    def say(study, trial) -> None:
        click.echo(describe(setup, trial))

    study.optimize(
        Objective(setup, data_dir, label),
        callbacks=[say, MaxTrialsCallback(target, states=FINISHED)],
        catch=(RunDiverged,),
    )


def _worker_main(setup: TuneSetup, url: str, data_dir: str | None, worker: int, threads: int, parent: int) -> None:
    """Entry point of a spawned worker process."""
    import torch

    _exit_with_parent(parent)
    torch.set_num_threads(threads)
    quiet_optuna()
    try:
        work(setup, url, data_dir, worker)
    except UserError as e:
        click.echo(f"error: worker {worker}: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    # Every file and every trial is stored by now; the interpreter's teardown of torch would
    # only add seconds before `reglab tune` hears that this worker is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _exit_with_parent(parent: int, poll: float = 0.5) -> None:
    """End this worker as soon as `reglab tune` is gone, however it ended. Exiting mid-trial
    loses nothing: the run resumes from its checkpoint and the trial is retried (heartbeat)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


__all__ = ["run_study", "work"]
