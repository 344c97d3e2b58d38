"""build_task: limits, binary pairs, per-class subsets, splits, label noise, normalization,
augmentation, and the errors a user can cause. Runs on small fixture datasets in tmp dirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_data import make_cifar_arrays, make_mnist_arrays, write_cifar_folder, write_mnist_folder
from reglab.config import DataConfig
from reglab.data import DATASETS, TaskData, build_task, random_crop_flip
from reglab.data.tasks import flip_labels, per_class_indices, split_indices
from reglab.errors import ConfigError

N_TRAIN, N_TEST = 200, 50


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    """A data directory with a small MNIST-format dataset: 8x8 unique images, 20 per class."""
    d = tmp_path_factory.mktemp("data")
    write_mnist_folder(d / "mnist", make_mnist_arrays(N_TRAIN, N_TEST, seed=3, size=8))
    return d


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cifar")
    write_cifar_folder(d / "cifar-10-batches-py", make_cifar_arrays(per_batch=40, n_test=30, seed=5))
    return d


def task(data_dir: Path, run_seed: int = 0, **kw) -> TaskData:
    return build_task(DataConfig(dataset=kw.pop("dataset", "mnist"), **kw), run_seed=run_seed, data_dir=data_dir)


def raw_mnist(data_dir: Path):
    return DATASETS.get("mnist").load(data_dir, download=False)


def rows(x: torch.Tensor) -> list[bytes]:
    """Each example as bytes, to compare sets of examples across tensors."""
    return [r.numpy().tobytes() for r in x.flatten(1)]


# ----------------------------------------------------------------------------- basic shape


def test_plain_task(mnist_dir):
    t = task(mnist_dir)
    assert t.task == "classes" and t.num_outputs == 10
    assert t.x_train.shape == (N_TRAIN, 1, 8, 8) and t.x_train.dtype == torch.float32
    assert t.y_train.dtype == torch.int64 and t.x_test.shape == (N_TEST, 1, 8, 8)
    assert t.input_shape == (1, 8, 8)
    assert t.x_val is None and t.y_val is None and t.augment is None
    json.dumps(t.meta)  # JSON-serializable
    assert t.meta["dataset"] == "mnist" and t.meta["num_train"] == N_TRAIN
    assert t.meta["source"] == str(mnist_dir / "mnist")


def test_limits_keep_the_first_examples(mnist_dir):
    raw = raw_mnist(mnist_dir)
    t = task(mnist_dir, train_limit=30, test_limit=7, normalize="none")
    assert torch.equal(t.y_train, raw.y_train[:30]) and torch.equal(t.y_test, raw.y_test[:7])
    assert torch.allclose(t.x_train, raw.x_train[:30].float() / 255)


def test_vector_datasets():
    d = build_task(DataConfig(dataset="digits"), run_seed=0)
    assert d.input_shape == (64,) and d.x_train.shape == (1497, 64) and d.num_outputs == 10
    s = build_task(DataConfig(dataset="synthetic", synthetic={"n_train": 64, "n_test": 32, "dim": 5}), run_seed=0)
    assert s.input_shape == (5,) and s.x_test.shape == (32, 5) and s.num_outputs == 4


# ----------------------------------------------------------------------------- binary pair


def test_binary_pair_targets(mnist_dir):
    raw = raw_mnist(mnist_dir)
    t = task(mnist_dir, binary_pair=(3, 7))
    assert t.task == "binary" and t.num_outputs == 1
    assert t.y_train.dtype == torch.float32
    assert set(t.y_train.unique().tolist()) == {-1.0, 1.0}
    assert (t.y_train == -1).sum() == (raw.y_train == 3).sum()
    assert (t.y_train == 1).sum() == (raw.y_train == 7).sum()
    assert (t.y_test == -1).sum() == (raw.y_test == 3).sum()
    assert (t.y_test == 1).sum() == (raw.y_test == 7).sum()
    assert len(t.y_test) == int(((raw.y_test == 3) | (raw.y_test == 7)).sum())
    assert t.meta["classes"] == ["3", "7"]
    # the images kept are exactly those of the two classes, with matching targets
    keep = (raw.y_train == 3) | (raw.y_train == 7)
    expected = raw.x_train[keep].float().sub(0.1307 * 255).div(0.3081 * 255)
    assert torch.allclose(t.x_train, expected, atol=1e-5)
    assert torch.equal(t.y_train, torch.where(raw.y_train[keep] == 7, 1.0, -1.0))


@pytest.mark.parametrize("pair", [(3, 10), (-1, 2), (4, 4)])
def test_binary_pair_bad_index(mnist_dir, pair):
    with pytest.raises(ConfigError) as e:
        task(mnist_dir, binary_pair=pair)
    assert e.value.field == "data.binary_pair" and "9 (9)" in str(e.value)


# ----------------------------------------------------------------------------- per_class, splits


def test_per_class_subset_and_rest_as_validation(mnist_dir):
    raw = raw_mnist(mnist_dir)
    t = task(mnist_dir, per_class=5, rest_as_validation=True)
    assert torch.bincount(t.y_train, minlength=10).tolist() == [5] * 10
    assert len(t.y_val) == N_TRAIN - 50
    assert torch.equal(torch.bincount(t.y_val, minlength=10), torch.bincount(raw.y_train, minlength=10) - 5)
    train_rows, val_rows = rows(t.x_train), rows(t.x_val)
    assert not set(train_rows) & set(val_rows)
    assert sorted(train_rows + val_rows) == sorted(rows(task(mnist_dir).x_train))
    # seeded: same seed same subset, other seed another subset
    assert torch.equal(task(mnist_dir, per_class=5).x_train, t.x_train)
    assert not torch.equal(task(mnist_dir, per_class=5, subset_seed=1).x_train, t.x_train)


def test_per_class_takes_the_first_of_each_class_in_the_permutation():
    y = torch.tensor([0, 1, 0, 1, 0, 1, 2, 2, 2, 0])
    subset, rest = per_class_indices(y, 2, 3, seed=7)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(7))
    expected = [int(i) for c in range(3) for i in [j for j in perm if y[j] == c][:2]]
    assert sorted(subset.tolist()) == sorted(expected)
    assert sorted(subset.tolist() + rest.tolist()) == list(range(10))


def test_per_class_too_large(mnist_dir):
    with pytest.raises(ConfigError) as e:
        task(mnist_dir, per_class=21)
    assert e.value.field == "data.per_class" and "1..20" in str(e.value)


def test_split_indices_disjoint_cover_seeded_and_like_random_split():
    train, val = split_indices(100, 30, seed=42)
    assert len(val) == 30 and len(train) == 70
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    assert torch.equal(split_indices(100, 30, seed=42)[1], val)
    assert not torch.equal(split_indices(100, 30, seed=43)[1], val)
    a, b = torch.utils.data.random_split(range(100), [70, 30], generator=torch.Generator().manual_seed(42))
    assert list(a.indices) == train.tolist() and list(b.indices) == val.tolist()


@pytest.mark.parametrize("kw, n_val", [({"val_size": 37}, 37), ({"val_fraction": 0.2}, 40)])
def test_validation_split_in_task(mnist_dir, kw, n_val):
    t = task(mnist_dir, **kw)
    assert len(t.y_val) == n_val and len(t.y_train) == N_TRAIN - n_val
    train_rows, val_rows = rows(t.x_train), rows(t.x_val)
    assert not set(train_rows) & set(val_rows)
    assert sorted(train_rows + val_rows) == sorted(rows(task(mnist_dir).x_train))
    assert torch.equal(task(mnist_dir, **kw).x_val, t.x_val)
    assert not torch.equal(task(mnist_dir, split_seed=1, **kw).x_val, t.x_val)


@pytest.mark.parametrize("kw, field", [
    ({"val_size": N_TRAIN}, "data.val_size"),
    ({"val_fraction": 0.001}, "data.val_fraction"),
    ({"per_class": 2, "rest_as_validation": True, "val_size": 3}, "data.val_fraction"),
])  # fmt: skip
def test_validation_errors(mnist_dir, kw, field):
    with pytest.raises(ConfigError) as e:
        task(mnist_dir, **kw)
    assert e.value.field == field


# ----------------------------------------------------------------------------- label noise


def test_label_noise_flips_exactly_floor_pn_in_training_only(mnist_dir):
    clean = task(mnist_dir, val_size=100)
    noisy = task(mnist_dir, val_size=100, label_noise=0.29, noise_seed=5)
    changed = (noisy.y_train != clean.y_train).nonzero().squeeze(1)
    assert len(changed) == 29  # floor(0.29 * 100), the decimal as written
    assert noisy.meta["labels_flipped"] == 29
    assert torch.equal(noisy.flipped, changed)
    assert torch.equal(noisy.x_train, clean.x_train)
    assert torch.equal(noisy.y_val, clean.y_val) and torch.equal(noisy.y_test, clean.y_test)


def test_label_noise_is_seeded(mnist_dir):
    def flips(**kw):
        return task(mnist_dir, label_noise=0.3, **kw).y_train

    assert torch.equal(flips(noise_seed=1), flips(noise_seed=1))
    assert not torch.equal(flips(noise_seed=1), flips(noise_seed=2))
    assert torch.equal(flips(noise_seed=None, run_seed=4), flips(noise_seed=4, run_seed=0))
    assert not torch.equal(flips(run_seed=4), flips(run_seed=5))


def test_multiclass_flips_go_uniformly_to_other_classes():
    y = torch.arange(10).repeat(2000)
    noisy, idx = flip_labels(y, 0.5, 10, seed=0)
    assert len(idx) == 10000 and len(set(idx.tolist())) == 10000
    assert (noisy[idx] != y[idx]).all()
    untouched = torch.ones(len(y), dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(noisy[untouched], y[untouched])
    # each wrong label is one of the 9 others, uniformly (expected 10000/9 ~ 1111 per offset)
    offsets = torch.bincount((noisy[idx] - y[idx]) % 10, minlength=10)
    assert offsets[0] == 0 and offsets[1:].min() > 1000 and offsets[1:].max() < 1230


def test_binary_label_noise_negates(mnist_dir):
    clean = task(mnist_dir, binary_pair=(0, 1))
    noisy = task(mnist_dir, binary_pair=(0, 1), label_noise=0.25, noise_seed=0)
    n = len(clean.y_train)
    changed = noisy.y_train != clean.y_train
    assert int(changed.sum()) == n // 4
    assert torch.equal(noisy.y_train[changed], -clean.y_train[changed])
    assert torch.equal(noisy.y_test, clean.y_test)


# ----------------------------------------------------------------------------- normalization


def test_normalization_custom_with_computed_stats(cifar_dir):
    raw = DATASETS.get("cifar10").load(cifar_dir, download=False)
    pixels = raw.x_train.double() / 255
    mean = pixels.mean(dim=(0, 2, 3)).tolist()
    std = pixels.std(dim=(0, 2, 3), unbiased=False).tolist()
    t = task(cifar_dir, dataset="cifar10", normalize="custom", mean=mean, std=std)
    assert t.x_train.shape == (200, 3, 32, 32)
    assert torch.allclose(t.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(t.x_train.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert t.meta["mean"] == mean and t.meta["std"] == std


def test_normalization_dataset_and_none(cifar_dir):
    raw = DATASETS.get("cifar10").load(cifar_dir, download=False)
    spec = DATASETS.get("cifar10")
    t = task(cifar_dir, dataset="cifar10")
    m = torch.tensor(spec.mean).view(1, 3, 1, 1)
    s = torch.tensor(spec.std).view(1, 3, 1, 1)
    assert torch.allclose(t.x_test, (raw.x_test.float() / 255 - m) / s, atol=1e-5)
    none = task(cifar_dir, dataset="cifar10", normalize="none")
    assert torch.allclose(none.x_train, raw.x_train.float() / 255)
    assert none.x_train.min() >= 0 and none.x_train.max() <= 1


def test_normalization_digits_dataset_stats():
    t = build_task(DataConfig(dataset="digits"), run_seed=0)
    assert abs(float(t.x_train.mean())) < 1e-4 and abs(float(t.x_train.std(unbiased=False)) - 1) < 1e-4


@pytest.mark.parametrize("mean, std, field", [([0.5], [0.2, 0.2, 0.2], "data.mean"),
                                              ([0.5] * 3, [0.2, 0.2], "data.std"),
                                              ([0.5] * 3, [0.2, 0.0, 0.2], "data.std")])  # fmt: skip
def test_custom_normalization_errors(cifar_dir, mean, std, field):
    with pytest.raises(ConfigError) as e:
        task(cifar_dir, dataset="cifar10", normalize="custom", mean=mean, std=std)
    assert e.value.field == field


# ----------------------------------------------------------------------------- augmentation


def position_image(c: int = 1, h: int = 6, w: int = 6) -> torch.Tensor:
    """One image whose pixel (ch, i, j) holds 1000*(ch+1) + 10*i + j + 1 (never 0)."""
    ch, i, j = torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
    return (1000 * (ch + 1) + 10 * i + j + 1).float()[None]


def test_augment_crops_and_flips_the_expected_pixels():
    """Every output is exactly one of the 5x5 crops of the zero-padded image, mirrored or not,
    and all 50 (dy, dx, flip) combinations occur."""
    img = position_image(c=2)
    out = random_crop_flip(img.repeat(1000, 1, 1, 1), torch.Generator().manual_seed(0), padding=2)
    assert out.shape == (1000, 2, 6, 6)
    padded = torch.nn.functional.pad(img[0], (2, 2, 2, 2))
    candidates = {}
    for dy in range(5):
        for dx in range(5):
            crop = padded[:, dy : dy + 6, dx : dx + 6]
            candidates[(dy, dx, False)] = crop
            candidates[(dy, dx, True)] = crop.flip(-1)
    seen = []
    for o in out:
        matches = [key for key, ref in candidates.items() if torch.equal(o, ref)]
        assert len(matches) == 1
        seen.append(matches[0])
    assert set(seen) == set(candidates)
    assert 0.45 < np.mean([f for _, _, f in seen]) < 0.55


def test_augment_hand_example_exact():
    """With padding 1 on a 2x2 image, check one sample against a by-hand crop and flip."""
    img = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]).repeat(64, 1, 1, 1)
    g = torch.Generator().manual_seed(3)
    out = random_crop_flip(img, g, padding=1)
    g = torch.Generator().manual_seed(3)
    off_y = torch.randint(0, 3, (64,), generator=g)
    off_x = torch.randint(0, 3, (64,), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
    for k in range(64):
        ref = padded[k, :, off_y[k] : off_y[k] + 2, off_x[k] : off_x[k] + 2]
        if flip[k]:
            ref = ref.flip(-1)
        assert torch.equal(out[k], ref)


def test_augment_deterministic_and_flip_rate():
    x = torch.randn(4000, 3, 8, 8)
    a = random_crop_flip(x, torch.Generator().manual_seed(11))
    b = random_crop_flip(x, torch.Generator().manual_seed(11))
    c = random_crop_flip(x, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # with padding 0 only flips happen: count mirrored examples
    d = random_crop_flip(x, torch.Generator().manual_seed(1), padding=0)
    mirrored = (d == x.flip(-1)).flatten(1).all(1)
    unchanged = (d == x).flatten(1).all(1)
    assert torch.all(mirrored ^ unchanged)
    assert 0.46 < mirrored.float().mean() < 0.54


def test_task_augment_pads_with_black_pixels(cifar_dir):
    t = task(cifar_dir, dataset="cifar10", augment=True)
    assert t.augment is not None and t.meta["augment"] is True
    spec = DATASETS.get("cifar10")
    out = t.augment(t.x_train[:64], torch.Generator().manual_seed(0))
    assert out.shape == (64, 3, 32, 32)
    black = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std)])
    # some example is shifted down, so its first row is padding: black in normalized units
    first_rows = out[:, :, 0, :]
    is_pad = torch.isclose(first_rows, black.view(1, 3, 1).expand_as(first_rows)).all(dim=(1, 2))
    assert is_pad.any()


def test_augment_on_vectors_is_an_error():
    with pytest.raises(ConfigError) as e:
        build_task(DataConfig(dataset="digits", augment=True), run_seed=0)
    assert e.value.field == "data.augment"


def test_unknown_dataset():
    with pytest.raises(ConfigError) as e:
        build_task(DataConfig(dataset="imagenet"), run_seed=0)
    assert e.value.field == "data.dataset" and "mnist" in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_task_and_augment_on_cuda(cifar_dir):
    cpu = task(cifar_dir, dataset="cifar10", augment=True, label_noise=0.1)
    gpu = build_task(DataConfig(dataset="cifar10", augment=True, label_noise=0.1), 0, "cuda", cifar_dir)
    assert gpu.x_train.is_cuda and gpu.y_test.is_cuda
    assert torch.allclose(gpu.x_train.cpu(), cpu.x_train) and torch.equal(gpu.y_train.cpu(), cpu.y_train)
    out = gpu.augment(gpu.x_train, torch.Generator(device="cuda").manual_seed(0))
    assert out.is_cuda and out.shape == gpu.x_train.shape
