"""Models for the SLURM tests (`model.name: slurm_nets:paced_mlp`), which behave differently
inside a SLURM job only (SLURM_JOB_ID set), so the same config trains as a plain MLP locally.

- `paced_mlp` pauses PAUSE_S at each training step, so a run lasts as long as the test needs
  to cancel, time-limit or preempt it mid-way, on a fast CPU or a slow one; its numbers are
  those of the same MLP trained without pauses (the reference the test compares with).
- `failing_mlp` raises at its first training step: a run that fails on the cluster only.
"""

from __future__ import annotations

import itertools
import os
import time

from torch import nn

PAUSE_S = 0.005


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _OnTheCluster(nn.Module):
    """An MLP whose training steps pause (or fail) inside a SLURM job."""

    def __init__(self, widths: list[int], fail: bool):
        super().__init__()
        self.net = _mlp(widths)
        self.fail = fail

    def forward(self, x):
        if self.training and "SLURM_JOB_ID" in os.environ:
            if self.fail:
                raise RuntimeError("injected failure on the cluster")
            time.sleep(PAUSE_S)
        return self.net(x)


def paced_mlp(cfg, input_shape, num_outputs) -> nn.Module:
    return _OnTheCluster(list(cfg.widths), fail=False)


def failing_mlp(cfg, input_shape, num_outputs) -> nn.Module:
    return _OnTheCluster(list(cfg.widths), fail=True)
