"""From a dataset to the tensors one run trains on: the task pipeline of `build_task`.

Steps, in this order (each one documented on its function):
load -> train/test limit -> binary pair -> per-class subset -> validation split
-> label noise (training part only) -> normalization -> float32 on the device.

Labels are class indices 0..K-1 all the way through (for a binary pair: 0 = first class,
1 = second); only at the end do binary targets become float -1/+1. That way every step,
label noise included, is written once for both kinds of task.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ..config import DataConfig
from ..errors import ConfigError
from .augment import make_augment
from .datasets import DATASETS
from .location import resolve_data_dir
from .spec import DatasetSpec, RawSplits


@dataclass
class TaskData:
    """Everything a run needs from the data, as tensors on the training device."""

    x_train: torch.Tensor  # float32, normalized; (N, C, H, W) images or (N, D) vectors
    y_train: torch.Tensor  # int64 classes, or float32 -1/+1 for binary tasks
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str  # "classes" or "binary"
    num_outputs: int  # number of classes, or 1 for binary
    input_shape: tuple[int, ...]  # shape of one example
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None
    meta: dict  # JSON-serializable description (dataset, source, sizes, normalization, noise)
    flipped: torch.Tensor | None = field(default=None)
    """Indices (into x_train/y_train, on the CPU) whose labels label noise changed."""


# ----------------------------------------------------------------------------- steps


def select_pair(y: torch.Tensor, pair: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of examples in the two classes, and their labels remapped to 0 (first) / 1 (second)."""
    a, b = pair
    keep = ((y == a) | (y == b)).nonzero().squeeze(1)
    return keep, (y[keep] == b).long()


def per_class_indices(y: torch.Tensor, n: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Permute the set with `seed`, take the first n of each class in that order.

    Returns (subset, rest), both in permutation order; together they cover every index once.
    A class with fewer than n examples is a ConfigError on data.per_class.
    """
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    y_perm = y[perm]
    chosen = torch.zeros(len(y), dtype=torch.bool)
    counts = torch.bincount(y, minlength=num_classes)
    for c in range(num_classes):
        if counts[c] < n:
            raise ConfigError(
                "data.per_class",
                f"{n} examples per class asked, but class {c} has only {int(counts[c])} training examples",
                [f"1..{int(counts.min())}"] if counts.min() > 0 else None,
            )
        chosen[(y_perm == c).nonzero().squeeze(1)[:n]] = True
    return perm[chosen], perm[~chosen]


def validation_count(cfg: DataConfig, n: int) -> int:
    """How many training examples go to validation (val_size, or floor(val_fraction * n))."""
    if cfg.val_size is not None:
        if cfg.val_size >= n:
            raise ConfigError("data.val_size", f"must be smaller than the training set ({n} examples)", [f"1..{n - 1}"])
        return cfg.val_size
    if cfg.val_fraction == 0:
        return 0
    k = math.floor(Fraction(repr(cfg.val_fraction)) * n)
    if k == 0:
        raise ConfigError("data.val_fraction", f"{cfg.val_fraction} of {n} examples is no example at all")
    return k


def split_indices(n: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices: disjoint, covering range(n), seeded.

    The same indices as torch.utils.data.random_split(range(n), [n - n_val, n_val]) with a
    generator seeded by `seed`, so splits made that way in earlier work are reproduced exactly.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - n_val], perm[n - n_val :]


def flip_labels(y: torch.Tensor, fraction: float, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Change exactly floor(fraction * N) distinct labels to another class, uniformly.

    The fraction is read as the decimal it was written as (0.29 of 100 flips 29, not 28).
    With two classes the "other class" is the only one, so binary labels are negated.
    Returns the new labels (a copy) and the sorted flipped indices.
    """
    n = len(y)
    k = math.floor(Fraction(repr(float(fraction))) * n)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:k]
    y = y.clone()
    if k:
        shift = torch.randint(1, num_classes, (k,), generator=g)  # never 0: never the same class
        y[idx] = (y[idx] + shift) % num_classes
    return y, idx.sort().values


def normalization(cfg: DataConfig, spec: DatasetSpec, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std applied after scaling pixels to [0, 1] (identity for "none")."""
    if cfg.normalize == "none":
        return [0.0] * channels, [1.0] * channels
    if cfg.normalize == "dataset":
        return list(spec.mean), list(spec.std)
    assert cfg.mean is not None and cfg.std is not None  # DataConfig requires both for normalize=custom
    for name, values in (("data.mean", cfg.mean), ("data.std", cfg.std)):
        if len(values) != channels:
            raise ConfigError(name, f"has {len(values)} values but {spec.name} has {channels} channel(s)", [channels])
    if any(s <= 0 for s in cfg.std):
        raise ConfigError("data.std", "every value must be positive")
    return list(cfg.mean), list(cfg.std)


def to_model_input(x: torch.Tensor, mean: list[float], std: list[float], device) -> torch.Tensor:
    """float32 on device; uint8 pixels are scaled to [0, 1]; then (x - mean) / std per channel.

    Computed as x * scale + shift in one in-place pass over a single float copy.
    """
    x = x.to(device)  # move the compact uint8 data, convert on the device
    pixel = 1 / 255.0 if x.dtype == torch.uint8 else 1.0
    shape: tuple[int, ...]
    if x.dim() == 4:
        shape = (1, -1, 1, 1)
    else:  # flat vectors: one statistic for every feature
        shape, mean, std = (1, -1), mean[:1], std[:1]
    scale = torch.tensor([pixel / s for s in std], device=x.device).view(shape)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device).view(shape)
    return x.to(torch.float32, copy=True).mul_(scale).add_(shift)


# ----------------------------------------------------------------------------- pipeline


_RAW_CACHE: dict[tuple, RawSplits] = {}
_RAW_CACHE_SIZE = 2


def _load_raw(spec: DatasetSpec, root: Path, cfg: DataConfig) -> RawSplits:
    """spec.load with a small in-process cache: a sweep's runs in one process read a dataset
    once. The pipeline below never modifies the raw tensors in place, so sharing is safe."""
    key = (spec.name, str(Path(root).resolve()), cfg.synthetic.model_dump_json() if spec.name == "synthetic" else None)
    if key not in _RAW_CACHE:
        while len(_RAW_CACHE) >= _RAW_CACHE_SIZE:
            _RAW_CACHE.pop(next(iter(_RAW_CACHE)))
        _RAW_CACHE[key] = spec.load(root, download=True, cfg=cfg)
    return _RAW_CACHE[key]


def build_task(
    cfg: DataConfig, run_seed: int, device: torch.device | str = "cpu", data_dir: Path | None = None
) -> TaskData:
    """Load cfg.dataset and apply the task steps (see the module docstring) in order.

    train_limit / test_limit keep the first N examples of the dataset's own order, before any
    other step. data_dir, when given, replaces the resolved data directory (cfg.dir, then
    $REGLAB_DATA, then the user cache).
    """
    spec = DATASETS.get(cfg.dataset, "data.dataset")
    if cfg.augment and not spec.is_image:
        raise ConfigError("data.augment", f"augmentation needs image data; {spec.name} is flat vectors", [False])
    if cfg.rest_as_validation and (cfg.val_size is not None or cfg.val_fraction > 0):
        raise ConfigError("data.val_fraction", "rest_as_validation already makes the validation set", [0])
    root = Path(data_dir) if data_dir is not None else resolve_data_dir(cfg.dir)
    raw = _load_raw(spec, root, cfg)

    x_tr, y_tr, x_te, y_te, classes = raw.x_train, raw.y_train, raw.x_test, raw.y_test, list(raw.classes)
    if cfg.train_limit is not None:
        x_tr, y_tr = x_tr[: cfg.train_limit], y_tr[: cfg.train_limit]
    if cfg.test_limit is not None:
        x_te, y_te = x_te[: cfg.test_limit], y_te[: cfg.test_limit]

    binary = cfg.binary_pair is not None
    if cfg.binary_pair is not None:
        a, b = cfg.binary_pair
        allowed = [f"{i} ({c})" for i, c in enumerate(classes)]
        missing = [i for i in (a, b) if not 0 <= i < len(classes)]
        if missing:
            raise ConfigError(
                "data.binary_pair", f"class index {missing[0]} does not exist ({len(classes)} classes)", allowed
            )
        if a == b:
            raise ConfigError("data.binary_pair", f"needs two different class indices, got {[a, b]}", allowed)
        keep, y_tr = select_pair(y_tr, (a, b))
        x_tr = x_tr[keep]
        keep, y_te = select_pair(y_te, (a, b))
        x_te = x_te[keep]
        classes = [classes[a], classes[b]]
    num_classes = len(classes)

    x_val = y_val = None
    if cfg.per_class is not None:
        subset, rest = per_class_indices(y_tr, cfg.per_class, num_classes, cfg.subset_seed)
        if cfg.rest_as_validation:
            x_val, y_val = x_tr[rest], y_tr[rest]
        x_tr, y_tr = x_tr[subset], y_tr[subset]

    n_val = validation_count(cfg, len(y_tr))
    if n_val:
        train_idx, val_idx = split_indices(len(y_tr), n_val, cfg.split_seed)
        x_val, y_val = x_tr[val_idx], y_tr[val_idx]
        x_tr, y_tr = x_tr[train_idx], y_tr[train_idx]

    noise_seed = cfg.noise_seed if cfg.noise_seed is not None else run_seed
    flipped = torch.zeros(0, dtype=torch.long)
    if cfg.label_noise > 0:
        y_tr, flipped = flip_labels(y_tr, cfg.label_noise, num_classes, noise_seed)

    channels = x_tr.shape[1] if x_tr.dim() == 4 else 1
    mean, std = normalization(cfg, spec, channels)

    def inputs(x):
        return to_model_input(x, mean, std, device)

    def targets(y):
        y = y.to(device)
        return (y.float() * 2 - 1) if binary else y.long()

    augment = None
    if cfg.augment:
        augment = make_augment(fill=[(0.0 - m) / s for m, s in zip(mean, std)])  # black pixels

    input_shape = tuple(int(d) for d in x_tr.shape[1:])
    meta: dict[str, Any] = {
        "dataset": spec.name,
        "source": raw.source,
        "task": "binary" if binary else "classes",
        "classes": classes,
        "input_shape": list(input_shape),
        "num_train": len(y_tr),
        "num_val": 0 if y_val is None else len(y_val),
        "num_test": len(y_te),
        "train_class_counts": torch.bincount(y_tr, minlength=num_classes).tolist(),
        "normalize": cfg.normalize,
        "mean": mean,
        "std": std,
        "label_noise": cfg.label_noise,
        "noise_seed": noise_seed,
        "labels_flipped": len(flipped),
        "augment": cfg.augment,
    }
    return TaskData(
        x_train=inputs(x_tr),
        y_train=targets(y_tr),
        x_val=None if x_val is None else inputs(x_val),
        y_val=None if y_val is None else targets(y_val),
        x_test=inputs(x_te),
        y_test=targets(y_te),
        task=meta["task"],
        num_outputs=1 if binary else num_classes,
        input_shape=input_shape,
        augment=augment,
        meta=meta,
        flipped=flipped,
    )
