"""MNIST and Fashion-MNIST: four IDX files each, found in the data directory or downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .corrupt import CorruptFileError
from .download import RemoteFile, fetch_all
from .idx import read_idx
from .location import find_file, find_folder_with, system_data_dirs
from .spec import RawSplits

# Official file names (the .gz suffix is optional on disk) and MD5s of the official .gz files.
# Files found locally are not checked against these: re-compressed copies are equally valid.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

MNIST_REMOTE = (
    RemoteFile(f"{TRAIN_IMAGES}.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    RemoteFile(f"{TRAIN_LABELS}.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    RemoteFile(f"{TEST_IMAGES}.gz", "9fb629c4189551a2d022fa330f9573f3"),
    RemoteFile(f"{TEST_LABELS}.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
)
FASHION_REMOTE = (
    RemoteFile(f"{TRAIN_IMAGES}.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    RemoteFile(f"{TRAIN_LABELS}.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    RemoteFile(f"{TEST_IMAGES}.gz", "bef4ecab320f06d8554ea6380940ec79"),
    RemoteFile(f"{TEST_LABELS}.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
)

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip

# The folder the Debian package `dataset-fashion-mnist` installs inside /usr/share/datasets.
FASHION_MNIST_SYSTEM_FOLDER = "fashion-mnist"

EXPECTED_FILES = ", ".join(f"{n}[.gz]" for n in IDX_NAMES)


def mnist_folders(data_dir: Path) -> list[Path]:
    return [data_dir / "mnist", data_dir / "MNIST" / "raw"]


def fashion_folders(data_dir: Path) -> list[Path]:
    system = [d / FASHION_MNIST_SYSTEM_FOLDER for d in system_data_dirs()]
    return [data_dir / "fashion-mnist", data_dir / "fashion_mnist", *system]


def find_mnist(data_dir: Path) -> tuple[Path | None, str]:
    return find_folder_with(mnist_folders(data_dir), IDX_NAMES)


def find_fashion(data_dir: Path) -> tuple[Path | None, str]:
    return find_folder_with(fashion_folders(data_dir), IDX_NAMES)


def fetch_mnist(data_dir: Path) -> None:
    fetch_all("mnist", MNIST_REMOTE, data_dir / "mnist")


def fetch_fashion(data_dir: Path) -> None:
    fetch_all("fashion_mnist", FASHION_REMOTE, data_dir / "fashion-mnist")


def _images(path: Path) -> torch.Tensor:
    x = read_idx(path)
    if x.dtype != np.uint8 or x.ndim != 3:
        raise CorruptFileError(f"{path}: expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
    return torch.from_numpy(x.copy()).unsqueeze(1)  # (N, 1, H, W); copy: frombuffer is read-only


def _labels(path: Path, n: int) -> torch.Tensor:
    y = read_idx(path)
    if y.ndim != 1 or y.shape[0] != n:
        raise CorruptFileError(f"{path}: expected {n} labels, got shape {y.shape}")
    return torch.from_numpy(y.astype(np.int64))


def read_idx_folder(folder: Path, classes: list[str]) -> RawSplits:
    def path(name: str) -> Path:
        p = find_file(folder, name)
        if p is None:
            raise CorruptFileError(f"{folder}: {name}[.gz] disappeared while reading")
        return p

    x_train = _images(path(TRAIN_IMAGES))
    x_test = _images(path(TEST_IMAGES))
    y_train = _labels(path(TRAIN_LABELS), len(x_train))
    y_test = _labels(path(TEST_LABELS), len(x_test))
    return RawSplits(x_train, y_train, x_test, y_test, list(classes), str(folder))


def read_mnist(folder, cfg=None) -> RawSplits:
    return read_idx_folder(folder, MNIST_CLASSES)


def read_fashion(folder, cfg=None) -> RawSplits:
    return read_idx_folder(folder, FASHION_CLASSES)
