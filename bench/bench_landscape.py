"""A 21 x 21 loss landscape of the MNIST MLP 784-128-128-10, 2048 training examples per point.

- reglab: `reglab.landscape.evaluate_grid` (in-place foreach parameter updates, one batch of
  2048 per point, no partial-state writes);
- naive: what a straightforward script does: per point, deep-copy the model, build the
  perturbed state dict, `load_state_dict`, evaluate in batches of 128. Timed on the first
  NAIVE_ROWS rows of the grid and scaled to the whole grid (its per-point cost is uniform);
  its losses are compared with reglab's on those rows.

Target: reglab's grid <= 5 s on a 2-core CPU at the process's default thread count. A second
entry times reglab with one thread: on a machine busy with other processes, two OpenMP threads
on two cores can be many times slower than one (each small op waits at a barrier for a
descheduled thread), so the load average is printed and stored with the entries.
Needs MNIST in $REGLAB_DATA (exits 1 otherwise, writing nothing). Tiny mode ($REGLAB_BENCH_TINY=1):
a 5 x 5 grid of 256 examples, one naive row, one timing each; without MNIST it uses random
MNIST-shaped data (the entries' "data" says which).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from common import Session, entry, mnist_data_dir, print_table, timeit, tiny
from reglab.data import build_task, resolve_data_dir
from reglab.evaluation import make_loss_fn
from reglab.landscape import evaluate_grid, grid_axis, random_directions
from reglab.models import build_model
from reglab.validation import load_config

N_EXAMPLES, RES, NAIVE_ROWS, REPEAT = (256, 5, 1, 1) if tiny() else (2048, 21, 3, 3)
SYNTHETIC = [
    "data.dataset=synthetic",
    "data.synthetic.dim=784",
    "data.synthetic.classes=10",
    "data.synthetic.n_test=16",
]


def setup(data_dir):
    data = ["data.dataset=mnist"] if data_dir else [*SYNTHETIC, f"data.synthetic.n_train={N_EXAMPLES}"]
    cfg = load_config(None, [*data, "model.widths=[784,128,128,10]"])
    task = build_task(cfg.data, 0, "cpu", resolve_data_dir(data_dir) if data_dir else None)
    torch.manual_seed(0)
    model = build_model(cfg.model, task.input_shape, task.num_outputs)
    return model, task.x_train[:N_EXAMPLES], task.y_train[:N_EXAMPLES], make_loss_fn("auto", task.task), task.task


def naive_grid(model, dirs, x, y, loss_fn, alphas, betas):
    base = {k: v.clone() for k, v in model.state_dict().items()}
    d1, d2 = dirs.full(model, 0), dirs.full(model, 1)
    out = np.zeros((len(betas), len(alphas)))
    for i, b in enumerate(betas):
        for j, a in enumerate(alphas):
            net = copy.deepcopy(model)
            sd = {k: (v + a * d1[k] + b * d2[k]) if k in d1 else v for k, v in base.items()}
            net.load_state_dict(sd)
            net.eval()
            total = 0.0
            with torch.no_grad():
                for s in range(0, x.shape[0], 128):
                    total += loss_fn(net(x[s : s + 128]), y[s : s + 128]).item() * x[s : s + 128].shape[0]
            out[i, j] = total / x.shape[0]
    return out


def main() -> None:
    session = Session()
    d = mnist_data_dir()
    if d is None and not tiny():
        raise SystemExit("bench_landscape needs MNIST: set REGLAB_DATA to the data directory (e.g. ../shared/data)")
    model, x, y, loss_fn, task = setup(d)
    dirs = random_directions(model, 2, "filter", seed=0)
    alphas = betas = grid_axis(-1, 1, RES)
    result = {}

    def ours():
        result["grid"] = evaluate_grid(model, dirs, x, y, loss_fn, task, alphas, betas)

    def naive():
        result["naive"] = naive_grid(model, dirs, x, y, loss_fn, alphas, betas[:NAIVE_ROWS])

    threads = torch.get_num_threads()
    t_ours = timeit(ours, repeat=REPEAT, warmup=1)
    t_naive = timeit(naive, repeat=1, warmup=0) * RES / NAIVE_ROWS
    torch.set_num_threads(1)
    try:
        t_one = timeit(ours, repeat=REPEAT, warmup=1)
    finally:
        torch.set_num_threads(threads)
    diff = float(np.max(np.abs(result["grid"].loss[:NAIVE_ROWS] - result["naive"])))
    print(f"threads={threads}  max |reglab - naive| loss = {diff:.3g}")
    data = "mnist" if d else "synthetic MNIST-shaped (REGLAB_DATA has no MNIST)"
    name = f"landscape {RES}x{RES} {'MNIST' if d else 'synthetic'} MLP, {N_EXAMPLES} ex/point"
    es = [
        entry(
            f"{name}, {threads} threads",
            t_ours,
            t_naive,
            "naive load_state_dict, batch 128",
            "s",
            "value <= 5 s",
            t_ours <= 5.0,
            max_abs_diff=diff,
            threads=threads,
            data=data,
        ),
        entry(
            f"{name}, 1 thread",
            t_one,
            t_naive,
            "naive load_state_dict, batch 128",
            "s",
            "value <= 5 s",
            t_one <= 5.0,
            threads=1,
            data=data,
        ),
    ]
    print_table(session.write(es, "landscape"), "loss landscape grid")


if __name__ == "__main__":
    main()
