"""Readers: IDX and CIFAR files written in their canonical formats, read back exactly; dataset
locations; the restricted unpickler; digits and synthetic; real MNIST and CIFAR-10."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_data import (
    cifar_expected,
    idx_bytes,
    make_cifar_arrays,
    make_mnist_arrays,
    write_cifar_archive,
    write_cifar_folder,
    write_idx,
    write_mnist_folder,
)
from reglab.config import DataConfig
from reglab.data import DATASETS, build_task
from reglab.data.cifar import read_batch, safe_unpickle
from reglab.data.corrupt import CorruptFileError
from reglab.data.digits import DIGITS_MEAN, DIGITS_STD, read_digits
from reglab.data.idx import read_idx
from reglab.errors import DataMissingError

# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_idx_roundtrip(tmp_path, gz, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", arr, gz)
    back = read_idx(path)
    assert back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, arr)
    assert back.dtype.isnative


def test_idx_gzip_detected_from_bytes_not_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_without_suffix = tmp_path / "labels-idx2-ubyte"
    gz_without_suffix.write_bytes(gzip.compress(idx_bytes(arr)))
    plain_with_suffix = tmp_path / "labels-idx2-ubyte.gz"
    plain_with_suffix.write_bytes(idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(gz_without_suffix), arr)
    np.testing.assert_array_equal(read_idx(plain_with_suffix), arr)


@pytest.mark.parametrize(
    "blob, words",
    [
        (b"\x08\x03\x00\x00" + b"\x00" * 20, "magic"),  # wrong magic
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),  # header cut off
        (idx_bytes(np.zeros((4, 5), np.uint8))[:-3], "holds"),  # data cut off
        (b"\x1f\x8b" + b"garbage", "gzip"),  # broken gzip
    ],
)
def test_idx_corrupt_file_is_a_clear_error(tmp_path, blob, words):
    p = tmp_path / "bad.gz"
    p.write_bytes(blob)
    with pytest.raises(CorruptFileError, match=words) as e:
        read_idx(p)
    assert str(p) in str(e.value)
    assert isinstance(e.value, DataMissingError)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", [("mnist",), ("MNIST", "raw")])
def test_mnist_folder_layouts(tmp_path, gz, layout):
    arrays = make_mnist_arrays()
    folder = write_mnist_folder(tmp_path.joinpath(*layout), arrays, gz=gz)
    spec = DATASETS.get("mnist")
    assert spec.locate(tmp_path) == (folder, "")
    raw = spec.load(tmp_path, download=False)
    x_train, y_train, x_test, y_test = arrays
    assert raw.x_train.dtype == torch.uint8 and raw.x_train.shape == (60, 1, 28, 28)
    assert torch.equal(raw.x_train[:, 0], torch.from_numpy(x_train))
    assert torch.equal(raw.y_train, torch.from_numpy(y_train).long())
    assert torch.equal(raw.x_test[:, 0], torch.from_numpy(x_test))
    assert torch.equal(raw.y_test, torch.from_numpy(y_test).long())
    assert raw.y_train.dtype == torch.int64
    assert raw.classes == [str(d) for d in range(10)]
    assert raw.source == str(folder)


def test_idx_image_label_count_mismatch(tmp_path):
    x_train, y_train, x_test, y_test = make_mnist_arrays()
    write_mnist_folder(tmp_path / "mnist", (x_train, y_train[:-1], x_test, y_test))
    with pytest.raises(CorruptFileError, match="expected 60 labels"):
        DATASETS.get("mnist").load(tmp_path, download=False)


@pytest.mark.parametrize("sub", ["fashion-mnist", "fashion_mnist"])
def test_fashion_mnist_folders(tmp_path, monkeypatch, sub):
    monkeypatch.setenv("REGLAB_SYSTEM_DATA", str(tmp_path / "nowhere"))
    write_mnist_folder(tmp_path / sub, make_mnist_arrays())
    raw = DATASETS.get("fashion_mnist").load(tmp_path, download=False)
    assert raw.source == str(tmp_path / sub)
    assert raw.classes[9] == "ankle boot"


def test_fashion_mnist_system_dir(tmp_path, monkeypatch):
    system = write_mnist_folder(tmp_path / "usr-share" / "fashion-mnist", make_mnist_arrays(), gz=True)
    monkeypatch.setenv("REGLAB_SYSTEM_DATA", f"{tmp_path / 'elsewhere'}{os.pathsep}{tmp_path / 'usr-share'}")
    empty = tmp_path / "data"
    spec = DATASETS.get("fashion_mnist")
    assert spec.locate(empty) == (system, "")
    assert spec.load(empty, download=False).x_train.shape == (60, 1, 28, 28)
    # A copy in the data directory comes first; an empty setting searches no system directory.
    local = write_mnist_folder(empty / "fashion-mnist", make_mnist_arrays())
    assert spec.locate(empty) == (local, "")
    monkeypatch.setenv("REGLAB_SYSTEM_DATA", "")
    assert spec.locate(tmp_path / "other")[0] is None


def test_system_data_dirs_default(monkeypatch):
    from reglab.data.location import system_data_dirs

    monkeypatch.delenv("REGLAB_SYSTEM_DATA", raising=False)
    assert system_data_dirs() == [Path("/usr/share/datasets")]
    monkeypatch.setenv("REGLAB_SYSTEM_DATA", "")
    assert system_data_dirs() == []


@pytest.mark.data
def test_real_fashion_mnist_from_the_debian_package(system_fashion_mnist_dir, tmp_path):
    raw = DATASETS.get("fashion_mnist").load(tmp_path / "empty-data-dir", download=False)
    assert raw.source == str(system_fashion_mnist_dir)
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(raw.y_train).tolist() == [6000] * 10
    assert torch.bincount(raw.y_test).tolist() == [1000] * 10
    assert raw.classes[9] == "ankle boot"


# ----------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_batches_roundtrip(tmp_path, protocol):
    batches = make_cifar_arrays()
    write_cifar_folder(tmp_path / "cifar-10-batches-py", batches, protocol=protocol)
    raw = DATASETS.get("cifar10").load(tmp_path, download=False)
    x_train, y_train, x_test, y_test = cifar_expected(batches)
    assert raw.x_train.shape == (100, 3, 32, 32) and raw.x_train.dtype == torch.uint8
    assert torch.equal(raw.x_train, torch.from_numpy(x_train))
    assert torch.equal(raw.y_train, torch.from_numpy(y_train).long())
    assert torch.equal(raw.x_test, torch.from_numpy(x_test))
    assert torch.equal(raw.y_test, torch.from_numpy(y_test).long())
    assert raw.classes[3] == "cat" and len(raw.classes) == 10


def test_cifar_archive_is_extracted(tmp_path):
    batches = make_cifar_arrays()
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches)
    spec = DATASETS.get("cifar10")
    assert spec.locate(tmp_path)[0] == tmp_path / "cifar-10-python.tar.gz"
    raw = spec.load(tmp_path, download=False)
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert torch.equal(raw.x_test, torch.from_numpy(cifar_expected(batches)[2]))
    assert spec.locate(tmp_path)[0] == tmp_path / "cifar-10-batches-py"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


@pytest.mark.parametrize("evil", ["../escape", "/abs/path", "cifar-10-batches-py/link"])
def test_cifar_archive_with_unsafe_member_is_refused(tmp_path, evil):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(evil)
        if evil.endswith("link"):
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(CorruptFileError, match="unsafe"):
        DATASETS.get("cifar10").load(tmp_path / "data", download=False)
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()


class _RunsShell:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_unpickler_refuses_code(tmp_path, protocol):
    blob = pickle.dumps({b"data": _RunsShell()}, protocol=protocol)
    assert b"system" in blob
    with pytest.raises(pickle.UnpicklingError, match="system"):
        safe_unpickle(blob)
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob)
    with pytest.raises(CorruptFileError, match="refused"):
        read_batch(path)


def test_restricted_unpickler_refuses_other_codecs():
    import codecs

    class Sneaky:
        def __reduce__(self):
            return (codecs.encode, ("x", "rot13"))

    blob = pickle.dumps(Sneaky(), protocol=2)
    assert b"_codecs" in blob  # the same global protocol-2 pickles use for bytes
    with pytest.raises(pickle.UnpicklingError, match="rot13"):
        safe_unpickle(blob)


def test_restricted_unpickler_accepts_numpy_arrays():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 12)
    for protocol in (2, 3, 4):
        out = safe_unpickle(pickle.dumps({b"data": arr, b"labels": [1, 2]}, protocol=protocol))
        np.testing.assert_array_equal(out[b"data"], arr)


def test_cifar_incomplete_folder_reports_missing_files(tmp_path):
    write_cifar_folder(tmp_path / "cifar-10-batches-py", make_cifar_arrays())
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    where, why = DATASETS.get("cifar10").locate(tmp_path)
    assert where is None and "test_batch" in why


# ----------------------------------------------------------------------------- digits, synthetic


def test_digits_fixed_split_and_stats():
    raw = read_digits()
    assert raw.x_train.shape == (1497, 64) and raw.x_test.shape == (300, 64)
    assert raw.x_train.dtype == torch.float32
    assert raw.x_train.min() >= 0.0 and raw.x_train.max() <= 1.0
    assert torch.equal(raw.x_train, read_digits().x_train)  # fixed: same split every time
    assert sorted(raw.y_train.unique().tolist()) == list(range(10))
    assert float(raw.x_train.double().mean()) == pytest.approx(DIGITS_MEAN, abs=1e-6)
    assert float(raw.x_train.double().std(unbiased=False)) == pytest.approx(DIGITS_STD, abs=1e-6)
    # train and test are disjoint rows of the 1797-image set
    from sklearn.datasets import load_digits

    assert len(torch.cat([raw.y_train, raw.y_test])) == len(load_digits().target)


def test_synthetic_is_seeded_by_its_config():
    cfg = DataConfig(dataset="synthetic", synthetic={"n_train": 300, "n_test": 50, "dim": 7, "classes": 3})
    a = DATASETS.get("synthetic").load(Path("/nonexistent"), cfg=cfg)
    b = DATASETS.get("synthetic").load(Path("/nonexistent"), cfg=cfg)
    c = DATASETS.get("synthetic").load(
        Path("/nonexistent"), cfg=cfg.model_copy(update={"synthetic": cfg.synthetic.model_copy(update={"seed": 1})})
    )
    assert a.x_train.shape == (300, 7) and a.x_test.shape == (50, 7)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    counts = torch.bincount(a.y_train, minlength=3)
    assert counts.min() > 300 / 3 / 3  # every class well represented
    assert a.classes == ["0", "1", "2"] and a.source == "generated"


# ----------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_mnist(real_data_dir):
    raw = DATASETS.get("mnist").load(real_data_dir, download=False)
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    assert raw.x_train.dtype == torch.uint8
    for y, n in ((raw.y_train, 60000), (raw.y_test, 10000)):
        counts = torch.bincount(y, minlength=10)
        assert len(counts) == 10 and counts.sum() == n
        assert counts.min() > n / 10 * 0.85 and counts.max() < n / 10 * 1.2
    assert raw.y_train[:5].tolist() == [5, 0, 4, 1, 9]  # the famous first training labels
    x = raw.x_train.float() / 255
    assert x.mean().item() == pytest.approx(0.1307, abs=1e-3)
    assert x.std().item() == pytest.approx(0.3081, abs=1e-3)

    cfg = DataConfig(dataset="mnist", per_class=100, rest_as_validation=True)
    task = build_task(cfg, run_seed=0, data_dir=real_data_dir)
    assert task.x_train.shape == (1000, 1, 28, 28) and task.x_val.shape == (59000, 1, 28, 28)
    assert torch.bincount(task.y_train).tolist() == [100] * 10
    assert task.x_test.shape == (10000, 1, 28, 28)


@pytest.mark.data
@pytest.mark.slow
def test_real_cifar10(real_cifar_dir):
    raw = DATASETS.get("cifar10").load(real_cifar_dir, download=False)
    assert raw.x_train.shape == (50000, 3, 32, 32) and raw.x_test.shape == (10000, 3, 32, 32)
    assert torch.bincount(raw.y_train).tolist() == [5000] * 10
    assert raw.classes[3] == "cat" and raw.classes[4] == "deer"
    task = build_task(DataConfig(dataset="cifar10", binary_pair=(3, 4)), run_seed=0, data_dir=real_cifar_dir)
    assert task.x_train.shape == (10000, 3, 32, 32) and task.x_test.shape == (2000, 3, 32, 32)
    assert task.task == "binary" and task.num_outputs == 1
    assert (task.y_train == -1).sum() == 5000 and (task.y_test == 1).sum() == 1000
    assert task.x_train.mean(dim=(0, 2, 3)).abs().max() < 0.3  # roughly centred by the dataset stats
