"""What a dataset is to reglab: a spec that can find, fetch and read its files into RawSplits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import DataMissingError
from .download import DownloadFailed
from .location import DATA_ENV

if TYPE_CHECKING:
    from ..config import DataConfig


@dataclass
class RawSplits:
    """A dataset as read from its files, before any task logic (subsets, noise, normalization)."""

    x_train: torch.Tensor  # uint8 (N, C, H, W) for images; float32 (N, D) for digits/synthetic
    y_train: torch.Tensor  # int64 class indices
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    source: str  # the path read from, or "scikit-learn" / "generated"


Finder = Callable[[Path], tuple[Path | None, str]]
Reader = Callable[[Path | None, "DataConfig | None"], RawSplits]
Fetcher = Callable[[Path], None]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its description, normalization statistics and how to get its data.

    mean/std are per channel in the [0, 1] pixel scale (one value for flat-vector datasets).
    `find(data_dir)` says where the files are or why they are not found; `read(where, cfg)`
    turns them into RawSplits; `fetch(data_dir)` downloads them (None: nothing to download).
    """

    name: str
    description: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    is_image: bool
    find: Finder
    read: Reader
    fetch: Fetcher | None = None
    needs_files: bool = True
    expected: str = ""  # the files a user must provide, for error messages
    install_dir: Callable[[Path], Path] = field(default=lambda d: d)  # where those files go

    def locate(self, data_dir: Path) -> tuple[Path | None, str]:
        """Where the data is (None if not found) and, when not found, why."""
        return self.find(Path(data_dir))

    def load(self, data_dir: Path, download: bool = True, cfg: DataConfig | None = None) -> RawSplits:
        """Read the dataset; when its files are missing, download them first if allowed."""
        data_dir = Path(data_dir)
        where, why = self.locate(data_dir)
        if where is None and self.needs_files:
            if not download:
                failure = "downloading was not allowed (download=False)"
            elif self.fetch is None:
                failure = "this dataset has no download source"
            else:
                failure = ""
                try:
                    self.fetch(data_dir)
                except (DownloadFailed, DataMissingError) as e:  # offline, HTTP error, bad checksum
                    failure = f"download failed: {e}"
                where, why = self.locate(data_dir)
            if where is None:
                raise DataMissingError(self.missing_message(data_dir, why, failure))
        return self.read(where, cfg)

    def missing_message(self, data_dir: Path, why: str, failure: str) -> str:
        text = (
            f"dataset {self.name!r} not found in data directory {data_dir} ({why}). "
            f"Expected {self.expected} in {self.install_dir(data_dir)}."
        )
        if failure:
            text += f" Not downloaded: {failure}."
        return text + f" Put the files there, or point --data-dir or ${DATA_ENV} at a directory that has them."
