"""Where a study lives, and how a dead worker's trial is found.

Three kinds of storage: SQLite under the results root (`<root>/tune/<study>.db`, the default),
any SQLAlchemy URL (`--storage postgresql://...`), and Optuna's journal file
(`--storage journal:PATH`, for file systems where SQLite's locks are unreliable, such as NFS).
Worker jobs on a SLURM cluster share the study from several nodes, so there it is a journal file
on the shared filesystem (`<root>/tune/<study>.journal`, the default) or a database server, and
never SQLite (`cluster_url`).

A worker killed mid-trial (SIGKILL, a lost node) leaves its trial RUNNING forever unless someone
notices. Each running trial therefore beats a heartbeat; a trial silent for longer than the
grace period is marked FAIL by the next worker that starts a trial, and
`RetryHeartbeatStaleTrialCallback` queues a copy of it (same parameters, so the same run config
and hash): the retry resumes the dead trial's run directory from its last checkpoint. Optuna's
RDB storage has heartbeats built in. Its journal storage does not (Optuna 5.0), so
`HeartbeatJournalStorage` adds them with one small file per running trial beside the journal,
whose modification time is the last beat: the journal itself stays free of a line per beat.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError
from .spec import TuneSetup

JOURNAL = "journal:"
STORAGE_FORMS = ("sqlite:///PATH", "an SQLAlchemy URL (postgresql://...)", "journal:PATH")


def default_url(setup: TuneSetup) -> str:
    return f"sqlite:///{(setup.root / 'tune' / f'{setup.study}.db').resolve()}"


def journal_url(setup: TuneSetup) -> str:
    return f"{JOURNAL}{(setup.root / 'tune' / f'{setup.study}.journal').resolve()}"


def choose_url(setup: TuneSetup, storage: str | None, cluster: bool = False) -> str:
    """The study's storage: `storage` when given (checked with `cluster_url` for worker jobs),
    else the study's default file. Locally that is the SQLite file, or the journal when only it
    exists (a study run on SLURM, continued or shown here); for worker jobs, the journal."""
    if storage is not None:
        return cluster_url(storage) if cluster else storage
    if cluster:
        return journal_url(setup)
    sqlite, journal = default_url(setup), journal_url(setup)
    if not Path(sqlite[len("sqlite:///") :]).exists() and Path(journal[len(JOURNAL) :]).exists():
        return journal
    return sqlite


def cluster_url(url: str) -> str:
    """A storage that worker jobs on other nodes can share: a journal file (its path made
    absolute: the jobs may start elsewhere) or a database server; SQLite is refused."""
    if url.startswith(JOURNAL):
        return f"{JOURNAL}{Path(url[len(JOURNAL) :]).expanduser().resolve()}"
    if url.split(":", 1)[0].split("+", 1)[0] == "sqlite":
        raise ConfigError(
            "--storage",
            "SQLite cannot hold a study shared by SLURM jobs: its file locks are unsafe on the network "
            "filesystems that nodes share (NFS, Lustre); give journal:PATH on the shared filesystem "
            "(the default without --storage) or a database server's URL",
            ["journal:PATH", "postgresql://...", "mysql://..."],
        )
    return url


def storage_file(url: str) -> Path | None:
    """The file a local storage keeps the study in (None for a database server)."""
    if url.startswith(JOURNAL):
        return Path(url[len(JOURNAL) :])
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


def open_storage(setup: TuneSetup, url: str) -> BaseStorage:
    """The storage at `url`, with heartbeats and retries of dead trials switched on (features
    Optuna still calls experimental, and warns about each time; reglab relies on them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _open(setup, url)


def _open(setup: TuneSetup, url: str) -> BaseStorage:
    b = setup.block
    grace = b.grace_period or 2 * b.heartbeat_interval
    retry = RetryHeartbeatStaleTrialCallback(max_retry=b.max_retry)
    path = storage_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith(JOURNAL):
        assert path is not None
        return HeartbeatJournalStorage(path, b.heartbeat_interval, grace, retry)
    try:
        return RDBStorage(
            url, heartbeat_interval=b.heartbeat_interval, grace_period=grace, heartbeat_stale_trial_callback=retry
        )
    except (ImportError, ValueError) as e:  # an unknown dialect or a malformed URL
        raise ConfigError("--storage", f"cannot open {url!r}: {e}", STORAGE_FORMS) from None
    except Exception as e:  # SQLAlchemy's ArgumentError, OperationalError: not importable without it
        if type(e).__module__.startswith("sqlalchemy"):
            raise ConfigError("--storage", f"cannot open {url!r}: {e}", STORAGE_FORMS) from None
        raise


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file storage, with heartbeats kept as files' modification times in
    `<journal>.heartbeats/<trial id>` (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        interval: int,
        grace: int,
        callback: Callable[[optuna.Study, FrozenTrial], None],
    ) -> None:
        super().__init__(JournalFileBackend(str(path)))
        self._beats = Path(f"{path}.heartbeats")
        self._beats.mkdir(exist_ok=True)
        self._interval = interval
        self._grace = grace
        self._callback = callback

    def record_heartbeat(self, trial_id: int) -> None:
        (self._beats / str(trial_id)).touch()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return []
        now, stale = self._now(), []
        for t in running:
            try:
                last = (self._beats / str(t._trial_id)).stat().st_mtime
            except FileNotFoundError:  # died before its first beat
                last = t.datetime_start.timestamp() if t.datetime_start else now
            if now - last > self._grace:
                stale.append(t._trial_id)
        return stale

    def _now(self) -> float:
        """The time on the clock that stamps the beats: a file touched now, beside them. On a
        network filesystem the server sets modification times, so the beats of workers on
        other nodes are judged without trusting that every node's clock agrees."""
        probe = self._beats / f".now-{socket.gethostname()}-{os.getpid()}"
        try:
            probe.touch()
            now = probe.stat().st_mtime
            probe.unlink()
            return now
        except OSError:
            return time.time()

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._callback


__all__ = [
    "HeartbeatJournalStorage",
    "choose_url",
    "cluster_url",
    "default_url",
    "journal_url",
    "open_storage",
    "storage_file",
]
