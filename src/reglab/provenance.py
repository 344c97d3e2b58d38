"""What computed a run: reglab's compute version, the training path, device, dtype, precision,
whether algorithms were deterministic, and torch.

Every start of training (a fresh run or a resume) appends one *segment* to the run's record
(``trained_by`` in its checkpoints and summary), so a run resumed on another path or machine
says so. COMPUTE_VERSION names what reglab computes for a given config: it is bumped, with a
line in COMPUTE_HISTORY, by any change that alters the numbers of an existing config (a fixed
bug, a changed default route). Runs computed by an older version are flagged as stale by
`reglab runs`, reports and sweeps; `reglab sweep --rerun-stale` recomputes them.
"""

from __future__ import annotations

from typing import Any

import torch

from . import __version__

COMPUTE_VERSION = 1
COMPUTE_HISTORY = {
    1: "reglab 0.1.0 (runs that record no compute version were computed by it)",
}

ONE_BY_ONE = "one-by-one"
VECTORIZED = "vectorized"


def segment(
    path: str,
    device: torch.device | str,
    dtype: torch.dtype,
    from_step: int,
    group_size: int = 1,
    precision: str = "fp32",
    deterministic: bool = False,
) -> dict:
    """The record of one start of training. `dtype` is the parameters' (the master weights');
    `precision` the training forward's (train.precision: bf16 under autocast); `deterministic`
    whether torch ran deterministic algorithms (train.deterministic, or the process's setting)."""
    return {
        "path": path,
        "group_size": group_size,
        "from_step": from_step,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "precision": precision,
        "deterministic": deterministic,
        # CPU results depend on the thread count (it changes the order of float reductions).
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),  # TorchVersion, a str subclass that weights_only refuses
        "reglab": __version__,
        "compute_version": COMPUTE_VERSION,
    }


def compute_version(summary: dict[str, Any] | None) -> int:
    """The oldest compute version that trained a run (1 for runs that record none)."""
    segments = (summary or {}).get("trained_by") or []
    return min((int(s.get("compute_version", 1)) for s in segments), default=1)


def trained_on(summary: dict[str, Any] | None) -> str:
    """one-by-one, vectorized, mixed (resumed on the other path), or unknown (not recorded)."""
    paths = {s.get("path") for s in (summary or {}).get("trained_by") or []}
    if not paths:
        return "unknown"
    return paths.pop() if len(paths) == 1 else "mixed"


def is_stale(summary: dict[str, Any] | None) -> bool:
    """Whether a finished run was computed by an older compute version than this reglab's."""
    return compute_version(summary) < COMPUTE_VERSION
