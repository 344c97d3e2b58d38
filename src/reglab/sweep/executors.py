"""Where runs execute: inline, or a local process pool (SLURM: sweep/slurm.py).

Every executor calls the same function, `execute_run`, with a run's config as plain JSON data,
so local and cluster runs write identical run directories and can mix on a shared filesystem.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

EXECUTORS = ("inline", "process", "slurm", "submitit_local")


@dataclass
class Outcome:
    hash: str
    status: str
    """done | diverged | skipped | busy | failed | interrupted"""
    wall: float = 0.0
    error: str | None = None


# Ctrl-C in a pool worker. The terminal sends SIGINT to the whole process group, and the sweep
# forwards it to its workers when only it got one. A worker then stops the run it is training
# (KeyboardInterrupt at the next Python instruction: every run file is written atomically, so the
# run resumes from its last checkpoint) and answers every run still queued to it as interrupted,
# without starting it. Outside a run the signal only sets the flag: an idle worker must not die
# with a traceback while it waits for work.
_in_worker = False
_stopping = False
_in_run = False


def _on_interrupt(signum: int, frame: object) -> None:
    global _stopping
    _stopping = True
    if _in_run:
        raise KeyboardInterrupt


def _worker_start(parent_pid: int) -> None:
    global _in_worker
    _in_worker = True
    signal.signal(signal.SIGINT, _on_interrupt)
    _exit_with_parent(parent_pid)


def execute_run(config: dict, data_dir: str | None = None, threads: int | None = None) -> dict:
    """Train one run (resuming or skipping as needed) and say how it went. Never raises for a
    failing run: the failure is recorded (error.json in the run directory) and returned. In a
    pool worker an interrupt is returned as status "interrupted"; elsewhere it propagates."""
    import torch

    from ..config import config_hash
    from ..store import RunBusy
    from ..train import run
    from ..validation import validate

    global _in_run
    if threads:
        torch.set_num_threads(threads)
    cfg = validate(config)
    h = config_hash(cfg)
    if _stopping:
        return {"hash": h, "status": "interrupted", "wall": 0.0, "error": None}
    t0 = time.perf_counter()
    _in_run = _in_worker
    try:
        res = run(cfg, data_dir=data_dir, progress=False)
    except RunBusy:
        return {"hash": h, "status": "busy", "wall": 0.0, "error": None}
    except KeyboardInterrupt:
        if not _in_worker:
            raise
        return {"hash": h, "status": "interrupted", "wall": time.perf_counter() - t0, "error": None}
    except Exception as e:  # a failing run must not stop the sweep
        return {"hash": h, "status": "failed", "wall": time.perf_counter() - t0, "error": f"{type(e).__name__}: {e}"}
    finally:
        _in_run = False
    status = "skipped" if res.skipped else res.status
    return {"hash": h, "status": status, "wall": time.perf_counter() - t0, "error": None}


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of `jobs` concurrent workers: the cores divided among them."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


class Executor:
    """Submit runs, then iterate over outcomes as they finish."""

    def submit(self, configs: list[dict]) -> None:
        raise NotImplementedError

    def outcomes(self) -> Iterator[Outcome | None]:
        """Outcomes as runs finish; None between them now and then, so the display can refresh."""
        raise NotImplementedError

    def running(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def interrupt(self) -> None:
        """Ctrl-C: start nothing more, stop what runs at a safe point, return promptly."""
        self.close()


class InlineExecutor(Executor):
    """One run after the other in this process (the simplest to debug)."""

    def __init__(self, data_dir: str | None):
        self.data_dir = data_dir
        self.queue: list[dict] = []
        self._running = 0

    def submit(self, configs):
        self.queue.extend(configs)

    def outcomes(self):
        while self.queue:
            cfg = self.queue.pop(0)
            self._running = 1
            out = execute_run(cfg, self.data_dir)
            self._running = 0
            yield Outcome(**out)

    def running(self):
        return self._running


def _exit_with_parent(parent_pid: int, poll: float = 0.5) -> None:
    """Pool worker start-up: end this worker as soon as the sweep process is gone, however it
    ended (SIGKILL, SIGTERM, a crash). Otherwise an orphaned worker keeps training its run and
    holding its lock, and a restarted sweep finds the run busy. Exiting mid-run loses nothing:
    run files are written atomically and the run resumes from its last checkpoint."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class ProcessExecutor(Executor):
    """A pool of worker processes (spawned, so no state leaks between parent and workers; each
    exits when the sweep process does)."""

    def __init__(self, jobs: int, data_dir: str | None):
        import multiprocessing as mp

        self.jobs = jobs
        self.data_dir = data_dir
        self.threads = threads_per_job(jobs)
        self.pool = ProcessPoolExecutor(
            max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_start, initargs=(os.getpid(),)
        )
        self.pending: set[Future] = set()

    def submit(self, configs):
        for c in configs:
            self.pending.add(self.pool.submit(execute_run, c, self.data_dir, self.threads))

    def outcomes(self):
        while self.pending:
            done, self.pending = wait(self.pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                yield Outcome(**f.result())
            if not done:
                yield None  # a tick, so the display can refresh

    def running(self):
        return min(self.jobs, len(self.pending))

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def interrupt(self):
        for f in self.pending:
            f.cancel()
        # Forward the interrupt to the workers, which did not get it when only this process was
        # signalled (kill -INT); a worker signalled twice handles it the same way.
        for p in list(getattr(self.pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError, AttributeError, TypeError):
                os.kill(p.pid, signal.SIGINT)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending = set()
