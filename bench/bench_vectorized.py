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

MNIST comes from $REGLAB_DATA (the MNIST parts are skipped without it). Options: --threads N
(default 2; other values write the group "vectorized_<N>thread"), --digits-only, --no-size-sweep.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import entry, print_table, write_results
from reglab.config import config_hash, load_config
from reglab.data import resolve_data_dir
from reglab.sweep.grid import PlannedRun
from reglab.train import run
from reglab.vectorized import train_group

QUIET = [
    "train.eval_at_start=false",
    "train.eval_every=1000",
    "train.checkpoint_every=1000",
    "train.eval_train_limit=1",
    "data.test_limit=1",
    "train.progress=false",
    "analysis.margins=false",
    "analysis.spectra=false",
    "analysis.sparsity=false",
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


def main():
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
    torch.set_num_threads(threads)
    load = os.getloadavg()
    d = os.environ.get("REGLAB_DATA")
    has_mnist = bool(d) and (resolve_data_dir(d) / "mnist").exists() and "--digits-only" not in sys.argv
    entries = []
    digits = ["data.dataset=digits", "model.widths=[64,32,10]", "train.batch_size=64", "train.epochs=3", "optim.lr=0.1"]
    variants = [(s, lam) for s in range(8) for lam in (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)]
    entries.append(compare("vectorized: 64 digits MLPs 64-32-10, per model", digits, variants, None, 0.2))
    if has_mnist:
        mnist = [
            "data.dataset=mnist",
            "model.widths=[784,28,10]",
            "train.batch_size=128",
            "train.epochs=1",
            "optim.lr=0.1",
        ]
        variants = [(0, 1e-5 * 2**k) for k in range(16)]
        entries.append(compare("vectorized: 16 MNIST MLPs 784-28-10, per model", mnist, variants, d, 0.35, repeat=2))
        for h in () if "--no-size-sweep" in sys.argv else (256, 1024):
            over = [
                "data.dataset=mnist",
                f"model.widths=[784,{h},10]",
                "train.batch_size=128",
                "train.epochs=1",
                "optim.lr=0.1",
            ]
            n_params = 784 * h + h + h * 10 + 10
            entries.append(
                compare(
                    f"vectorized: 8 MNIST MLPs 784-{h}-10 ({n_params // 1000}k params)",
                    over,
                    [(0, 1e-4 * k) for k in range(8)],
                    d,
                    1.0,
                    repeat=1,
                )
            )
    else:
        print("REGLAB_DATA has no MNIST: the MNIST parts are skipped (set REGLAB_DATA=../shared/data)")
    load_after = os.getloadavg()
    title = (
        f"Vectorized groups vs one model alone, {torch.get_num_threads()} threads, "
        f"load average {load[0]:.1f} before / {load_after[0]:.1f} after on {os.cpu_count()} CPUs"
    )
    print_table(entries, title)
    for e in entries:
        e["load_average"] = [round(load[0], 2), round(load_after[0], 2)]
    for e in entries:
        e["threads"] = threads
    write_results(entries, "vectorized" if threads == 2 else f"vectorized_{threads}thread")


if __name__ == "__main__":
    sys.exit(main())
