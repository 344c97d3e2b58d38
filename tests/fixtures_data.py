"""Small dataset files written in the canonical formats, so readers are tested on real layouts."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}  # fmt: skip


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of arr (written independently of the reader under test)."""
    big = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    header = bytes([0, 0, IDX_CODES[big.dtype], arr.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + big.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist_arrays(n_train: int = 60, n_test: int = 20, seed: int = 0, size: int = 28):
    """Random uint8 images and labels with every class 0..9 present (n >= 10)."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, size, size), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, size, size), dtype=np.uint8)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    rng.shuffle(y_train)
    y_test = (np.arange(n_test) % 10).astype(np.uint8)
    return x_train, y_train, x_test, y_test


def write_mnist_folder(folder: Path, arrays, gz: bool = True) -> Path:
    """Write the four IDX files (names as in the official release, `.gz` when gz)."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = arrays
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", x_train, gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", y_train, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", x_test, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", y_test, gz)
    return folder


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar_arrays(per_batch: int = 20, n_test: int = 20, seed: int = 0):
    """Six batches of random (N, 3072) uint8 images and balanced labels."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(6):
        n = per_batch if len(batches) < 5 else n_test
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.permutation(np.arange(n) % 10)]
        batches.append((x, y))
    return batches


def write_cifar_folder(folder: Path, batches, protocol: int = 2) -> Path:
    """Write data_batch_1..5, test_batch and batches.meta like the official release (bytes keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (x, y) in zip(names, batches):
        d = {b"batch_label": name.encode(), b"labels": y, b"data": x,
             b"filenames": [f"{i}.png".encode() for i in range(len(y))]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(d, protocol=protocol))
    meta = {b"num_cases_per_batch": len(batches[0][1]), b"label_names": [c.encode() for c in CIFAR_CLASSES],
            b"num_vis": 3072}  # fmt: skip
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


def write_cifar_archive(path: Path, batches) -> Path:
    """cifar-10-python.tar.gz holding cifar-10-batches-py/ as the official archive does."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py")
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        tmp = {}
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name, (x, y) in zip(names, batches):
            tmp[name] = pickle.dumps({b"labels": y, b"data": x}, protocol=2)
        tmp["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CIFAR_CLASSES]}, protocol=2)
        for name, blob in tmp.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    path.write_bytes(buf.getvalue())
    return path


def cifar_expected(batches):
    """The arrays a reader must return for `batches`: (x_train, y_train, x_test, y_test)."""
    x_train = np.concatenate([x for x, _ in batches[:5]]).reshape(-1, 3, 32, 32)
    y_train = np.concatenate([np.array(y) for _, y in batches[:5]])
    x_test = batches[5][0].reshape(-1, 3, 32, 32)
    return x_train, y_train, x_test, np.array(batches[5][1])
