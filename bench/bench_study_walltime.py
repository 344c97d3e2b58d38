"""Study 2 at its own settings, run by reglab and by a transcription of the study's script, back
to back in one process: the ratio of total wall times.

The runs: no penalty, the nuclear-norm penalty (mu = 1e-4, 2 x sum of singular values, the
study's `nuclear_norm` method) and the path-energy penalty (mu = 1e-4, `blocks`), each for the
same seeds, 2 epochs of MNIST on the SmallMLP 784-128-128-10, SGD lr 0.1 momentum 0.9, batch
128, a test evaluation after every epoch.

- original: the study's loop as its script writes it (seed-studies.md section 2): a per-sample
  Dataset that converts each uint8 image and normalizes it (torchvision's MNIST + ToTensor +
  Normalize, transcribed op for op: bench_loop.PerSample), a DataLoader (batch 128, shuffled,
  no workers), the penalty as the study computes it (svdvals of every 2-D parameter; the squared
  distance to the previous step's flattened weights), and after every epoch the test accuracy
  (test batch 512) and the energy statistic of every run, baseline included;
- reglab: the same runs as one sweep (`run_sweep`, what `reglab sweep` does), with what reglab
  offers a user: vectorized seeds (`--vectorize auto`), tensors on the device, the default
  solver. Its runs log per-step penalties and, after every epoch, every layer's spectrum
  (`analysis.spectra_every: 1`: the spectral energy of every run); the baseline's path energy
  is not monitored (a monitor would stop the runs from being vectorized). Prepare, data loading
  and writing every run directory are inside the timed region. Also timed one by one.

Both sides run on the same number of threads (--threads, default 1, as the issue's hand
measurement). The entries carry each side's mean final test accuracy per setting: reglab's
results must lie within seed noise of the original's (reported, not asserted).

Target: reglab at least 10x faster for the same runs. Needs MNIST in $REGLAB_DATA (exits 1
otherwise). Tiny mode: one seed, one epoch of 2048 examples (random MNIST-shaped data without
MNIST).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from bench_loop import MEAN, STD, TINY_EXAMPLES, PerSample, data_overrides, tensors
from common import Session, entry, mnist_data_dir, print_table, tiny
from reglab.data import build_task, resolve_data_dir
from reglab.results import load_runs
from reglab.sweep.grid import expand
from reglab.sweep.runner import run_sweep
from reglab.validation import load_config

SETTINGS = ("none", "nuclear_norm", "path_energy")
MU = 1e-4
EPOCHS = 1 if tiny() else 2
SEEDS = [0] if tiny() else [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------- the study's loop


class SmallMLP(nn.Module):
    def __init__(self, hidden: int = 128):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def spectral_energy(model: nn.Module) -> torch.Tensor:
    """The study's `nuclear_norm` method: 2 x sum of singular values of every 2-D parameter."""
    return sum(2 * torch.linalg.svdvals(p).sum() for p in model.parameters() if p.dim() == 2)


def weight_state(model: nn.Module) -> torch.Tensor:
    """The study's `blocks` state: the flattened 2-D weights, concatenated."""
    return torch.cat([p.reshape(-1) for p in model.parameters() if p.dim() == 2])


def original_run(setting: str, seed: int, train_set, test_set) -> float:
    """One run of the study's script; returns the final test accuracy."""
    torch.manual_seed(seed)
    model = SmallMLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    prev = None
    acc = 0.0
    for _ in range(EPOCHS):
        model.train()
        total, path_energy = 0.0, 0.0
        for x, y in DataLoader(train_set, batch_size=128, shuffle=True):
            out = model(x)
            loss = F.cross_entropy(out, y)
            state = weight_state(model)
            step_energy = ((state - prev) ** 2).sum() if prev is not None else torch.zeros(())
            prev = state.detach()
            path_energy += float(step_energy.detach())
            if setting == "nuclear_norm":
                loss = loss + MU * spectral_energy(model)
            elif setting == "path_energy":
                loss = loss + MU / 2 * step_energy
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * x.size(0)
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in DataLoader(test_set, batch_size=512):
                correct += int((model(x).argmax(1) == y).sum())
            float(spectral_energy(model))  # the epoch's energy statistic, as the study prints it
        acc = correct / len(test_set)
    return acc


def original_study(data_dir) -> tuple[float, dict[str, float]]:
    """Wall time of every run of the study's loop, and the mean final test accuracy per setting."""
    x, y = tensors(data_dir)
    to_u8 = lambda t: (t * STD + MEAN).mul(255).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    train_set = PerSample(to_u8(x), y)
    test_set = _test_set(data_dir)
    t0 = time.perf_counter()
    accs = {s: [original_run(s, seed, train_set, test_set) for seed in SEEDS] for s in SETTINGS}
    return time.perf_counter() - t0, {s: statistics.mean(a) for s, a in accs.items()}


def _test_set(data_dir):
    cfg = load_config(None, data_overrides(data_dir))
    task = build_task(cfg.data, 0, "cpu", resolve_data_dir(data_dir) if data_dir else None)
    x = task.x_test.reshape(-1, 1, 28, 28)
    return PerSample((x * STD + MEAN).mul(255).round().clamp(0, 255).to(torch.uint8), task.y_test)


# ---------------------------------------------------------------------- reglab


def sweep_spec(data_dir) -> dict:
    base = load_config(None, data_overrides(data_dir))
    data = base.data.model_dump(mode="json", exclude_defaults=True)
    return {
        "name": "study2-walltime",
        "seed": SEEDS,
        "data": data,
        "model": {"name": "mlp", "widths": [784, 128, 128, 10]},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "train": {"batch_size": 128, "epochs": EPOCHS, "eval_batch_size": 512, "progress": False},
        "analysis": {"margins": False, "sparsity": False, "spectra": False, "spectra_every": 1},
        "variants": [
            {"regularizers": []},
            {"regularizers": [{"name": "nuclear_norm", "lam": MU, "graph_energy_convention": True}]},
            {"regularizers": [{"name": "path_energy", "lam": MU}]},
        ],
    }


def reglab_study(data_dir, vectorize: str) -> tuple[float, dict[str, float]]:
    """Wall time of the same runs as one reglab sweep, and the mean final test accuracy per setting."""
    spec = sweep_spec(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        runs = expand(spec)
        run_sweep(spec["name"], tmp, spec, runs, data_dir=data_dir, live=False, vectorize=vectorize)
        wall = time.perf_counter() - t0
        df = load_runs(tmp)
    names = df["regularizers.0.name"].fillna("none") if "regularizers.0.name" in df else ["none"] * len(df)
    df = df.assign(setting=list(names))
    return wall, {s: float(df[df.setting == s]["test_acc"].mean()) for s in SETTINGS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    session = Session()
    data_dir = mnist_data_dir()
    if data_dir is None and not tiny():
        raise SystemExit("bench_study_walltime needs MNIST: set REGLAB_DATA to the data directory")
    t_vec, acc_vec = reglab_study(data_dir, "auto")
    t_one, acc_one = reglab_study(data_dir, "off")
    t_orig, acc_orig = original_study(data_dir)
    data = "mnist" if data_dir else "synthetic MNIST-shaped (REGLAB_DATA has no MNIST)"
    if tiny():
        data += f", first {TINY_EXAMPLES} examples"
    runs = f"{len(SETTINGS)} settings x {len(SEEDS)} seeds x {EPOCHS} epochs"
    accuracy = {
        "original": acc_orig,
        "reglab_vectorized": acc_vec,
        "reglab_one_by_one": acc_one,
    }
    common = {"data": data, "runs": runs, "threads": args.threads, "final_test_acc": accuracy}
    entries = [
        entry(
            "study 2 wall time: reglab sweep (vectorized) vs the study's loop",
            t_vec,
            t_orig,
            "original_study",
            "s",
            "ratio <= 0.1 (>=10x faster)",
            t_vec / t_orig <= 0.1,
            **common,
        ),
        entry(
            "study 2 wall time: reglab sweep (one by one) vs the study's loop",
            t_one,
            t_orig,
            "original_study",
            "s",
            "no target (the one-by-one route, for reference)",
            None,
            **common,
        ),
    ]
    print_table(session.write(entries, "study_walltime"), f"Study 2, {runs}, {args.threads} thread(s)")
    for side, accs in accuracy.items():
        print(f"{side:>18}: " + ", ".join(f"{s} {np.round(a, 4)}" for s, a in accs.items()))


if __name__ == "__main__":
    main()
