"""Datasets (readers, registry, download) and the tasks built from them.

`DATASETS` names every dataset; `build_task(cfg.data, seed, device)` turns one into the
tensors a run trains on; `resolve_data_dir` and `dataset_status` serve `reglab data`.
"""

from .augment import random_crop_flip
from .datasets import DATASETS, data_dir_for, dataset_status
from .location import data_search_path, resolve_data_dir
from .spec import DatasetSpec, RawSplits
from .tasks import TaskData, build_task

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "RawSplits",
    "TaskData",
    "build_task",
    "data_dir_for",
    "data_search_path",
    "dataset_status",
    "random_crop_flip",
    "resolve_data_dir",
]
