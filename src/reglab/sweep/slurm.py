"""Sweeps on SLURM through submitit: one array job per sweep, one array task per run.

Each task calls `SlurmRun`, which trains one run with `execute_run` (resuming it, or skipping it
when it is done), so cluster runs write the same run directories as local ones and both can
share one results root. What SLURM can do to a job, and what becomes of the run:

- time limit: the job gets USR2 `signal_delay_s` before it; `SlurmRun` is checkpointable, so
  submitit resubmits the same call and requeues the job, and the requeued job resumes the run
  from its last checkpoint (reglab's resume is exact: nothing is lost or done twice; the work
  since the last checkpoint is done again). After `max_requeues` time limits the run fails.
- preemption (PreemptMode=REQUEUE): SLURM requeues the job itself; same resume.
- `scancel`: the task ends without a result; the sweep reports the run failed with the job's
  state and log, and the same `reglab sweep` later resumes it.

Where each job stands comes from `sacct`, or from `squeue` on clusters without accounting
(`JobStates`), read by reglab itself rather than by submitit's watcher: that one warns at every
poll when sacct fails and never learns that a job which left no result has ended.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable

from ..errors import ConfigError
from .executors import Executor, Outcome, execute_run
from .slurm_options import SlurmOptions

ACTIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SUSPENDED",
    "COMPLETING",
    "CONFIGURING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "SPECIAL_EXIT",
    "RESV_DEL_HOLD",
}
"""Job states that are not an end: the job runs, waits, or is on its way back to the queue."""

RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"}

ENDED = "ENDED"
"""The state of a job squeue no longer lists (how it ended is not known without sacct)."""

MAYBE_FINAL = {"COMPLETED", "FAILED", "PREEMPTED", "NODE_FAIL", ENDED, None}
"""Ends that may not be the last word: the result file may be on its way (a slow shared
filesystem), or SLURM may requeue the job (preemption, a lost node). They count once they last
GRACE seconds. None: a local job, whose state is not known."""


class SlurmRun(Checkpointable):
    """What each array task runs: one run, trained (or resumed, or skipped) by execute_run.

    Checkpointable: at the time-limit warning submitit calls `checkpoint`, which resubmits this
    same call, and requeues the job. That is all a checkpoint needs to be here, because the run
    directory holds the run's state and the next call resumes from it exactly."""

    def __call__(self, config: dict, data_dir: str | None, threads: int | None) -> dict:
        out = execute_run(config, data_dir, threads)
        if out["status"] == "failed":  # the job's log is where a cluster user looks first
            error = Path(config["output"]) / out["hash"] / "error.json"
            trace = json.loads(error.read_text()).get("traceback", "") if error.is_file() else ""
            print(f"run {out['hash']} failed: {out['error']}\n{trace}", file=sys.stderr, flush=True)
        return out


class JobStates:
    """The state of each job of the sweep (ids "ARRAY_TASK"): from sacct, or, where sacct fails
    (no accounting), from squeue, saying once why. Polled every 2 s at first, then less often
    as the sweep ages, up to every `most` seconds, to spare the controller of a busy cluster."""

    def __init__(self, most: float = 30.0):
        self.most = most
        self.states: dict[str, str] = {}
        self.at = float("-inf")
        """When `states` was last read from the cluster."""
        self._start = time.monotonic()
        self._polled = float("-inf")
        self._use_sacct = True

    def poll(self, job_ids: Iterable[str], force: bool = False) -> dict[str, str]:
        ids = sorted(set(job_ids))
        now = time.monotonic()
        every = min(self.most, 2.0 + (now - self._start) / 20)
        if ids and (force or now - self._polled >= every):
            self._polled = now
            arrays = sorted({j.split("_")[0] for j in ids})
            got = self._sacct(arrays) if self._use_sacct else None
            if got is None:
                got = self._squeue(ids)
            if got:
                self.states.update(got)
                self.at = now
        return self.states

    def _sacct(self, arrays: list[str]) -> dict[str, str] | None:
        cmd = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", *(f"-j{a}" for a in arrays)]
        p = _call(cmd)
        if p is None or p.returncode != 0:
            why = "not found" if p is None else ((p.stderr or p.stdout).strip().splitlines() or ["failed"])[-1]
            print(f"note: sacct: {why}; following the jobs with squeue instead", file=sys.stderr, flush=True)
            self._use_sacct = False
            return None
        return parse_states(p.stdout)

    def _squeue(self, ids: list[str]) -> dict[str, str]:
        # -t all: also the jobs that ended recently, so how they ended is known
        p = _call(["squeue", "-h", "-r", "-t", "all", "-u", str(os.getuid()), "-o", "%i|%T"])
        if p is None or p.returncode != 0:
            return {}  # neither answers: keep what was known, and wait
        listed = parse_states(p.stdout)
        return {j: listed.get(j, ENDED) for j in ids}


def _call(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


_RANGE = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")


def parse_states(text: str) -> dict[str, str]:
    """ "ID|STATE" lines (sacct -P, squeue -o "%i|%T") -> {"ARRAY_TASK": STATE}, pending
    ranges ("12_[3-5%2]") expanded, "CANCELLED by 0" read as CANCELLED."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        jid, _, state = line.strip().partition("|")
        if not jid or not state or "." in jid:
            continue
        state = state.split()[0]
        m = _RANGE.match(jid)
        if m is None:
            out[jid] = state
            continue
        for part in m.group(2).split(","):
            lo, _, hi = part.partition("-")
            for task in range(int(lo), int(hi or lo) + 1):
                out[f"{m.group(1)}_{task}"] = state
    return out


class SubmititExecutor(Executor):
    """The sweep's runs as one SLURM array job (or submitit's LocalExecutor, which needs no
    cluster). Results come back through submitit's pickles in `<root>/.submitit/`; a job that
    ends without one (cancelled, killed, its node lost) is reported as a failed run with its
    state and the path of its log."""

    GRACE = 15.0
    """Seconds an end in MAYBE_FINAL must last before the run is reported lost."""

    def __init__(
        self,
        folder: Path,
        data_dir: str | None,
        local: bool,
        options: SlurmOptions,
        sweep_name: str = "sweep",
    ):
        self.data_dir = data_dir
        self.local = local
        self.threads = options.threads
        self.ex: submitit.LocalExecutor | submitit.SlurmExecutor
        if local:
            self.ex = submitit.LocalExecutor(folder=str(folder), max_num_timeout=options.max_requeues)
            self.ex.update_parameters(timeout_min=options.time_min)
        else:
            try:
                self.ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=options.max_requeues)
            except RuntimeError:  # no srun: not a machine of a SLURM cluster
                raise ConfigError(
                    "--executor", "slurm: no srun on PATH; run the sweep on a machine of the cluster"
                ) from None
            self.ex.update_parameters(**options.submitit_parameters(sweep_name))
        self.jobs: dict[str, tuple[Any, str]] = {}
        """job id -> (submitit job, run hash), for the jobs not reported yet."""
        self.states = JobStates()
        self._ended_at: dict[str, float] = {}

    def submit(self, configs):
        from ..config import config_hash
        from ..validation import validate

        if not configs:
            return
        n = len(configs)
        jobs = self.ex.map_array(SlurmRun(), configs, [self.data_dir] * n, [self.threads] * n)
        for job, cfg in zip(jobs, configs):
            self.jobs[job.job_id] = (job, config_hash(validate(cfg)))

    def outcomes(self) -> Iterator[Outcome | None]:
        while self.jobs:
            finished = [jid for jid, (job, _) in self.jobs.items() if job.paths.result_pickle.exists()]
            for jid in finished:
                job, h = self.jobs.pop(jid)
                yield self._result(job, h)
            for jid in self._ended_without_result():
                job, h = self.jobs.pop(jid)
                yield self._lost(job, h)
            if not finished:
                time.sleep(0.5)
                yield None

    def running(self) -> int:
        if self.local:
            return len(self.jobs)
        return sum(self.states.states.get(jid) in RUNNING for jid in self.jobs)

    def interrupt(self) -> None:
        """Ctrl-C: cancel the sweep's jobs (each run keeps its last checkpoint)."""
        if self.local:
            for job, _ in self.jobs.values():
                job.cancel(check=False)
        elif self.jobs:
            arrays = sorted({jid.split("_")[0] for jid in self.jobs})
            _call(["scancel", *arrays])
        self.jobs.clear()

    # ------------------------------------------------------------------ outcomes
    def _ended_without_result(self) -> list[str]:
        """Jobs that ended and left no result: at once when SLURM ended them for good
        (cancelled, out of time or memory), after GRACE for an end that may not be the last
        word (MAYBE_FINAL), judged on states read at least GRACE after the end was first seen."""
        if self.local:
            now = time.monotonic()
            states: dict[str, str] = {}
            ended = {jid for jid, (job, _) in self.jobs.items() if job.done()}
        else:
            states = self.states.poll(self.jobs)
            now = self.states.at
            ended = {jid for jid in self.jobs if jid in states and states[jid] not in ACTIVE}
        for jid in list(self._ended_at):
            if jid not in ended:
                del self._ended_at[jid]  # back in the queue after all
        for jid in ended:
            self._ended_at.setdefault(jid, now)
        return [
            jid
            for jid in ended
            if (states.get(jid) not in MAYBE_FINAL or now - self._ended_at[jid] >= self.GRACE)
            and not self.jobs[jid][0].paths.result_pickle.exists()
        ]

    def _result(self, job: Any, h: str) -> Outcome:
        self._ended_at.pop(job.job_id, None)
        try:
            out = Outcome(**job.result())
        except Exception as e:  # the task raised outside the run (e.g. it timed out too often)
            last = [line for line in str(e).splitlines() if line.strip() and not line.startswith("-")]
            why = next((line for line in reversed(last) if "Error" in line), last[-1] if last else type(e).__name__)
            return Outcome(h, "failed", error=f"{why.strip()}; {self._where(job)}")
        if out.status == "failed":
            out.error = f"{out.error}; {self._where(job)}"
        return out

    def _lost(self, job: Any, h: str) -> Outcome:
        state = self.states.states.get(job.job_id, ENDED)
        how = "ended" if state == ENDED else f"ended {state}"
        return Outcome(
            h,
            "failed",
            error=f"job {how} without a result (the run keeps its last checkpoint; the same sweep resumes it); "
            + self._where(job),
        )

    def _where(self, job: Any) -> str:
        kind = "submitit job" if self.local else "SLURM job"
        return f"{kind} {job.job_id}, log {job.paths.stderr}"


__all__ = ["JobStates", "SlurmRun", "SubmititExecutor", "parse_states"]
