"""Reader for IDX files (the format of MNIST and Fashion-MNIST), gzipped or plain.

IDX layout: two zero bytes, a type code, the number of dimensions n, then n big-endian int32
sizes, then the values in C order (big-endian for multi-byte types).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .corrupt import CorruptFileError

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> numpy dtype (multi-byte types are big-endian on disk)
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes_maybe_gzip(path: Path) -> bytes:
    """The file's content, decompressed when it starts with the gzip magic (whatever its name)."""
    raw = Path(path).read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptFileError(f"{path}: damaged gzip data ({e}); delete it and fetch it again") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array in native byte order (no copy for uint8)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise CorruptFileError(f"{name}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype = IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise CorruptFileError(f"{name}: IDX header is truncated or has no dimensions")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise CorruptFileError(
            f"{name}: IDX header says shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(data) - header} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file, `.gz` or not (detected from the bytes, not the name)."""
    return parse_idx(read_bytes_maybe_gzip(path), str(path))
