"""Downloads (served from a local HTTP server, never the internet), the missing-data message,
resolve_data_dir precedence and dataset_status."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

from fixtures_data import cifar_expected, idx_bytes, make_cifar_arrays, make_mnist_arrays, write_cifar_archive
from reglab.data import DATASETS, dataset_status, resolve_data_dir
from reglab.data import cifar10 as cifar10_module
from reglab.data import download as download_module
from reglab.data import mnist as mnist_module
from reglab.data.download import RemoteFile
from reglab.errors import DataMissingError

MNIST_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


class Server:
    """A local HTTP server on 127.0.0.1 serving `root`, counting the requests it gets."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A served mirror folder (<mirror>/<dataset>/<file>) with REGLAB_MIRROR pointing at it."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "mirror"
    root.mkdir()
    server = Server(root)
    monkeypatch.setenv("REGLAB_MIRROR", server.url)
    yield server
    server.close()


def serve_mnist(mirror: Server, monkeypatch, good_checksums: bool = True):
    """Put MNIST-format .gz files on the mirror; make the expected MD5s theirs (or leave the official)."""
    arrays = make_mnist_arrays(40, 20, seed=9)
    folder = mirror.root / "mnist"
    folder.mkdir()
    remote = []
    for name, arr in zip(MNIST_NAMES, arrays):
        blob = gzip.compress(idx_bytes(arr))
        (folder / f"{name}.gz").write_bytes(blob)
        remote.append(RemoteFile(f"{name}.gz", hashlib.md5(blob).hexdigest()))
    if good_checksums:
        monkeypatch.setattr(mnist_module, "MNIST_REMOTE", tuple(remote))
    return arrays


def test_download_good_checksum(tmp_path, mirror, monkeypatch):
    arrays = serve_mnist(mirror, monkeypatch)
    data = tmp_path / "data"
    raw = DATASETS.get("mnist").load(data)  # download=True by default
    assert sorted(p.name for p in (data / "mnist").iterdir()) == sorted(f"{n}.gz" for n in MNIST_NAMES)
    assert len(mirror.requests) == 4 and all(r.startswith("/mnist/") for r in mirror.requests)
    assert torch.equal(raw.x_train[:, 0], torch.from_numpy(arrays[0]))
    assert torch.equal(raw.y_test, torch.from_numpy(arrays[3]).long())
    # present now: a second load reads the files and asks the network for nothing
    DATASETS.get("mnist").load(data)
    assert len(mirror.requests) == 4


def test_download_bad_checksum(tmp_path, mirror, monkeypatch):
    serve_mnist(mirror, monkeypatch, good_checksums=False)  # official MD5s cannot match
    data = tmp_path / "data"
    with pytest.raises(DataMissingError) as e:
        DATASETS.get("mnist").load(data)
    msg = str(e.value)
    served = (mirror.root / "mnist" / "train-images-idx3-ubyte.gz").read_bytes()
    assert "checksum mismatch for train-images-idx3-ubyte.gz" in msg
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg  # expected (official)
    assert hashlib.md5(served).hexdigest() in msg  # actual
    assert list((data / "mnist").iterdir()) == []  # neither the file nor its .part is left


def test_fetch_renames_part_file_atomically(tmp_path, mirror):
    blob = b"hello dataset"
    (mirror.root / "x").mkdir()
    (mirror.root / "x" / "f.bin").write_bytes(blob)
    dest = tmp_path / "out" / "f.bin"
    download_module.fetch(f"{mirror.url}/x/f.bin", dest, hashlib.md5(blob).hexdigest(), progress=False)
    assert dest.read_bytes() == blob and not (tmp_path / "out" / "f.bin.part").exists()


def test_download_cifar_archive_then_extract(tmp_path, mirror, monkeypatch):
    batches = make_cifar_arrays(per_batch=10, n_test=10)
    (mirror.root / "cifar10").mkdir()
    archive = write_cifar_archive(mirror.root / "cifar10" / "cifar-10-python.tar.gz", batches)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar10_module, "CIFAR10_REMOTE", (RemoteFile("cifar-10-python.tar.gz", md5),))
    raw = DATASETS.get("cifar10").load(tmp_path / "data")
    assert torch.equal(raw.x_train, torch.from_numpy(cifar_expected(batches)[0]))
    assert (tmp_path / "data" / "cifar-10-batches-py" / "batches.meta").is_file()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_gives_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_MIRROR", f"http://127.0.0.1:{_closed_port()}")
    data = tmp_path / "data"
    with pytest.raises(DataMissingError) as e:
        DATASETS.get("mnist").load(data)
    msg = str(e.value)
    assert "'mnist'" in msg and "download failed" in msg
    for name in MNIST_NAMES:
        assert name in msg
    assert str(data / "mnist") in msg and "REGLAB_DATA" in msg and "--data-dir" in msg
    assert "\n" not in msg
    assert not any(p.suffix == ".part" for p in data.rglob("*"))


def test_http_error_is_reported(tmp_path, mirror):
    with pytest.raises(DataMissingError, match="404"):
        DATASETS.get("fashion_mnist").load(tmp_path / "data")


def test_download_false_never_touches_the_network(tmp_path, mirror, monkeypatch):
    serve_mnist(mirror, monkeypatch)
    with pytest.raises(DataMissingError) as e:
        DATASETS.get("mnist").load(tmp_path / "data", download=False)
    assert mirror.requests == []
    assert "download=False" in str(e.value) and "train-images-idx3-ubyte" in str(e.value)


def test_mirror_and_official_urls(monkeypatch):
    monkeypatch.delenv("REGLAB_MIRROR", raising=False)
    assert download_module.url_for("mnist", "a.gz") == "https://ossci-datasets.s3.amazonaws.com/mnist/a.gz"
    assert download_module.url_for("cifar10", "c.tar.gz") == "https://www.cs.toronto.edu/~kriz/c.tar.gz"
    monkeypatch.setenv("REGLAB_MIRROR", "http://m.example/data/")
    assert download_module.url_for("fashion_mnist", "b.gz") == "http://m.example/data/fashion_mnist/b.gz"


# ----------------------------------------------------------------------------- locations


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("REGLAB_DATA", raising=False)
    assert resolve_data_dir(None) == tmp_path / "home" / ".cache" / "reglab" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(None) == tmp_path / "xdg" / "reglab" / "data"
    monkeypatch.setenv("REGLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_dataset_status(tmp_path, monkeypatch):
    from fixtures_data import write_mnist_folder

    monkeypatch.setenv("REGLAB_SYSTEM_DATA", str(tmp_path / "no-system-copy"))
    data = tmp_path / "data"
    write_mnist_folder(data / "MNIST" / "raw", make_mnist_arrays(), gz=False)
    rows = {r["name"]: r for r in dataset_status(data)}
    assert set(rows) == {"mnist", "fashion_mnist", "cifar10", "digits", "synthetic"}
    assert rows["mnist"]["found"] and rows["mnist"]["where"] == str(data / "MNIST" / "raw")
    assert not rows["fashion_mnist"]["found"]
    assert str(data / "fashion-mnist") in rows["fashion_mnist"]["why"]
    assert "no-system-copy" in rows["fashion_mnist"]["why"]
    assert not rows["cifar10"]["found"] and "cifar-10-batches-py" in rows["cifar10"]["why"]
    assert rows["digits"]["found"] and "scikit-learn" in rows["digits"]["where"]
    assert rows["synthetic"]["found"]
    assert all(r["description"] for r in rows.values())
