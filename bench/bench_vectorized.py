"""Vectorized group training vs one model trained alone, same process, same code paths:

- group: reglab.vectorized.train_group over M runs (per model: wall time / M);
- alone: reglab.train.run of one of those runs.

Both write complete run directories; evaluation is reduced to one example per split and the end
of run analysis is off, the only evaluation is the final one and no resume checkpoint is written,
so training is what is timed (run setup, including each run's `prepare`,
is included on both sides).

(a) 16 MLPs 784-28-10 on MNIST, l2 with 16 different lambdas, one epoch, batch 128, SGD lr 0.1;
    target: time per model <= 0.35 x alone.
(b) 64 MLPs 64-32-10 on digits, 8 seeds x 8 lambdas, 3 epochs, batch 64, SGD lr 0.1;
    target: time per model <= 0.2 x alone.
(c) where the gain disappears: groups of 8 MNIST MLPs 784-H-10 for growing H (one epoch, time
    per model vs alone), the evidence for grouping.MAX_PARAMS (500k).
(d) groups of runs that draw their own batches: 5 seeds (each its own data order, so the group
    takes M different batches a step) of MLPs 784-28-10 and of study 2's 784-128-128-10, one
    epoch; target: no slower than alone (ratio <= 1).

MNIST comes from $REGLAB_DATA: without it the benchmark exits 1 having written nothing, unless
--digits-only is given. Options: --threads N (default 2; other values write the group
"vectorized_<N>thread"), --digits-only, --no-size-sweep. Tiny mode ($REGLAB_BENCH_TINY=1): (a)
with 2 models on the first 1024 examples (random MNIST-shaped data without MNIST; the entry's
"data" says which), (b) with 4 models for 1 epoch, no size sweep, (d) with 2 seeds of the small
MLP, one timing each.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import TIMING_ONLY, Session, entry, mnist_data_dir, print_table, tiny
from reglab.config import config_hash
from reglab.sweep.grid import PlannedRun
from reglab.train import run
from reglab.validation import load_config
from reglab.vectorized import train_group

QUIET = [*TIMING_ONLY, "train.eval_every=1000", "train.checkpoint_every=1000", "data.test_limit=1"]
TINY_EXAMPLES = 1024
SYNTHETIC_MNIST = [
    "data.dataset=synthetic",
    "data.synthetic.dim=784",
    "data.synthetic.classes=10",
    f"data.synthetic.n_train={TINY_EXAMPLES}",
    "data.synthetic.n_test=16",
]


def planned(overrides: list[str], variants: list[tuple[int, float]]) -> list[PlannedRun]:
    out = []
    for seed, lam in variants:
        cfg = load_config(None, [*overrides, *QUIET, f"seed={seed}", f"regularizers=[{{name: l2, lam: {lam}}}]"])
        out.append(PlannedRun(cfg, config_hash(cfg)))
    return out


def time_group(runs, data_dir) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train_group(runs, Path(tmp), data_dir)
        wall = time.perf_counter() - t0
    assert all(r["status"] == "done" for r in res), res
    return wall / len(runs)


def time_alone(r, data_dir, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            run(r.config, data_dir=data_dir, root=tmp)
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def compare(name, overrides, variants, data_dir, target, repeat: int = 3) -> dict:
    """Medians over `repeat` interleaved (alone, group) pairs: the machine is shared and noisy."""
    runs = planned(overrides, variants)
    time_group(runs[:2], data_dir)  # warm-up: imports, data cache, vmap
    alones, groups = [], []
    for _ in range(repeat):
        alones.append(time_alone(runs[0], data_dir, repeat=1))
        groups.append(time_group(runs, data_dir))
    alone, per_model = statistics.median(alones), statistics.median(groups)
    print(
        f"{name}: {per_model:.3f} s per model in the group, {alone:.3f} s alone, ratio {per_model / alone:.3f}",
        flush=True,
    )
    return entry(
        name,
        per_model,
        alone,
        "train.run, one model alone",
        "s",
        f"ratio <= {target}",
        per_model / alone <= target,
        models=len(runs),
    )


def digits_entry(repeat: int) -> dict:
    """(b): 64 digits models (4 in tiny mode)."""
    epochs = 1 if tiny() else 3
    digits = ["data.dataset=digits", "model.widths=[64,32,10]", "train.batch_size=64", f"train.epochs={epochs}"]
    seeds, lams = (2, (0.0, 1e-3)) if tiny() else (8, (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1))
    variants = [(s, lam) for s in range(seeds) for lam in lams]
    name = f"vectorized: {len(variants)} digits MLPs 64-32-10, per model"
    return compare(name, [*digits, "optim.lr=0.1"], variants, None, 0.2, repeat=repeat)


def mnist_entries(d: str | None, size_sweep: bool) -> list[dict]:
    """(a) and (c) on MNIST from d; in tiny mode on its first examples, or random MNIST-shaped data."""
    data = ["data.dataset=mnist"] if d else SYNTHETIC_MNIST
    described = "mnist" if d else "synthetic MNIST-shaped (REGLAB_DATA has no MNIST)"
    if tiny():
        data = [*data, f"data.train_limit={TINY_EXAMPLES}"]
        described += f", first {TINY_EXAMPLES} examples"
    source = "MNIST" if d else "synthetic"

    def mlp(h: int) -> list[str]:
        return [*data, f"model.widths=[784,{h},10]", "train.batch_size=128", "train.epochs=1", "optim.lr=0.1"]

    variants = [(0, 1e-5 * 2**k) for k in range(2 if tiny() else 16)]
    name = f"vectorized: {len(variants)} {source} MLPs 784-28-10, per model"
    entries = [compare(name, mlp(28), variants, d, 0.35, repeat=1 if tiny() else 2)]
    for h in (256, 1024) if size_sweep and not tiny() else ():
        n_params = 784 * h + h + h * 10 + 10
        name = f"vectorized: 8 {source} MLPs 784-{h}-10 ({n_params // 1000}k params)"
        entries.append(compare(name, mlp(h), [(0, 1e-4 * k) for k in range(8)], d, 1.0, repeat=1))
    # (d) groups whose runs draw their own batches (one per seed): study 2's MLP, 5 seeds
    for widths in ("784,28,10", "784,128,128,10") if not tiny() else ("784,28,10",):
        seeds = 2 if tiny() else 5
        study2 = [*data, f"model.widths=[{widths}]", "train.batch_size=128", "train.epochs=1", "optim.lr=0.1"]
        name = f"vectorized: {seeds} seeds of {source} MLPs {widths.replace(',', '-')} (own data orders), per model"
        entries.append(compare(name, study2, [(s, 1e-4) for s in range(seeds)], d, 1.0, repeat=1 if tiny() else 2))
    for e in entries:
        e["data"] = described
    return entries


def main():
    session = Session()
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
    torch.set_num_threads(threads)
    d = mnist_data_dir()
    digits_only = "--digits-only" in sys.argv
    if d is None and not (digits_only or tiny()):
        raise SystemExit(
            "bench_vectorized needs MNIST for its MNIST parts: set REGLAB_DATA to the data directory "
            "(e.g. ../shared/data), or pass --digits-only"
        )
    entries = [digits_entry(repeat=1 if tiny() else 3)]
    if not digits_only:
        entries += mnist_entries(d, size_sweep="--no-size-sweep" not in sys.argv)
    for e in entries:
        e["threads"] = threads
    entries = session.write(entries, "vectorized" if threads == 2 else f"vectorized_{threads}thread")
    print_table(entries, f"Vectorized groups vs one model alone, {threads} threads")


if __name__ == "__main__":
    main()
