"""Where dataset files live: the data directory and the folders searched inside it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

DATA_ENV = "REGLAB_DATA"
# Directories where system packages install datasets (Debian's `dataset-fashion-mnist` puts
# its files in /usr/share/datasets/fashion-mnist). $REGLAB_SYSTEM_DATA replaces the default
# list (os.pathsep-separated); set it empty to search no system directory.
SYSTEM_DATA_ENV = "REGLAB_SYSTEM_DATA"
DEFAULT_SYSTEM_DATA_DIRS = ("/usr/share/datasets",)


def data_search_path(explicit: str | None) -> list[Path]:
    """The data directories, in order: `explicit` (data.dir / --data-dir), else $REGLAB_DATA, else
    the cache (~/.cache/reglab/data, or $XDG_CACHE_HOME/reglab/data). Like PATH, the setting may
    list several directories separated by os.pathsep (':'): each dataset is read from the first
    one that has it, and downloaded into the first one. Directories need not exist yet."""
    text = explicit or os.environ.get(DATA_ENV)
    if text:
        return [Path(p).expanduser() for p in str(text).split(os.pathsep) if p]
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(cache).expanduser() / "reglab" / "data"]


def system_data_dirs() -> list[Path]:
    """The system dataset directories, read at call time: $REGLAB_SYSTEM_DATA when set, else
    /usr/share/datasets. They are searched after the data directories and never written."""
    text = os.environ.get(SYSTEM_DATA_ENV)
    if text is None:
        return [Path(p) for p in DEFAULT_SYSTEM_DATA_DIRS]
    return [Path(p).expanduser() for p in text.split(os.pathsep) if p]


def resolve_data_dir(explicit: str | None) -> Path:
    """The first data directory of the search path (where downloads go)."""
    return data_search_path(explicit)[0]


def find_file(folder: Path, name: str) -> Path | None:
    """`name` or `name.gz` in folder (IDX files come both ways)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_folder_with(folders: Iterable[Path], names: Iterable[str]) -> tuple[Path | None, str]:
    """The first folder holding every file in `names` (each plain or .gz), or why none does."""
    names = list(names)
    reasons = []
    for folder in folders:
        if not folder.is_dir():
            reasons.append(f"{folder} does not exist")
            continue
        missing = [n for n in names if find_file(folder, n) is None]
        if not missing:
            return folder, ""
        reasons.append(f"{folder} lacks {', '.join(missing)}")
    return None, "; ".join(reasons)
