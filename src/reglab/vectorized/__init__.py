"""Vectorized training: many small compatible runs in one process with torch.func.vmap.

- `plan_groups(runs)` -> (groups, singles with reasons); `describe_plan` for the sweep's output;
- `train_group(runs, root, data_dir)` -> one execute_run-like dict per run.

Each run's directory is written exactly as the one-by-one trainer writes it (see trainer.py).
"""

from .grouping import (
    MAX_GROUP,
    MAX_PARAMS,
    MAX_PARAMS_ONE_THREAD,
    describe_plan,
    group_key,
    plan_groups,
    vectorizes,
    why_not_vectorized,
)
from .trainer import GroupStep, train_group, train_together

__all__ = [
    "MAX_GROUP",
    "MAX_PARAMS",
    "MAX_PARAMS_ONE_THREAD",
    "GroupStep",
    "describe_plan",
    "group_key",
    "plan_groups",
    "train_group",
    "train_together",
    "vectorizes",
    "why_not_vectorized",
]
