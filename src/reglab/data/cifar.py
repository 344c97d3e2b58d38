"""CIFAR-10 in its canonical python layout (`cifar-10-batches-py/`), read without trusting pickle.

The batch files are pickles. A plain `pickle.load` would run whatever code a tampered file
names, so they are read with an unpickler that can build numpy arrays and nothing else.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np

from .corrupt import CorruptFileError

BATCH_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
ALL_FILES = (*TRAIN_BATCHES, TEST_BATCH, META)


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Stand-in for `_codecs.encode`, which protocol-2 pickles written by Python 3 use for bytes.

    Only the latin1 codec is allowed, so the call cannot reach any other codec.
    """
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    # numpy >= 2 lives in numpy._core; pickles written with numpy 1.x name numpy.core.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # the same function, older home
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; any other global is refused."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: CIFAR batch files contain only numpy arrays"
            ) from None


def safe_unpickle(data: bytes) -> object:
    """Unpickle bytes with RestrictedUnpickler (bytes keys stay bytes, as in the official files)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _str_keys(d: object, path: Path) -> dict[str, object]:
    if not isinstance(d, dict):
        raise CorruptFileError(f"{path}: expected a pickled dict, found {type(d).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in d.items()}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images uint8 (N, 3, 32, 32) and labels int64 (N,)."""
    try:
        d = _str_keys(safe_unpickle(Path(path).read_bytes()), path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CorruptFileError(f"{path}: not a readable CIFAR batch ({e})") from None
    if "data" not in d or "labels" not in d:
        raise CorruptFileError(f"{path}: CIFAR batch lacks 'data' or 'labels' (has {sorted(d)})")
    x = np.array(d["data"], dtype=np.uint8)  # a copy: unpickled arrays can be read-only
    y = np.asarray(d["labels"], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.shape[0] != y.shape[0]:
        raise CorruptFileError(f"{path}: data shape {x.shape} and {y.shape[0]} labels do not fit CIFAR")
    return x.reshape(-1, 3, 32, 32), y


def read_label_names(path: Path) -> list[str]:
    try:
        d = _str_keys(safe_unpickle(Path(path).read_bytes()), path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CorruptFileError(f"{path}: not a readable CIFAR meta file ({e})") from None
    names = d.get("label_names")
    if not isinstance(names, list):
        raise CorruptFileError(f"{path}: CIFAR meta file lacks 'label_names'")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def read_cifar10(batch_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """x_train, y_train, x_test, y_test, class names from a `cifar-10-batches-py` directory."""
    train = [read_batch(batch_dir / f) for f in TRAIN_BATCHES]
    x_test, y_test = read_batch(batch_dir / TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test, read_label_names(batch_dir / META)


def has_all_files(batch_dir: Path) -> bool:
    return all((batch_dir / f).is_file() for f in ALL_FILES)


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse members that could write outside the target (absolute, '..', links, devices)."""
    parts = Path(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or not (member.isfile() or member.isdir()):
        raise CorruptFileError(f"{archive}: unsafe archive member {member.name!r}; refusing to extract")
    if parts and parts[0] != BATCH_DIR:
        raise CorruptFileError(f"{archive}: unexpected member {member.name!r} (expected {BATCH_DIR}/...)")


def extract_archive(archive: Path, data_dir: Path) -> Path:
    """Extract `cifar-10-python.tar.gz` into data_dir; returns the batch directory.

    Extracts into a temporary folder first and renames, so an interrupted extraction never
    leaves a half-filled `cifar-10-batches-py/` that would later look complete.
    """
    tmp = data_dir / f".{BATCH_DIR}.extracting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m, archive)
            tar.extractall(tmp, members=members, filter="data")
        if not has_all_files(tmp / BATCH_DIR):
            raise CorruptFileError(f"{archive}: archive lacks some of {', '.join(ALL_FILES)}")
        os.replace(tmp / BATCH_DIR, data_dir / BATCH_DIR)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorruptFileError(f"{archive}: cannot extract ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_dir / BATCH_DIR
