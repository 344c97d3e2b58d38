"""Fetching dataset files over HTTP(S): streamed, checksummed, renamed into place atomically.

Base URLs are module constants; $REGLAB_MIRROR replaces all of them with one mirror laid out
as <mirror>/<dataset>/<file> (for offline sites and for tests, which serve files locally).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from ..errors import DataMissingError

MIRROR_ENV = "REGLAB_MIRROR"
TIMEOUT_S = 30
CHUNK = 1 << 20

BASE_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset's official release and the MD5 of that release."""

    name: str
    md5: str


class DownloadFailed(Exception):
    """A download did not produce a verified file (network error, HTTP error, bad checksum)."""


def url_for(dataset: str, filename: str) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{dataset}/{filename}"
    return BASE_URLS[dataset] + filename


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: Path, md5: str, progress: bool = True) -> Path:
    """Download url to dest via dest.part; verify the MD5 before the file takes its real name.

    A checksum mismatch deletes the part file and raises DataMissingError naming both sums.
    Network problems raise DownloadFailed (the caller turns them into one clear message).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            columns = (TextColumn(dest.name), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, transient=True, disable=not progress) as bar:
                task = bar.add_task("download", total=total)
                for chunk in iter(lambda: resp.read(CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    bar.advance(task, len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError is an OSError
        part.unlink(missing_ok=True)
        raise DownloadFailed(f"could not download {url}: {e}") from None
    actual = h.hexdigest()
    if actual != md5:
        part.unlink(missing_ok=True)
        raise DataMissingError(
            f"checksum mismatch for {dest.name} downloaded from {url}: "
            f"expected md5 {md5}, got {actual}; the file was deleted"
        )
    os.replace(part, dest)
    return dest


def fetch_all(dataset: str, files: tuple[RemoteFile, ...], folder: Path, progress: bool = True) -> None:
    """Download each file not already in folder."""
    for f in files:
        dest = folder / f.name
        if not dest.is_file():
            fetch(url_for(dataset, f.name), dest, f.md5, progress=progress)
