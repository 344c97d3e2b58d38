"""The dataset registry: every dataset reglab can read, by name."""

from __future__ import annotations

from pathlib import Path

from ..registry import Registry
from . import cifar10, digits, mnist, synthetic
from .location import data_search_path
from .spec import DatasetSpec

DATASETS: Registry[DatasetSpec] = Registry(
    "dataset", ("a reglab.data.DatasetSpec", lambda obj: isinstance(obj, DatasetSpec))
)

DATASETS.add(
    "mnist",
    DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits, 60k/10k grey 28x28 images, 10 classes",
        mean=(0.1307,),
        std=(0.3081,),
        is_image=True,
        find=mnist.find_mnist,
        read=mnist.read_mnist,
        fetch=mnist.fetch_mnist,
        expected=mnist.EXPECTED_FILES,
        install_dir=lambda d: d / "mnist",
    ),
)
DATASETS.add(
    "fashion_mnist",
    DatasetSpec(
        name="fashion_mnist",
        description="Fashion-MNIST clothing, 60k/10k grey 28x28 images, 10 classes",
        mean=(0.2860,),
        std=(0.3530,),
        is_image=True,
        find=mnist.find_fashion,
        read=mnist.read_fashion,
        fetch=mnist.fetch_fashion,
        expected=mnist.EXPECTED_FILES,
        install_dir=lambda d: d / "fashion-mnist",
    ),
)
DATASETS.add(
    "cifar10",
    DatasetSpec(
        name="cifar10",
        description="CIFAR-10, 50k/10k colour 32x32 images, 10 classes",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        is_image=True,
        find=cifar10.find_cifar10,
        read=cifar10.read_cifar10_data,
        fetch=cifar10.fetch_cifar10,
        expected=cifar10.EXPECTED,
    ),
)
DATASETS.add(
    "digits",
    DatasetSpec(
        name="digits",
        description="scikit-learn 8x8 digits as 64 features in [0,1], 1497/300 fixed split, 10 classes",
        mean=(digits.DIGITS_MEAN,),
        std=(digits.DIGITS_STD,),
        is_image=False,
        find=digits.find_digits,
        read=digits.read_digits,
        needs_files=False,
    ),
)
DATASETS.add(
    "synthetic",
    DatasetSpec(
        name="synthetic",
        description="Gaussian inputs labelled by a random teacher MLP (sizes from data.synthetic)",
        mean=(synthetic.SYNTHETIC_MEAN,),
        std=(synthetic.SYNTHETIC_STD,),
        is_image=False,
        find=synthetic.find_synthetic,
        read=synthetic.read_synthetic,
        needs_files=False,
    ),
)


def dataset_status(data_dir: Path, verify: bool = False) -> list[dict]:
    """One row per dataset for `reglab data`: found or not, and where or why not.

    Keys: name, found (bool), damaged (bool), where (str: a path, or a note for datasets without
    files), why (str: empty when found and sound), description. With verify, every dataset found
    is read in full, so a truncated or corrupt file is reported as damaged rather than found.
    """
    from ..errors import UserError

    rows = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        where, why = spec.locate(Path(data_dir))
        found = where is not None or not spec.needs_files
        damaged = False
        if verify and where is not None:
            try:
                spec.load(Path(data_dir), download=False)
            except (UserError, OSError, EOFError, ValueError) as e:
                damaged, why = True, str(e)
        rows.append(
            {
                "name": name,
                "found": found,
                "damaged": damaged,
                "where": str(where) if where is not None else (why if found else ""),
                "why": why if damaged or not found else "",
                "description": spec.description,
            }
        )
    return rows


def data_dir_for(dataset: str, explicit: str | None) -> Path:
    """The first directory of the search path that has `dataset`, else the first directory."""
    dirs = data_search_path(explicit)
    spec = DATASETS.get(dataset, "data.dataset")
    for d in dirs:
        if spec.locate(d)[0] is not None:
            return d
    return dirs[0]
