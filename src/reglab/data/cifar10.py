"""CIFAR-10 as a dataset: find the batch folder (or its archive), download, read."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .cifar import ALL_FILES, ARCHIVE, BATCH_DIR, extract_archive, has_all_files, read_cifar10
from .download import RemoteFile, fetch_all
from .spec import RawSplits

if TYPE_CHECKING:
    from ..config import DataConfig

CIFAR10_REMOTE = (RemoteFile(ARCHIVE, "c58f30108f718f92721af3b95e74349a"),)
EXPECTED = f"{BATCH_DIR}/ ({', '.join(ALL_FILES)}) or {ARCHIVE}"


def find_cifar10(data_dir: Path) -> tuple[Path | None, str]:
    """The batch folder, else the archive (extracted when read), else why neither is usable."""
    batch_dir = data_dir / BATCH_DIR
    if has_all_files(batch_dir):
        return batch_dir, ""
    archive = data_dir / ARCHIVE
    if batch_dir.exists():
        missing = [f for f in ALL_FILES if not (batch_dir / f).is_file()]
        return None, f"{batch_dir} is incomplete (lacks {', '.join(missing)}); delete it to start over"
    if archive.is_file():
        return archive, ""
    return None, f"neither {batch_dir} nor {archive} exists"


def fetch_cifar10(data_dir: Path) -> None:
    fetch_all("cifar10", CIFAR10_REMOTE, data_dir)


def read_cifar10_data(where: Path | None, cfg: DataConfig | None = None) -> RawSplits:
    assert where is not None  # cifar10 needs files: DatasetSpec.load passes the path it found
    if where.name == ARCHIVE:
        where = extract_archive(where, where.parent)
    x_train, y_train, x_test, y_test, classes = read_cifar10(where)
    t = torch.from_numpy
    return RawSplits(t(x_train), t(y_train), t(x_test), t(y_test), classes, str(where))
