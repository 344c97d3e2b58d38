"""scikit-learn's bundled 8x8 digits (1797 images, no download) with a fixed train/test split."""

from __future__ import annotations

import numpy as np
import torch

from .spec import RawSplits

# The split is part of the dataset's definition, so it never changes: a permutation from
# numpy's legacy RandomState (whose stream numpy keeps stable) with this seed; the first
# 1497 examples train, the last 300 test.
SPLIT_SEED = 0
N_TEST = 300

# Mean and std of all pixel values of the training split, pixels scaled to [0, 1] (value/16);
# tests recompute them.
DIGITS_MEAN = 0.3053718
DIGITS_STD = 0.3760219


def read_digits(where=None, cfg=None) -> RawSplits:
    from sklearn.datasets import load_digits  # imported here: slow import, used only for digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.data / 16.0).float()  # (1797, 64) in [0, 1]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.RandomState(SPLIT_SEED).permutation(len(y)))
    train, test = order[:-N_TEST], order[-N_TEST:]
    classes = [str(d) for d in range(10)]
    return RawSplits(x[train], y[train], x[test], y[test], classes, "scikit-learn")


def find_digits(data_dir) -> tuple[None, str]:
    return None, "bundled with scikit-learn (no files needed)"
