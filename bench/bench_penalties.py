"""Per-step training time of every regularizer relative to no regularizer, same run.

Models (random inputs: the time of a step does not depend on the data values):

- MNIST MLP 784-128-128-10, batch 128, SGD lr 0.1 (study 2's setup), cross-entropy; data from
  `data.dataset=synthetic` with dim 784 and 10 classes;
- HarderNet (study 1's SKS CIFAR10CNN, conv bias off, one output, MSE on +-1 targets), input
  (3, 32, 32), SGD lr 0.03, batch 16 (as in the SKS scripts) and batch 128. reglab has no
  synthetic image dataset, so `prepare` is given random CIFAR-shaped tensors in place of
  `build_task`'s output; everything else is the real `prepare`.

What is timed is the real trainer step, `OneModelStep.train_on(x, y, ...)` (forward, penalties,
backward, optimizer step, prox steps, after_step hooks, the step's log row) of a `Setup`
built by `reglab.build.prepare` from a config naming the regularizer; each step is timed on its
own. Every regularizer gets its own baseline measurement, paired with it in time: after 10
warm-up steps each, single steps alternate (baseline, regularizer, baseline, ...) until 150 steps
of each are timed (60 when a step takes over 20 ms, 20 over 100 ms). Value and baseline are the medians of
those step times. The benchmark machine is shared (2 cores, other jobs and VMs running): the
speed of the whole machine drifts by 2-5x over seconds to minutes, which separate blocks of
steps (or minimum times) turned into ratios off by as much; strict alternation exposes both
sides to the same drift, and the median drops the steps that stalled. Ratios still carry
roughly +-20 % noise on that machine (seen between repeated runs).
2 threads (torch.set_num_threads(2)).

Decomposition floor. For the SVD/eig penalties the same regularizer runs 30 more steps with
torch.linalg's eigh / eigvalsh / svd / svdvals wrapped by a timer: the median per step of the time
spent inside those calls ("decomposition_ms") is the part no implementation of an exact per-step
(sub)gradient can avoid on this machine, and "floor_ratio" = (baseline + decomposition) /
baseline is the best ratio such an implementation could reach. "other_ms" is what the step
spends beyond the baseline and the decompositions (Gram products, casts, the penalty's backward).

Targets: ratio <= 1.5 for cheap penalties; ratio <= 3 for the SVD/eig penalties; penalties
that by definition re-run the network state their expected cost (gradient_norm exact: double
backprop; finite_difference: one forward + backward at the moved weights (its first backward
gives the step's data gradient, which the trainer reuses); jacobian_nuclear estimate: h and g
once more each, on noisy inputs, plus their backward -- the clean h(x) and g(h(x)) are the
step's own forward). An entry that misses its target carries a one-line explanation ("why").

Arguments: regularizer labels (e.g. `l2 "nuclear_norm (solver svdvals)"`) measure just those and
replace just those entries in the results file. Tiny mode ($REGLAB_BENCH_TINY=1): l2,
nuclear_norm and gradient_norm (exact) on the MLP at batch 16 and HarderNet at batch 4, 2
warm-up and 3 timed steps each.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import sys
import time

import torch

from common import Session, entry, print_table, tiny
from reglab.build import prepare
from reglab.data.tasks import TaskData
from reglab.loop import OneModelStep
from reglab.validation import load_config

WARMUP = 2 if tiny() else 10
# timed steps per variant (and as many paired baseline steps), by the warm-up step time
STEPS = [(float("inf"), 3)] if tiny() else [(0.02, 150), (0.1, 60), (float("inf"), 20)]
BLOCK = 1  # steps per alternating block
DECOMPOSITION_STEPS = 3 if tiny() else 30
# (model, batch) configurations measured
CONFIGS = [("mlp", 16), ("hardernet", 4)] if tiny() else [("mlp", 128), ("hardernet", 16), ("hardernet", 128)]
TINY_LABELS = {"l2", "nuclear_norm", "gradient_norm (exact)"}

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
    ("nuclear_norm (solver svdvals)", {"name": "nuclear_norm", "solver": "svdvals"}, ("reference: LAPACK SVD", None)),
    ("spectral_energy", {"name": "spectral_energy"}, SVD_TARGET),
    ("graph_energy", {"name": "graph_energy"}, SVD_TARGET),
    (
        "graph_energy (method dense)",
        {"name": "graph_energy", "method": "dense"},
        ("reference: dense eigvalsh of A", None),
    ),
    ("path_energy", {"name": "path_energy"}, DEFAULT_TARGET),
    ("path_norm", {"name": "path_norm"}, DEFAULT_TARGET),
    ("pathprox (prox)", {"name": "pathprox", "algorithm": "prox"}, DEFAULT_TARGET),
    ("pathprox (weight_decay)", {"name": "pathprox", "algorithm": "weight_decay"}, DEFAULT_TARGET),
    ("gradient_norm (exact)", {"name": "gradient_norm", "method": "exact"}, ("ratio <= 3 (double backprop)", 3.0)),
    (
        "gradient_norm (finite_difference)",
        {"name": "gradient_norm", "method": "finite_difference"},
        ("ratio <= 3 (forward + backward at moved weights)", 3.0),
    ),
    (
        "jacobian_nuclear (estimate)",
        {"name": "jacobian_nuclear", "method": "estimate"},
        ("ratio <= 3 (noisy forwards of h and g + their backward)", 3.0),
    ),
]
CHAIN_ONLY = {"graph_energy"}  # needs a chain of Linear layers

# Why a target can be missed: filled in for the entries that miss theirs (see `explain`).
_CHEAP = (
    "adds only a few small kernels (well under 1 ms, sub-ms even on HarderNet) to the step; a miss of a "
    "cheap penalty on the shared benchmark machine is within its run-to-run noise (+-20-50 % on ratios)"
)
WHY = {
    "l2": _CHEAP,
    "decoupled_weight_decay": _CHEAP,
    "l2_sum": _CHEAP,
    "l2_mul": _CHEAP,
    "frobenius": _CHEAP,
    "path_energy": _CHEAP + "; after_step also copies every weight once per step",
    "path_norm": _CHEAP,
    "pathprox (prox)": _CHEAP + "; the prox step (balance, normalisation, thresholding) is ~0.25 ms on the MLP",
    "pathprox (weight_decay)": _CHEAP,
    "nuclear_norm": (
        "one symmetric eigendecomposition with eigenvectors per weight layer (eigh of the float64 Gram matrix; the "
        "gradient U V^T needs the vectors); on a small model's step a 128x128 eigh costs as much as or more than "
        "the whole unregularized step on a 2-core CPU, and LAPACK's SVD (the svdvals reference row) is no faster"
    ),
    "spectral_energy": (
        "as nuclear_norm: one eigh with vectors per weight layer (of the Gram matrix for rectangular layers, of "
        "the symmetric part for square ones), each about the MLP's whole step on this CPU"
    ),
    "graph_energy": (
        "exact needs the eigenvectors of the 138x138 Gram matrix of the 912x138 biadjacency (the dense eigvalsh "
        "of the 1050x1050 adjacency it replaces is the reference row)"
    ),
    "gradient_norm (exact)": (
        "double backprop: on HarderNet the backward of the convolutions' backward (conv double-backward) is much "
        "slower on CPU than a plain backward"
    ),
    "gradient_norm (finite_difference)": (
        "a functional_call forward and backward at the moved weights, with per-parameter Python work "
        "(gradient_penalties.py)"
    ),
    "jacobian_nuclear (estimate)": (
        "h and g run once more each on noisy inputs through functional_call (with buffer copies), differentiated "
        "(gradient_penalties.py)"
    ),
}


def explain(label: str, extra: dict) -> str:
    """The entry's "why": the known cause, and for decompositions the floor measured in this run."""
    why = WHY.get(label, "")
    if "floor_ratio" in extra:
        why += (
            f". Measured in this run: the decompositions alone take {extra['decomposition_ms']:.2f} ms per step, so "
            f"no exact per-step implementation can go below x{extra['floor_ratio']:.2f} here; the rest of the "
            f"penalty adds {extra['other_ms']:.2f} ms"
        )
    return why


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


def random_image_task(shape: tuple[int, ...], n: int, device: torch.device | str = "cpu") -> TaskData:
    """Random +-1 binary task with images of `shape` (what build_task returns, minus the files),
    drawn on the CPU and placed on `device`."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g).to(device)
    y = (torch.randint(0, 2, (n,), generator=g).float() * 2 - 1).to(device)
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
    reglab.data.build_task = lambda *args, **kwargs: random_image_task(shape, n, kwargs.get("device", "cpu"))
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
    """One trainer (model + regularizer) and a fixed batch; `run(k)` times k real steps.

    `device`: where it trains (cpu here; bench_gpu.py passes cuda). On CUDA `run(k)` times the k
    steps as one block between two device synchronizations (the steps overlap on the device as
    in training) and gives each step the block's mean."""

    def __init__(self, label: str, model: str, batch: int, spec: dict | None, device: str = "cpu"):
        m = MODELS[model]
        over = [*m["overrides"], f"train.batch_size={batch}", "train.progress=false", f"device={device}"]
        if spec is not None:
            over += regularizer_override(spec, m["jacobian_split"])
        cfg = load_config(None, over)
        with image_data(m["image"], max(batch, 128)):
            self.setup = prepare(cfg)
        self.stepper = OneModelStep(self.setup)
        self.x = self.setup.data.x_train[:batch]
        self.y = self.setup.data.y_train[:batch]
        self.label = label
        self.cuda = self.setup.device.type == "cuda"

    def run(self, steps: int) -> list[float]:
        """Seconds of each of `steps` training steps."""
        if self.cuda:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for k in range(steps):
                self.stepper.train_on(self.x, self.y, k, 0)
            torch.cuda.synchronize()
            return [(time.perf_counter() - t0) / steps] * steps
        times = []
        for k in range(steps):
            t0 = time.perf_counter()
            self.stepper.train_on(self.x, self.y, k, 0)
            times.append(time.perf_counter() - t0)
        return times


DECOMPOSITIONS = ("eigh", "eigvalsh", "svd", "svdvals")


@contextlib.contextmanager
def decomposition_timer(spent: list[float]):
    """Within the block, every torch.linalg eigen/singular-value call adds its seconds to spent[0]."""
    real = {name: getattr(torch.linalg, name) for name in DECOMPOSITIONS}

    def timed(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            # on a GPU: what was queued before the call is not the call's time
            cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if cuda:
                    torch.cuda.synchronize()
                spent[0] += time.perf_counter() - t0

        return wrapper

    for name, fn in real.items():
        setattr(torch.linalg, name, timed(fn))
    try:
        yield
    finally:
        for name, fn in real.items():
            setattr(torch.linalg, name, fn)


def decomposition_ms(v: Variant, steps: int = DECOMPOSITION_STEPS) -> float:
    """Median per-step milliseconds spent inside torch.linalg decompositions by v's steps."""
    per_step = []
    spent = [0.0]
    with decomposition_timer(spent):
        for _ in range(steps):
            spent[0] = 0.0
            v.run(1)
            per_step.append(spent[0])
    return 1e3 * statistics.median(per_step)


def median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def paired(base: Variant, v: Variant, block: int = BLOCK) -> tuple[float, float]:
    """(ms per step of v, ms per step of base), timed in alternating blocks of `block` steps."""
    base.run(WARMUP)
    warm = v.run(WARMUP)
    t = statistics.median(warm)
    steps = next(n for bound, n in STEPS if t < bound)
    tb: list[float] = []
    tv: list[float] = []
    while len(tv) < steps:
        tb += base.run(block)
        tv += v.run(block)
    return median_ms(tv), median_ms(tb)


def measure(model: str, batch: int, only: set[str] | None, device: str = "cpu", block: int = BLOCK) -> list[dict]:
    """Entries of the regularizers in `only` (None: all) on (model, batch), trained on `device`,
    timed in alternating blocks of `block` steps."""
    specs = [r for r in REGULARIZERS if (only is None or r[0] in only)]
    if MODELS[model]["image"] is not None:
        specs = [r for r in specs if r[1]["name"] not in CHAIN_ONLY]
    title = MODELS[model]["title"]
    base = Variant("none", model, batch, None, device)
    entries = []
    for label, spec, (text, bound) in specs:
        variant = Variant(label, model, batch, spec, device)
        value, baseline = paired(base, variant, block)
        ratio = value / baseline
        met = None if bound is None else ratio <= bound
        extra: dict = {}
        if (text, bound) == SVD_TARGET:
            decomp = decomposition_ms(variant)
            extra = {
                "decomposition_ms": decomp,
                "floor_ratio": (baseline + decomp) / baseline,
                "other_ms": value - baseline - decomp,
            }
        if met is False:
            extra["why"] = explain(label, extra)
        name = f"{label} | {title}, batch {batch}"
        entries.append(
            entry(name, value, baseline, f"no regularizer | {title}, batch {batch}", "ms", text, met, **extra)
        )
        floor = (
            f"; decompositions {extra['decomposition_ms']:.3g} ms, floor x{extra['floor_ratio']:.2f}"
            if "floor_ratio" in extra
            else ""
        )
        print(f"  {name}: {value:.3g} ms vs {baseline:.3g} ms (x{ratio:.2f}{floor})", flush=True)
    return entries


def main(argv: list[str]) -> None:
    session = Session()
    torch.set_num_threads(2)
    only = set(argv) or None
    unknown = (only or set()) - {label for label, *_ in REGULARIZERS}
    if unknown:
        raise SystemExit(f"bench_penalties: unknown regularizer labels {sorted(unknown)}; see REGULARIZERS")
    labels = only or (TINY_LABELS if tiny() else None)
    entries = []
    for model, batch in CONFIGS:
        entries += measure(model, batch, labels)
    title = (
        f"ms per training step vs no regularizer (SGD, {torch.get_num_threads()} threads, "
        f"median of {min(n for _, n in STEPS)}-{max(n for _, n in STEPS)} steps alternating with the baseline's)"
    )
    entries = session.write(entries, "penalties", subset=only is not None)
    print_table(entries, title)
    missed = [e for e in entries if e["met"] is False]
    for e in missed:
        print(f"  missed: {e['name']}: {e['why']}")


if __name__ == "__main__":
    main(sys.argv[1:])
