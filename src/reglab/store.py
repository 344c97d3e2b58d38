"""Run directories: one per run, named by the content hash of its canonical config.

Layout of ``<root>/<hash>/``::

    config.json        the canonical config, its hash, the full config and the reglab version
    steps.jsonl        per-step metrics (one JSON object a line, appended, fsynced at flushes)
    evals.jsonl        per-evaluation metrics (train/val/test loss and accuracy, regularizer reports)
    summary.json       final status and metrics (written when the run ends)
    error.json         the exception of a failed run (no DONE marker)
    checkpoints/last.pt   resume point (model, optimizer, schedules, RNG, data order)
    checkpoints/best.pt   best weights by the selection metric
    checkpoints/final.pt  weights at the end (after restoring the best, when asked)
    DONE               written last: a run is finished exactly when this file exists

Every file that is rewritten is written atomically (temporary name, fsync, rename), so a kill
at any moment leaves either the old or the new version. A RunDir made with ``sync=False`` skips
the fsyncs (a killed process loses nothing: the data are in the kernel's page cache); its owner
calls `sync_to_disk()` at the points where a machine crash must find the data on disk (the
vectorized group trainer does this before its runs' DONE markers: one sync instead of ~8 fsyncs
a run). A checkpoint left unreadable by a crash before such a sync is treated as absent. The
JSONL logs are append-only; a torn last line (a kill mid-write) is ignored on reading, and a
resume truncates rows past the checkpoint it resumes from.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

DONE = "DONE"


def sync_to_disk() -> None:
    """Flush every written file to disk (one sync for many deferred writes)."""
    os.sync()


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary(path: Path) -> tuple[int, str]:
    """A temporary file beside `path` with the mode a plain open() would give the file (mkstemp
    makes it 0600, which would lock other users out of a shared results root)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any, sync: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode(), sync)


def atomic_torch_save(path: Path, obj: Any, sync: bool = True) -> None:
    fd, tmp = _temporary(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        if sync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL log; a torn last line (kill mid-write) is skipped."""
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class RunDir:
    def __init__(self, path: Path, sync: bool = True):
        self.path = Path(path)
        self.sync = sync
        """fsync every write (True), or leave it to the owner's `sync_to_disk()` (False)."""

    # -- paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def steps_path(self) -> Path:
        return self.path / "steps.jsonl"

    @property
    def evals_path(self) -> Path:
        return self.path / "evals.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "checkpoints"

    def ckpt(self, which: str) -> Path:
        return self.ckpt_dir / f"{which}.pt"

    # -- state
    @property
    def done(self) -> bool:
        return (self.path / DONE).exists()

    def exists(self) -> bool:
        return self.config_path.exists()

    def create(self, config_record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, config_record, self.sync)

    def read_config(self) -> dict:
        return json.loads(self.config_path.read_text())

    def read_summary(self) -> dict | None:
        return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else None

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary, self.sync)

    def write_error(self, error: dict) -> None:
        atomic_write_json(self.path / "error.json", error, self.sync)

    def clear_error(self) -> None:
        (self.path / "error.json").unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> None:
        """Delete the temporary files of atomic writes that a killed process left behind
        (.NAME.XXXX.tmp). Call only while holding the run's lock: then no write is in flight."""
        for p in self.path.rglob(".*.tmp"):
            p.unlink(missing_ok=True)

    def mark_done(self) -> None:
        atomic_write_bytes(self.path / DONE, b"", self.sync)

    # -- logs
    def append(self, path: Path, rows: Iterable[dict]) -> None:
        rows = list(rows)
        if not rows:
            return
        text = "".join(json.dumps(r, default=_json_default, allow_nan=True) + "\n" for r in rows)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if self.sync:
                os.fsync(fh.fileno())

    @property
    def ranks_during_path(self) -> Path:
        return self.path / "analysis" / "ranks_during.jsonl"

    def truncate_logs(self, steps_done: int) -> None:
        """Keep exactly the log rows of a run that has done `steps_done` steps (a resume from a
        checkpoint at `steps_done` replays everything after it). Step rows carry the 0-based
        index of their step, so step k belongs to the first k+1 steps: kept when k < steps_done.
        Evaluation and during-training spectra rows carry the number of steps done when they were
        measured: kept when <= steps_done. Files that do not exist are left absent."""
        keep = {
            self.steps_path: lambda step: step < steps_done,
            self.evals_path: lambda step: step <= steps_done,
            self.ranks_during_path: lambda step: step <= steps_done,
        }
        for p, kept in keep.items():
            if not p.exists():
                continue
            rows = [r for r in read_jsonl(p) if kept(r.get("step", 0))]
            text = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
            atomic_write_bytes(p, text.encode(), self.sync)

    def steps(self) -> list[dict]:
        return read_jsonl(self.steps_path)

    def evals(self) -> list[dict]:
        return read_jsonl(self.evals_path)

    # -- checkpoints
    def save_checkpoint(self, which: str, obj: dict) -> None:
        atomic_torch_save(self.ckpt(which), obj, self.sync)

    def load_checkpoint(self, which: str, map_location: Any = "cpu") -> dict | None:
        """The checkpoint, or None when there is none. A file that is not a torch archive at all
        (empty or cut short: a machine crash before its data reached the disk) counts as none,
        with a warning: the run starts over rather than failing for good."""
        p = self.ckpt(which)
        if not p.exists():
            return None
        if not zipfile.is_zipfile(p):
            warnings.warn(f"{p}: unreadable checkpoint (empty or truncated), ignored", stacklevel=2)
            return None
        try:
            return torch.load(p, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            # reglab writes tensors and plain data only; anything else was put there by someone else.
            raise UserError(
                f"{p}: refused: this checkpoint holds Python objects other than tensors and plain data, "
                "which reglab never loads (reglab did not write it; it may have been tampered with). "
                "Delete it to train the run again from the start"
            ) from None


def run_dirs(root: Path) -> list[RunDir]:
    root = Path(root)
    if not root.is_dir():
        return []
    return [RunDir(p) for p in sorted(root.iterdir()) if (p / "config.json").exists()]


class RunBusy(Exception):
    """Another process holds this run's lock (it is training it now)."""


class RunLock:
    """An exclusive advisory lock on a run directory (fcntl.flock on `<run>/.lock`).

    Two sweeps sharing a results root never train the same run at once: the second one sees
    the lock, defers the run and later finds it DONE. The lock dies with its process, so a
    killed run never leaves a stale lock behind.
    """

    def __init__(self, run_path: Path):
        self.path = Path(run_path) / ".lock"
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
