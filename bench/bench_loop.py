"""One MNIST epoch of the MLP 784-128-128-10 (batch 128, SGD lr 0.1), three ways, same run:

- reglab: reglab's training loop (`Trainer.fit`: tensors on the device, batches are index slices,
  per-step logging, checkpoint and log writes); data preparation and the end-of-run analysis are
  outside the timed region, evaluation is reduced to one example, so the loop itself is timed;
- bare: a loop that only slices tensors and steps (the floor);
- dataloader: the conventional loop: a per-sample torch.utils.data.Dataset doing what
  torchvision's MNIST dataset does (uint8 array -> PIL image -> float tensor / 255 -> normalize)
  and a DataLoader (batch 128, shuffled, no workers).

Targets: reglab at least 10x faster than the DataLoader loop, within 1.3x of the bare loop.
Uses MNIST from $REGLAB_DATA when present, else random MNIST-shaped data (said in the output).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common import entry, print_table, timeit, write_results
from reglab.config import load_config
from reglab.data import build_task, resolve_data_dir
from reglab.models import build_model
from reglab.store import RunDir
from reglab.train import Trainer, prepare

MEAN, STD = 0.1307, 0.3081


def mnist_source():
    d = os.environ.get("REGLAB_DATA")
    if d and (resolve_data_dir(d) / "mnist").exists():
        return "mnist", d
    return "synthetic", None


def reglab_epoch_time(data_dir) -> float:
    """Wall time of Trainer.fit for one epoch (prepare and analysis excluded)."""
    overrides = [
        "data.dataset=mnist",
        "data.test_limit=1",
        "model.widths=[784,128,128,10]",
        "optim.lr=0.1",
        "train.batch_size=128",
        "train.epochs=1",
        "train.eval_at_start=false",
        "train.eval_train_limit=1",
        "train.progress=false",
        "analysis.margins=false",
        "analysis.spectra=false",
        "analysis.sparsity=false",
    ]
    cfg = load_config(None, overrides)
    setup = prepare(cfg, data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        rd = RunDir(tmp)
        rd.create({})
        t0 = time.perf_counter()
        Trainer(setup, rd).fit()
        return time.perf_counter() - t0


def median_time(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    return statistics.median(fn() for _ in range(repeat))


def tensors(data_dir):
    cfg = load_config(None, ["data.dataset=mnist"])
    task = build_task(cfg.data, 0, "cpu", resolve_data_dir(data_dir))
    return task.x_train, task.y_train


def model():
    torch.manual_seed(0)
    cfg = load_config(None, ["model.widths=[784,128,128,10]"]).model
    return build_model(cfg, (1, 28, 28), 10)


def bare_epoch(x, y):
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    perm = torch.randperm(x.shape[0])
    for i in range(0, x.shape[0], 128):
        idx = perm[i : i + 128]
        loss = F.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


class PerSample(Dataset):
    """What torchvision's MNIST + ToTensor + Normalize do for every sample."""

    def __init__(self, images_u8, labels):
        self.images, self.labels = images_u8.squeeze(1).numpy(), labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)
        return (x - MEAN) / STD, int(self.labels[i])


def dataloader_epoch(images_u8, labels):
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for xb, yb in DataLoader(PerSample(images_u8, labels), batch_size=128, shuffle=True):
        loss = F.cross_entropy(m(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main():
    source, data_dir = mnist_source()
    if source == "synthetic":
        print("REGLAB_DATA has no MNIST: the bench needs it (set REGLAB_DATA=../shared/data)")
        return
    x, y = tensors(data_dir)
    images_u8 = (x * STD + MEAN).mul(255).round().clamp(0, 255).to(torch.uint8)
    t_reglab = median_time(lambda: reglab_epoch_time(data_dir), repeat=3)
    t_bare = timeit(lambda: bare_epoch(x, y), repeat=3)
    t_dl = timeit(lambda: dataloader_epoch(images_u8, y), repeat=1, warmup=0)
    entries = [
        entry(
            "loop: reglab epoch vs DataLoader epoch",
            t_reglab,
            t_dl,
            "dataloader_epoch",
            "s",
            "ratio <= 0.1 (>=10x faster)",
            t_reglab / t_dl <= 0.1,
        ),
        entry(
            "loop: reglab epoch vs bare slicing loop",
            t_reglab,
            t_bare,
            "bare_epoch",
            "s",
            "ratio <= 1.3",
            t_reglab / t_bare <= 1.3,
        ),
    ]
    print_table(entries, f"MNIST epoch, MLP 784-128-128-10, batch 128, {torch.get_num_threads()} threads")
    write_results(entries, "loop")


if __name__ == "__main__":
    main()
