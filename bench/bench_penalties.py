"""Per-step training time of every regularizer relative to no regularizer, same run.

Models (random inputs: the time of a step does not depend on the data values):

- MNIST MLP 784-128-128-10, batch 128, SGD lr 0.1 (study 2's setup), cross-entropy; data from
  `data.dataset=synthetic` with dim 784 and 10 classes;
- HarderNet (study 1's SKS CIFAR10CNN, conv bias off, one output, MSE on +-1 targets), input
  (3, 32, 32), SGD lr 0.03, batch 16 (as in the SKS scripts) and batch 128. reglab has no
  synthetic image dataset, so `prepare` is given random CIFAR-shaped tensors in place of
  `build_task`'s output; everything else is the real `prepare`.

What is timed is the real trainer step, `Trainer._train_step(x, y)` (forward, penalties,
backward, optimizer step, prox steps, after_step hooks, per-step logging rows) of a `Setup`
built by `reglab.train.prepare` from a config naming the regularizer. Each variant gets 10
warm-up steps, then its steps are timed one by one in interleaved rounds (every variant, the
baseline included, runs a block of steps per round, so slow drifts of the machine hit all of
them alike); the value is the median ms per step. 2 threads (torch.set_num_threads(2)).

Targets: ratio <= 1.5 for cheap penalties; ratio <= 3 for the SVD/eig penalties; penalties
that by definition re-run the network state their expected cost (gradient_norm exact: double
backprop; finite_difference: one extra backward of the batch graph and one forward + backward
at the moved weights; jacobian_nuclear estimate: two extra forwards of the network, h and g
each run twice, plus their backward). An entry that misses its target carries a one-line
explanation ("why").
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time

import torch

from common import entry, print_table, write_results

from reglab.config import load_config
from reglab.data.tasks import TaskData
from reglab.train import Trainer, prepare

WARMUP = 10
ROUNDS = 5
STEPS_PER_ROUND = 10  # 50 timed steps per variant

SVD_TARGET = ("ratio <= 3 (SVD/eig)", 3.0)
DEFAULT_TARGET = ("ratio <= 1.5", 1.5)

# (label, config entry of the regularizer, (target text, bound)); lam is small so training stays
# sane (the time does not depend on it, except that lam = 0 would skip the penalty's backward).
REGULARIZERS = [
    ("l2", {"name": "l2"}, DEFAULT_TARGET),
    ("decoupled_weight_decay", {"name": "decoupled_weight_decay"}, DEFAULT_TARGET),
    ("l2_sum", {"name": "l2_sum"}, DEFAULT_TARGET),
    ("l2_mul", {"name": "l2_mul"}, DEFAULT_TARGET),
    ("frobenius", {"name": "frobenius"}, DEFAULT_TARGET),
    ("nuclear_norm", {"name": "nuclear_norm"}, SVD_TARGET),
    ("spectral_energy", {"name": "spectral_energy"}, SVD_TARGET),
    ("graph_energy", {"name": "graph_energy"}, SVD_TARGET),
    ("graph_energy (method dense)", {"name": "graph_energy", "method": "dense"}, ("reference: dense eigvalsh of A", None)),
    ("path_energy", {"name": "path_energy"}, DEFAULT_TARGET),
    ("path_norm", {"name": "path_norm"}, DEFAULT_TARGET),
    ("pathprox (prox)", {"name": "pathprox", "algorithm": "prox"}, DEFAULT_TARGET),
    ("pathprox (weight_decay)", {"name": "pathprox", "algorithm": "weight_decay"}, DEFAULT_TARGET),
    ("gradient_norm (exact)", {"name": "gradient_norm", "method": "exact"}, ("ratio <= 3 (double backprop)", 3.0)),
    (
        "gradient_norm (finite_difference)",
        {"name": "gradient_norm", "method": "finite_difference"},
        ("ratio <= 3 (extra backward + forward/backward at moved weights)", 3.0),
    ),
    ("jacobian_nuclear (estimate)", {"name": "jacobian_nuclear", "method": "estimate"}, ("ratio <= 3.5 (2 extra forwards + their backward)", 3.5)),
]
CHAIN_ONLY = {"graph_energy"}  # needs a chain of Linear layers

# Why a target can be missed: filled in for the entries that miss theirs (see `explain`).
WHY = {
    "nuclear_norm": "one SVD per weight layer with singular vectors for the backward; on a small model the SVDs cost more than the forward/backward they are added to",
    "spectral_energy": "one SVD / eigvalsh per weight layer with vectors for the backward; on a small model that costs more than the forward/backward itself",
    "graph_energy": "SVD (with singular vectors for the backward) of the n_even x n_odd biadjacency, larger than the batch's forward/backward on this small MLP",
    "path_energy": "a detached copy of every weight after each step (after_step) and the distance to the previous copy: memory traffic of the size of the model, comparable to a small-batch step",
    "path_norm": "per-unit norms of every unit group and their backward: a few extra kernels, comparable to a small-batch step",
    "pathprox (prox)": "the prox step rescales every grouped weight in place 2-3 times (balance, normalisation, thresholding) after each optimizer step: memory traffic of the grouped weights, comparable to a small-batch step",
    "pathprox (weight_decay)": "sum of squares of every weight layer plus its backward: comparable to a small-batch step",
    "l2": "sum of squares of every weight plus its backward: comparable to a small-batch step",
    "l2_sum": "sum of squares of every weight layer plus its backward: comparable to a small-batch step",
    "l2_mul": "sum of squares of every weight layer plus its backward: comparable to a small-batch step",
    "frobenius": "sum of squares of every weight layer plus its backward: comparable to a small-batch step",
    "decoupled_weight_decay": "an in-place rescale of every weight after each step: memory traffic of the size of the model, comparable to a small-batch step",
    "gradient_norm (exact)": "double backprop: the backward of the first backward costs about two backward passes, more on convolutions (their double-backward kernels are slow on CPU)",
    "gradient_norm (finite_difference)": "an extra backward of the batch graph plus a forward and backward at the moved weights, and per-parameter Python work",
    "jacobian_nuclear (estimate)": "h and g run twice each (clean and noisy) on top of the step's own forward, all differentiated",
}

MODELS = {
    "mlp": {
        "title": "MLP 784-128-128-10",
        "overrides": [
            "data.dataset=synthetic",
            "data.synthetic.dim=784",
            "data.synthetic.classes=10",
            "data.synthetic.n_train=1024",
            "data.synthetic.n_test=16",
            "model.widths=[784,128,128,10]",
            "optim.lr=0.1",
        ],
        "jacobian_split": 3,  # h = flatten, fc1, fc1_act; g = fc2, fc2_act, fc3
        "image": None,
    },
    "hardernet": {
        "title": "HarderNet (3,32,32) -> 1",
        "overrides": ["model.name=hardernet", "model.bias=false", "optim.lr=0.03"],
        "jacobian_split": 6,  # h = conv1-pool2, g = conv3 ... fc2
        "image": (3, 32, 32),
    },
}


def random_image_task(shape: tuple[int, ...], n: int) -> TaskData:
    """Random +-1 binary task with images of `shape` (what build_task returns, minus the files)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    meta = {"dataset": "random", "task": "binary", "input_shape": list(shape)}
    return TaskData(x, y, None, None, x[:16], y[:16], "binary", 1, tuple(shape), None, meta)


@contextlib.contextmanager
def image_data(shape: tuple[int, ...] | None, n: int):
    """Within the block, `prepare` gets a random image task instead of reading a dataset."""
    if shape is None:
        yield
        return
    import reglab.data

    real = reglab.data.build_task
    reglab.data.build_task = lambda *args, **kwargs: random_image_task(shape, n)
    try:
        yield
    finally:
        reglab.data.build_task = real


def regularizer_override(spec: dict, split: int) -> list[str]:
    spec = {"lam": 1e-4, **spec}
    if spec["name"] == "jacobian_nuclear":
        spec["split"] = split
    body = ", ".join(f"{k}: {v}" for k, v in spec.items())
    return [f"regularizers=[{{{body}}}]"]


class Variant:
    """One trainer (model + regularizer) and a fixed batch; `run(k)` times k real steps."""

    def __init__(self, label: str, model: str, batch: int, spec: dict | None):
        m = MODELS[model]
        over = [*m["overrides"], f"train.batch_size={batch}", "train.progress=false", "device=cpu"]
        if spec is not None:
            over += regularizer_override(spec, m["jacobian_split"])
        cfg = load_config(None, over)
        with image_data(m["image"], max(batch, 128)):
            self.setup = prepare(cfg)
        self.trainer = Trainer(self.setup, rd=None)
        self.x = self.setup.data.x_train[:batch]
        self.y = self.setup.data.y_train[:batch]
        self.label = label
        self.times: list[float] = []

    def run(self, steps: int, record: bool = True) -> None:
        tr = self.trainer
        for _ in range(steps):
            t0 = time.perf_counter()
            tr._train_step(self.x, self.y)
            dt = time.perf_counter() - t0
            tr.step += 1
            if record:
                self.times.append(dt)
        tr._pending.clear()  # the loop flushes these rows to disk every 50 steps; not timed here

    @property
    def ms(self) -> float:
        return 1e3 * statistics.median(self.times)


def measure(model: str, batch: int, only: set[str] | None) -> list[dict]:
    specs = [r for r in REGULARIZERS if (only is None or r[0] in only)]
    if MODELS[model]["image"] is not None:
        specs = [r for r in specs if r[1]["name"] not in CHAIN_ONLY]
    base = Variant("none", model, batch, None)
    variants = [(Variant(label, model, batch, spec), target) for label, spec, target in specs]
    everyone = [base] + [v for v, _ in variants]
    for v in everyone:
        v.run(WARMUP, record=False)
    for _ in range(ROUNDS):
        for v in everyone:
            v.run(STEPS_PER_ROUND)
    entries = []
    title = MODELS[model]["title"]
    for v, (text, bound) in variants:
        ratio = v.ms / base.ms
        met = None if bound is None else ratio <= bound
        extra = {} if met is not False else {"why": WHY.get(v.label, "")}
        entries.append(
            entry(f"{v.label} | {title}, batch {batch}", v.ms, base.ms, f"no regularizer | {title}, batch {batch}", "ms", text, met, **extra)
        )
    return entries


def main(argv: list[str]) -> None:
    torch.set_num_threads(2)
    only = set(argv) or None
    entries = []
    for model, batch in [("mlp", 128), ("hardernet", 16), ("hardernet", 128)]:
        entries += measure(model, batch, only)
    print_table(entries, f"ms per training step vs no regularizer (SGD, {torch.get_num_threads()} threads, median of {ROUNDS * STEPS_PER_ROUND} steps)")
    missed = [e for e in entries if e["met"] is False]
    for e in missed:
        print(f"  missed: {e['name']}: {e['why']}")
    if only is None:
        write_results(entries, "penalties")
    else:
        print("(subset run: bench/results.json not written)")


if __name__ == "__main__":
    main(sys.argv[1:])
