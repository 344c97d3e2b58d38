"""One MNIST epoch of the MLP 784-128-128-10 (batch 128, SGD lr 0.1), three ways, same run:

- reglab: reglab's training loop (`Trainer.fit`: tensors on the device, batches are index slices,
  per-step logging, checkpoint and log writes); data preparation and the end-of-run analysis are
  outside the timed region, evaluation is reduced to one example, so the loop itself is timed;
- bare: a loop that only slices tensors and steps (the floor);
- dataloader: the conventional loop: a per-sample torch.utils.data.Dataset running, op for op,
  what torchvision's MNIST dataset with ToTensor and Normalize runs (uint8 tensor -> PIL image ->
  uint8 tensor -> float / 255 -> normalize; `PerSample`) and a DataLoader (batch 128, shuffled,
  no workers).

Targets: reglab at least 10x faster than the DataLoader loop, within 1.3x of the bare loop.
Needs MNIST in $REGLAB_DATA (exits 1 otherwise, writing nothing). Tiny mode ($REGLAB_BENCH_TINY=1):
an epoch of 2048 examples, one timing each; without MNIST it uses random MNIST-shaped data (the
entries' "data" says which).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common import TIMING_ONLY, Session, entry, mnist_data_dir, print_table, timeit, tiny
from reglab.build import prepare
from reglab.data import build_task, resolve_data_dir
from reglab.models import build_model
from reglab.store import RunDir
from reglab.train import Trainer
from reglab.validation import load_config

MEAN, STD = 0.1307, 0.3081
TINY_EXAMPLES = 2048
REPEAT = 1 if tiny() else 3


def data_overrides(data_dir) -> list[str]:
    """MNIST, or random MNIST-shaped data (dim 784, 10 classes) when data_dir is None."""
    if data_dir is None:
        n = TINY_EXAMPLES if tiny() else 60000
        return [
            "data.dataset=synthetic",
            "data.synthetic.dim=784",
            "data.synthetic.classes=10",
            f"data.synthetic.n_train={n}",
            "data.synthetic.n_test=16",
        ]
    return ["data.dataset=mnist", *([f"data.train_limit={TINY_EXAMPLES}"] if tiny() else [])]


def reglab_epoch_time(data_dir) -> float:
    """Wall time of Trainer.fit for one epoch (prepare and analysis excluded)."""
    overrides = [
        *data_overrides(data_dir),
        "data.test_limit=1",
        "model.widths=[784,128,128,10]",
        "optim.lr=0.1",
        "train.batch_size=128",
        "train.epochs=1",
        *TIMING_ONLY,
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
    cfg = load_config(None, data_overrides(data_dir))
    task = build_task(cfg.data, 0, "cpu", resolve_data_dir(data_dir) if data_dir else None)
    return task.x_train.reshape(-1, 1, 28, 28), task.y_train


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
    """Torchvision's MNIST dataset with transforms Compose([ToTensor(), Normalize((0.1307,),
    (0.3081,))]), op for op as torchvision 0.16+ runs them for every sample (torchvision cannot be
    imported beside this CPU torch, so its calls are transcribed here): index the uint8 tensor and
    the labels, make a PIL image, copy it into a tensor, view it as H x W x C, permute to C x H x W
    and make it contiguous, convert to float and divide by 255 (ToTensor); check the image,
    clone it, build the mean and std tensors, check std for zeros, view them as C x 1 x 1, then
    sub_ and div_ (Normalize, an nn.Module called per sample). The numbers are those of
    (x / 255 - MEAN) / STD."""

    def __init__(self, images_u8, labels):
        self.data, self.targets = images_u8.reshape(-1, 28, 28), labels
        self.normalize = _Normalize((MEAN,), (STD,))

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img, target = self.data[i], int(self.targets[i])
        pic = Image.fromarray(img.numpy(), mode="L")
        return self.normalize(_to_tensor(pic)), target


def _to_tensor(pic: Image.Image) -> torch.Tensor:
    """ToTensor on a PIL image of mode L (see PerSample)."""
    if not isinstance(pic, Image.Image):
        raise TypeError(f"pic should be a PIL Image, got {type(pic)}")
    default_float_dtype = torch.get_default_dtype()
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
    img = img.permute((2, 0, 1)).contiguous()
    return img.to(dtype=default_float_dtype).div(255)


class _Normalize(torch.nn.Module):
    """Normalize(mean, std), not in place (see PerSample)."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.ndim < 3:
            raise TypeError("a float image tensor of shape (C, H, W) is expected")
        tensor = tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device)
        if (std == 0).any():
            raise ValueError("std evaluated to zero, leading to division by zero")
        return tensor.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


def dataloader_epoch(images_u8, labels):
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for xb, yb in DataLoader(PerSample(images_u8, labels), batch_size=128, shuffle=True):
        loss = F.cross_entropy(m(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main():
    session = Session()
    data_dir = mnist_data_dir()
    if data_dir is None and not tiny():
        raise SystemExit("bench_loop needs MNIST: set REGLAB_DATA to the data directory (e.g. ../shared/data)")
    x, y = tensors(data_dir)
    images_u8 = (x * STD + MEAN).mul(255).round().clamp(0, 255).to(torch.uint8)
    t_reglab = median_time(lambda: reglab_epoch_time(data_dir), repeat=REPEAT)
    t_bare = timeit(lambda: bare_epoch(x, y), repeat=REPEAT)
    t_dl = timeit(lambda: dataloader_epoch(images_u8, y), repeat=1, warmup=0)
    data = "mnist" if data_dir else "synthetic MNIST-shaped (REGLAB_DATA has no MNIST)"
    if tiny():
        data += f", first {x.shape[0]} examples"
    entries = [
        entry(
            "loop: reglab epoch vs DataLoader epoch",
            t_reglab,
            t_dl,
            "dataloader_epoch",
            "s",
            "ratio <= 0.1 (>=10x faster)",
            t_reglab / t_dl <= 0.1,
            data=data,
        ),
        entry(
            "loop: reglab epoch vs bare slicing loop",
            t_reglab,
            t_bare,
            "bare_epoch",
            "s",
            "ratio <= 1.3",
            t_reglab / t_bare <= 1.3,
            data=data,
        ),
    ]
    title = f"MNIST epoch, MLP 784-128-128-10, batch 128, {torch.get_num_threads()} threads"
    print_table(session.write(entries, "loop"), title)


if __name__ == "__main__":
    main()
