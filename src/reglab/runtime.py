"""Seeds, device selection, deterministic algorithms, and the process's memory allocator."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import random
import sys
from collections.abc import Iterator

import numpy as np
import torch

from .errors import ConfigError


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is repeatable on one machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if torch.cuda.is_available() or _has_mps():
        torch.manual_seed(seed)  # also seeds every accelerator
    else:
        # the same CPU generator state; torch.manual_seed would also queue a lazy CUDA seeding
        # that records a Python stack trace each call (~1.4 ms: a tenth of a small run's setup)
        torch.default_generator.manual_seed(seed)


def _has_mps() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """auto picks cuda, then mps, then cpu; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{name} requested but CUDA is not available", ["auto", "cpu"])
        idx = int(name[5:]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            raise ConfigError("device", f"{name} requested but only {torch.cuda.device_count()} CUDA devices exist")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device", "mps requested but not available", ["auto", "cpu"])
    return torch.device(name)


CUBLAS_WORKSPACE = ":4096:8"
"""The CUBLAS_WORKSPACE_CONFIG that makes cuBLAS deterministic (one of the two values torch accepts)."""


def request_deterministic_cublas(device: torch.device) -> None:
    """Set CUBLAS_WORKSPACE_CONFIG (unless already set) for a deterministic run on CUDA. cuBLAS
    reads it when it creates a handle, on a process's first matrix product on a device, so this
    is called when the run is prepared, before it computes anything; a process that used cuBLAS
    before keeps its handles (for full effect set the variable before starting Python)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device) -> Iterator[None]:
    """train.deterministic: inside the block, torch.use_deterministic_algorithms(True) (an
    operation without a deterministic implementation raises, warn_only=False), cuDNN deterministic
    and not benchmarking, CUBLAS_WORKSPACE_CONFIG on CUDA; the previous settings come back after
    it (a sweep's next run in the process trains with its own). With `enabled` False nothing is
    touched: the process's own settings apply."""
    if not enabled:
        yield
        return
    request_deterministic_cublas(device)
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True, warn_only=False)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]


def deterministic_now() -> bool:
    """Whether torch runs with deterministic algorithms now (what a run's provenance records)."""
    return torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 1 << 30
_allocator_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks up to 1 GiB for reuse instead of returning them to
    the OS at once. By default every block above its mmap threshold (128 KiB, adapting up to
    32 MiB) is a fresh mmap, so each large activation tensor of a CPU forward pass costs page
    faults and system time on every batch; with this call, evaluating CIFAR with study 3's ConvNet
    on a CPU is about 3x faster, most of the time saved being kernel time. The numbers trained are
    unchanged; the cost is that the process's resident memory stays at its peak.

    Linux with glibc only (elsewhere a no-op); REGLAB_KEEP_FREED_MEMORY=0 turns it off. Called by
    `train.prepare` and the CLI; idempotent. Returns whether the allocator is tuned."""
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get("REGLAB_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (
            libc.mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES) == 1
        )
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    _allocator_tuned = ok
    return ok
