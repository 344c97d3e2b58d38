"""Shared fixtures. Real-data tests read REGLAB_DATA and skip with a reason when it is unset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def real_data_dir() -> Path:
    """The directory with the real datasets (CI sets REGLAB_DATA=../shared/data)."""
    d = os.environ.get("REGLAB_DATA")
    if not d:
        pytest.skip("real-data test: set REGLAB_DATA to the data directory (CI uses ../shared/data)")
    p = Path(d)
    if not p.is_dir():
        pytest.skip(f"real-data test: REGLAB_DATA={d} is not a directory")
    return p
