"""Shared fixtures, and the hermetic environment every test runs in.

No test may depend on what happens to be installed or cached on the machine. Before any test
module is imported, this file takes REGLAB_DATA out of the environment (it is kept in REAL_DATA
for the real-data tests), points HOME, the XDG cache and matplotlib's config at a fresh
directory (so ~/.cache/reglab/data is out of reach), empties REGLAB_SYSTEM_DATA (so
/usr/share/datasets, where Debian's dataset-fashion-mnist installs, is never searched) and
removes REGLAB_MIRROR. Subprocesses started by tests inherit the same environment.

Real-data tests have "real" in their name, take the `real_data_dir` (or
`system_fashion_mnist_dir`) fixture and skip with the reason when the data is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REAL_DATA = os.environ.pop("REGLAB_DATA", None)
HERMETIC_HOME = Path(tempfile.mkdtemp(prefix="reglab-tests-home-"))
os.environ["HOME"] = str(HERMETIC_HOME)
os.environ["XDG_CACHE_HOME"] = str(HERMETIC_HOME / ".cache")
os.environ["MPLCONFIGDIR"] = str(HERMETIC_HOME / ".config" / "matplotlib")
os.environ["REGLAB_SYSTEM_DATA"] = ""
os.environ.pop("REGLAB_MIRROR", None)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The directory with the real datasets (CI sets REGLAB_DATA=../shared/data)."""
    if not REAL_DATA:
        pytest.skip("real-data test: set REGLAB_DATA to the data directory (CI uses ../shared/data)")
    p = Path(REAL_DATA)
    if not p.is_dir():
        pytest.skip(f"real-data test: REGLAB_DATA={REAL_DATA} is not a directory")
    return p


@pytest.fixture(scope="session")
def real_cifar_dir(real_data_dir, tmp_path_factory) -> Path:
    """A data directory with cifar-10-batches-py: the real one, or one made by make_cifar10.py."""
    src = real_data_dir
    if (src / "cifar-10-batches-py" / "batches.meta").is_file():
        return src
    script, archive = src / "make_cifar10.py", src / "cifar10-jpeg.tar.gz"
    if not (script.is_file() and archive.is_file()):
        pytest.skip(f"real-data test: no cifar-10-batches-py and no make_cifar10.py + cifar10-jpeg.tar.gz in {src}")
    pytest.importorskip("PIL", reason="make_cifar10.py needs Pillow to decode the JPEG copy")
    out = tmp_path_factory.mktemp("cifar")
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture
def system_fashion_mnist_dir(monkeypatch) -> Path:
    """The system directory of Debian's dataset-fashion-mnist, searched again for this test."""
    from reglab.data.location import DEFAULT_SYSTEM_DATA_DIRS

    monkeypatch.delenv("REGLAB_SYSTEM_DATA")
    folder = Path(DEFAULT_SYSTEM_DATA_DIRS[0]) / "fashion-mnist"
    if not folder.is_dir():
        pytest.skip(f"real-data test: {folder} is missing (apt-get install dataset-fashion-mnist)")
    return folder


@pytest.fixture
def two_layer_ones():
    """W1 = ones(2, 3) (n1 = 6), W2 = [[3, 4]] (n2 = 25): the penalties' hand-computed examples."""
    from torch import nn

    from penalty_helpers import set_weights

    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    set_weights(model[0], torch.ones(2, 3), [10.0, 10.0])
    set_weights(model[2], [[3.0, 4.0]], [10.0])
    return model


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A real single-node SLURM cluster (tests/slurm_cluster.py), one for the whole session: the
    `slurm` tests (test_slurm.py, test_slurm_tune.py) share it. Skips with the reason where it
    cannot start (not root, packages missing)."""
    from slurm_cluster import ClusterUnavailable, SlurmCluster, why_unavailable

    why = why_unavailable()
    if why:
        pytest.skip(f"SLURM tests: {os.environ.get('REGLAB_SLURM_UNAVAILABLE') or why}")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except ClusterUnavailable as e:
        pytest.skip(f"SLURM tests: the cluster did not start: {e}")
    yield c
    c.stop()
