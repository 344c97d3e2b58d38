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


@pytest.fixture
def two_layer_ones():
    """W1 = ones(2, 3) (n1 = 6), W2 = [[3, 4]] (n2 = 25): the penalties' hand-computed examples."""
    from torch import nn

    from penalty_helpers import set_weights

    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    set_weights(model[0], torch.ones(2, 3), [10.0, 10.0])
    set_weights(model[2], [[3.0, 4.0]], [10.0])
    return model
