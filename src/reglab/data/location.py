"""Where dataset files live: the data directory and the folders searched inside it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

DATA_ENV = "REGLAB_DATA"


def resolve_data_dir(explicit: str | None) -> Path:
    """The data directory: `explicit` (data.dir / --data-dir), else $REGLAB_DATA, else the cache.

    The cache is ~/.cache/reglab/data, or $XDG_CACHE_HOME/reglab/data when that is set.
    The directory need not exist yet (downloads create it).
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "reglab" / "data"


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
