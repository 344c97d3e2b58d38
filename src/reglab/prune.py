"""What a finished run no longer needs on disk, and removing it.

A finished run (DONE) is never resumed, so its resume point (checkpoints/last.pt) and its best
weights (checkpoints/best.pt, already restored into final.pt when asked) can go. Kept always: the
final weights (`reglab landscape RUN` reads them), the logs, the analysis and everything a report
reads. Weight snapshots (snap_*.pt, the trajectory of PCA landscapes) go only when asked.
Unfinished runs are never touched (their last.pt is how they resume), and neither is a run that
another process holds (its lock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .store import RunDir, RunLock


@dataclass
class PruneResult:
    files: list[Path] = field(default_factory=list)
    bytes: int = 0
    runs: int = 0
    """Finished runs that had something to remove."""
    busy: list[Path] = field(default_factory=list)


def removable(rd: RunDir, snapshots: bool = False) -> list[Path]:
    """The files of a finished run that nothing reads any more (none for an unfinished run)."""
    if not rd.done:
        return []
    out = [rd.ckpt(which) for which in ("last", "best")]
    if snapshots:
        out += sorted(rd.ckpt_dir.glob("snap_*.pt"))
    return [p for p in out if p.is_file()]


def prune(dirs: list[RunDir], snapshots: bool = False, dry_run: bool = False) -> PruneResult:
    res = PruneResult()
    for rd in dirs:
        lock = RunLock(rd.path)
        if not lock.acquire(blocking=False):
            res.busy.append(rd.path)
            continue
        with lock:
            files = removable(rd, snapshots)
            if files:
                res.runs += 1
            for p in files:
                res.bytes += p.stat().st_size
                res.files.append(p)
                if not dry_run:
                    p.unlink()
    return res


def apply_keep_policy(rd: RunDir, policy: str) -> None:
    """train.keep_checkpoints after a run's DONE marker: "final" removes what prune would."""
    if policy == "final":
        for p in removable(rd):
            p.unlink(missing_ok=True)
