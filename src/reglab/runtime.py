"""Seeds and device selection."""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is repeatable on one machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


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
