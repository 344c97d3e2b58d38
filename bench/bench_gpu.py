"""GPU measurements (issue 19 item 3), on CUDA, in order of importance. Each part's entries are
written as soon as it is measured (the group is rewritten with what this run has so far), so a
run cut short keeps what it did. The run is sized for about 6 minutes on an H200: each group
has a share of BUDGET_S seconds (cumulative; $REGLAB_GPU_BUDGET_S overrides the total) and
starts no new part once its share is spent. Device time is taken with torch.cuda.synchronize()
around every timed region, after a warm-up.

(a) gpu_loop: one epoch of 50 000 random CIFAR-shaped images (3x32x32, 10 classes, resident on
    the GPU) with each CIFAR preset model: study 3's ConvNet at full width without and with
    batch norm (autol2 presets), VGG19 (pathprox paper preset), HarderNet (multiplicative
    presets), each with its preset's optimizer kind and batch size. reglab: `Trainer.fit` of a
    `Setup` from `reglab.build.prepare` (as bench_loop's `reglab_epoch_time`), timed by an
    observer from the start of training to the end-of-epoch evaluation (1 train example, 16
    test examples); data preparation, the final checkpoint and the summary stay outside. Bare:
    an airbench-style loop over the same data (index slices of a device permutation, the model
    and optimizer built by the same `prepare`, `opt.zero_grad(set_to_none=True)`, no host sync
    inside the epoch). Warm-up: one epoch of each on a subset with the same last-batch size.
    Target: reglab <= 1.1x the bare loop.
(b) gpu_precision: the same reglab epochs with train.precision=bf16 and with
    train.channels_last=true, against (a)'s fp32 epoch. No target: reported.
(c) gpu_vectorized: a vmapped group of 8 small CNNs (HarderNet; study 3's ConvNet at the cpu
    preset's width 0.25, no batch norm) against one of them trained alone, one epoch each,
    per-model time (bench_vectorized.compare, random CIFAR-shaped data). Target <= 0.5: where
    met, `CONVOLUTIONS_VECTORIZE["cuda"]` (src/reglab/vectorized/grouping.py) may be turned on
    for such models; this benchmark does not change it.
(d) gpu_penalties: every regularizer's step against the unregularized step on the GPU
    (bench_penalties.measure with device=cuda, steps timed in alternating blocks of 10 between
    device syncs): MLP 784-128-128-10 at batch 128, HarderNet at batch 16, then at 128. Target
    <= 1.5 for all but the reference rows (the CPU target is kept as `cpu_target`).
(e) gpu_nuclear: `solver: gram` (eigh on the GPU) against `solver: auto` (for a smaller side
    q <= HOST_EIGH_MAX the q x q Gram matrix goes to the host for LAPACK's eigh) for random
    square (q x q) and tall (4q x q) matrices, q = 64 ... 2048: forward + backward of
    nuclear_norm_of. Each entry also gives the host route's time (`host_eigh_ms`) at every size,
    so the sizes where the host eigh stops paying show up. No target: it informs HOST_EIGH_MAX.

Every entry records the device name, torch, CUDA and cuDNN versions, the TF32 switches and
`tree_digest` (merge_results.py: the GPU machine's copy has no .git, so no commit).

Busy rule: on a CUDA machine the load average limit is common.BUSY_LOAD scaled from the 2-core
machine it was set on to this machine's cores (0.25 a core; 4.0 on 16 cores): installing the
wheels and starting up keep the load of a fresh 16-core machine above 0.5 for a minute.

Tiny mode ($REGLAB_BENCH_TINY=1): the same code paths on the CPU with tiny sizes (160 examples,
the ConvNets, VGG19 and HarderNet narrowed by model.width_multiplier, one timing each, groups of
2, bench_penalties' tiny labels and configs, matrices of sides 8 and 16). Without CUDA and not
in tiny mode it says that it needs a CUDA GPU and exits with common.SKIPPED_STATUS having written
nothing (run_all.py reports it as skipped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common import BUSY_LOAD, SKIPPED_STATUS, TIMING_ONLY, Session, entry, print_table, tiny
from merge_results import tree_digest
from reglab.build import prepare
from reglab.config import RunConfig
from reglab.data.tasks import TaskData
from reglab.observers import RunObserver
from reglab.regularizers.nuclear import HOST_EIGH_MAX, auto_route, gram_nuclear_norm, nuclear_norm_of
from reglab.runtime import cpu_model
from reglab.store import RunDir
from reglab.train import Trainer
from reglab.validation import load_config

TINY = tiny()
BUDGET_S = float(os.environ.get("REGLAB_GPU_BUDGET_S", "330"))
# Each group's share of BUDGET_S, in run order; a group may use what earlier groups left.
SHARES = {"gpu_loop": 0.30, "gpu_precision": 0.22, "gpu_vectorized": 0.14, "gpu_penalties": 0.22, "gpu_nuclear": 0.12}

CIFAR = (3, 32, 32)
CLASSES = 10
N_TRAIN = 160 if TINY else 50_000
WARM_STEPS = 1 if TINY else 30  # warm-up epoch: this many full batches plus the epoch's last partial one
REPEAT = 1 if TINY else 2  # timed epochs per side, alternating
LR = 1e-3  # the step's work does not depend on it; small, so no model diverges on random labels
LOOP_TARGET = 1.1
VEC_TARGET = 0.5
VEC_MODELS = 2 if TINY else 8
PENALTY_TARGET = 1.5
PENALTY_BLOCK = 10  # steps per timed block on CUDA
NUCLEAR_SIDES = [8, 16] if TINY else [64, 128, 256, 512, 1024, 2048]

QUIET = [
    "data.dataset=cifar10",  # never read: prepare is given the random task
    "train.epochs=1",
    *TIMING_ONLY,
]


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    overrides: tuple[str, ...]
    """The preset's model and optimizer kind and batch size (the learning rate is LR)."""
    tiny_width: float
    """model.width_multiplier in tiny mode."""

    @property
    def batch(self) -> int:
        return int(next(o for o in self.overrides if o.startswith("train.batch_size=")).split("=")[1])


CONVNET = ("model.name=autol2_convnet", "model.init=he_normal_conv", "optim.name=sgd", "train.batch_size=128")
MODELS = [
    Model("ConvNet (study 3, autol2 presets)", (*CONVNET, "model.batch_norm=false"), 0.05),
    Model("ConvNetBN (study 3, autol2 presets)", (*CONVNET, "model.batch_norm=true"), 0.05),
    Model(
        "VGG19 (pathprox paper preset)",
        ("model.name=vgg19", "model.init=kaiming", "optim.name=sgd", "optim.momentum=0.0", "train.batch_size=128"),
        0.0625,
    ),
    Model(
        "HarderNet (multiplicative presets)",
        ("model.name=hardernet", "model.bias=false", "model.init=kaiming", "optim.name=sgd", "train.batch_size=16"),
        0.25,
    ),
]


# ----------------------------------------------------------------------------- plumbing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {
        "device_name": torch.cuda.get_device_name(device) if cuda else f"cpu: {cpu_model()}",
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "tree_digest": tree_digest(),
    }


class Budget:
    """Cumulative deadlines: group k starts no new part after the sum of the first k shares."""

    def __init__(self, total: float):
        self.total, self.t0, self.until = total, time.monotonic(), 0.0

    def open(self, group: str) -> None:
        self.until += SHARES[group] * self.total
        print(f"\n=== {group} (until {self.until:.0f} s of {self.total:.0f}; at {self.elapsed():.0f} s)", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def allows(self, part: str) -> bool:
        if TINY or self.elapsed() < self.until:
            return True
        print(f"  skipped {part}: this group's share of the {self.total:.0f} s budget is spent", flush=True)
        return False


class Writer:
    """Keeps this run's entries per group and rewrites the group after each part."""

    def __init__(self, session: Session, info: dict):
        self.session, self.info = session, info
        self.entries: dict[str, list[dict]] = {}
        self.written: dict[str, list[dict]] = {}

    def add(self, group: str, entries: list[dict]) -> None:
        self.entries.setdefault(group, []).extend({**e, **self.info} for e in entries)
        self.written[group] = self.session.write(self.entries[group], group)


def random_cifar_task(n: int, device: torch.device) -> TaskData:
    """n random CIFAR-shaped images with 10 classes, drawn on `device` (what build_task returns
    for a 10-class image dataset, minus the files); 16 of them are the test set."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, *CIFAR, generator=g, device=device)
    y = torch.randint(0, CLASSES, (n,), generator=g, device=device)
    meta = {"dataset": "random", "task": "classes", "input_shape": list(CIFAR), "n_train": n}
    return TaskData(x, y, None, None, x[:16].clone(), y[:16].clone(), "classes", CLASSES, CIFAR, None, meta)


def subset(task: TaskData, n: int) -> TaskData:
    return dataclasses.replace(task, x_train=task.x_train[:n], y_train=task.y_train[:n])


@contextlib.contextmanager
def random_cifar(n: int):
    """Within the block, `prepare` (through build_task) gets random_cifar_task(n) on the run's device."""
    import reglab.data

    real = reglab.data.build_task
    reglab.data.build_task = lambda *args, **kwargs: random_cifar_task(n, torch.device(kwargs.get("device", "cpu")))
    try:
        yield
    finally:
        reglab.data.build_task = real


def config(model: Model, device: torch.device, *extra: str) -> RunConfig:
    width = [f"model.width_multiplier={model.tiny_width}"] if TINY else []
    return load_config(None, [*model.overrides, *width, *QUIET, f"optim.lr={LR}", f"device={device.type}", *extra])


# ----------------------------------------------------------------------------- (a), (b) epochs


class LoopClock(RunObserver):
    """Device-synchronized wall clock from the start of training to the first evaluation."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start: float | None = None
        self.end: float | None = None

    def on_start(self, run, resumed_step: int) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def on_evaluation(self, row: dict) -> None:
        if self.end is None:
            sync(self.device)
            self.end = time.perf_counter()


def reglab_epoch(cfg: RunConfig, task: TaskData) -> float:
    """Seconds of one epoch of reglab's loop (Trainer.fit; see the module docstring)."""
    setup = prepare(cfg, data=task)
    clock = LoopClock(setup.device)
    with tempfile.TemporaryDirectory() as tmp:
        rd = RunDir(Path(tmp))
        rd.create({})
        summary = Trainer(setup, rd, observers=[clock]).fit()
    if summary["status"] != "done" or summary["steps"] != setup.steps_per_epoch:
        raise RuntimeError(f"the epoch did not run to its end: {summary['status']} after {summary['steps']} steps")
    assert clock.start is not None and clock.end is not None
    return clock.end - clock.start


def bare_epoch(cfg: RunConfig, task: TaskData) -> float:
    """Seconds of one epoch of an airbench-style loop with the model and optimizer reglab builds."""
    setup = prepare(cfg, data=task)
    model, opt, loss_fn, device = setup.model, setup.optimizer, setup.loss_fn, setup.device
    x_all, y_all = task.x_train, task.y_train
    n, bs = x_all.shape[0], cfg.train.batch_size
    model.train()
    sync(device)
    t0 = time.perf_counter()
    perm = torch.randperm(n, device=device)
    for i in range(0, n, bs):
        idx = perm[i : i + bs]
        loss = loss_fn(model(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0


def warm_subset(task: TaskData, batch: int) -> TaskData:
    """WARM_STEPS full batches and a last batch of the full epoch's last-batch size."""
    n = task.x_train.shape[0]
    return subset(task, min(n, batch * WARM_STEPS + n % batch))


def describe(model: Model, cfg: RunConfig, task: TaskData) -> dict:
    n = task.x_train.shape[0]
    params = sum(p.numel() for p in prepare(cfg, data=subset(task, 1)).model.parameters())
    optim = f"{cfg.optim.name} lr {cfg.optim.lr} momentum {cfg.optim.momentum}"
    return {
        "model": model.name,
        "params": params,
        "batch": cfg.train.batch_size,
        "examples": n,
        "steps": -(-n // cfg.train.batch_size),
        "optimizer": optim,
        "data": f"random CIFAR-shaped, {CLASSES} classes, resident on the device, no augmentation",
    }


def loop_group(models: list[Model], task: TaskData, device: torch.device, budget: Budget, out: Writer) -> dict:
    """(a); returns each measured model's fp32 reglab epoch time for (b)."""
    budget.open("gpu_loop")
    fp32 = {}
    for model in models:
        if not budget.allows(model.name):
            break
        cfg = config(model, device)
        warm = warm_subset(task, model.batch)
        t = time.monotonic()
        reglab_epoch(cfg, warm)
        bare_epoch(cfg, warm)
        reglab_times, bare_times = [], []
        for _ in range(REPEAT):
            reglab_times.append(reglab_epoch(cfg, task))
            bare_times.append(bare_epoch(cfg, task))
        value, base = statistics.median(reglab_times), statistics.median(bare_times)
        fp32[model.name] = value
        e = entry(
            f"gpu loop: reglab epoch vs bare loop | {model.name}",
            value,
            base,
            "bare airbench-style loop (index slices, zero_grad(set_to_none), no host sync)",
            "s",
            f"ratio <= {LOOP_TARGET}",
            value / base <= LOOP_TARGET,
            reglab_times=reglab_times,
            bare_times=bare_times,
            **describe(model, cfg, task),
        )
        print(
            f"  {model.name}: reglab {value:.3f} s, bare {base:.3f} s, ratio {value / base:.3f} "
            f"({time.monotonic() - t:.0f} s)",
            flush=True,
        )
        out.add("gpu_loop", [e])
    return fp32


VARIANTS = [("bf16", "train.precision=bf16"), ("channels_last", "train.channels_last=true")]


def precision_group(
    models: list[Model], fp32: dict, task: TaskData, device: torch.device, budget: Budget, out: Writer
) -> None:
    """(b)"""
    budget.open("gpu_precision")
    for model in models:
        if model.name not in fp32:
            print(f"  {model.name}: no fp32 epoch from gpu_loop; skipped", flush=True)
            continue
        for label, override in VARIANTS:
            if not budget.allows(f"{label} {model.name}"):
                return
            cfg = config(model, device, override)
            t = time.monotonic()
            reglab_epoch(cfg, warm_subset(task, model.batch))
            times = [reglab_epoch(cfg, task) for _ in range(REPEAT)]
            value = statistics.median(times)
            e = entry(
                f"gpu {label}: reglab epoch vs fp32 | {model.name}",
                value,
                fp32[model.name],
                "reglab fp32 epoch (gpu_loop, same run)",
                "s",
                "none: reported",
                None,
                times=times,
                setting=override,
                **describe(model, cfg, task),
            )
            ratio = value / fp32[model.name]
            print(
                f"  {model.name} {label}: {value:.3f} s, x{ratio:.3f} of fp32 ({time.monotonic() - t:.0f} s)",
                flush=True,
            )
            out.add("gpu_precision", [e])


# ----------------------------------------------------------------------------- (c) vectorized


VEC = [
    ("HarderNet", ("model.name=hardernet", "model.bias=false", "model.init=kaiming", "train.batch_size=16"), 8000),
    (
        "ConvNet x0.25, no batch norm (autol2 cpu preset width)",
        (
            "model.name=autol2_convnet",
            "model.init=he_normal_conv",
            "model.width_multiplier=0.25",
            "train.batch_size=128",
        ),
        16000,
    ),
]


def vectorized_group(device: torch.device, session: Session, budget: Budget, out: Writer) -> None:
    """(c)"""
    from bench_vectorized import compare

    budget.open("gpu_vectorized")
    for name, overrides, n in VEC:
        if not budget.allows(name):
            return
        n = 48 if TINY else n
        width = ["model.width_multiplier=0.1"] if TINY and "autol2_convnet" in overrides[0] else []
        over = [
            *overrides,
            *width,
            "data.dataset=cifar10",
            "train.epochs=1",
            "optim.name=sgd",
            f"optim.lr={LR}",
            f"device={device.type}",
        ]
        variants = [(0, 1e-5 * 2**k) for k in range(VEC_MODELS)]
        title = f"gpu vectorized: {VEC_MODELS} {name}, per model vs alone"
        with random_cifar(n):
            e = compare(title, over, variants, None, VEC_TARGET, repeat=1 if TINY else 2)
        ratio = e["ratio"]
        if TINY or session.busy:
            decision = "no decision: no target claimed"
        elif ratio <= VEC_TARGET:
            decision = (
                f"met: a group is <= {VEC_TARGET} per model here, so CONVOLUTIONS_VECTORIZE['cuda'] "
                "(src/reglab/vectorized/grouping.py) may be turned on for such models (not changed by this benchmark)"
            )
        else:
            decision = "missed: keep CONVOLUTIONS_VECTORIZE['cuda'] False for such models"
        e.update(
            decision=decision,
            data=f"random CIFAR-shaped, {CLASSES} classes, {n} examples, one epoch; l2 with {VEC_MODELS} lambdas",
        )
        out.add("gpu_vectorized", [e])


# ----------------------------------------------------------------------------- (d) penalties


def gpu_target(e: dict) -> dict:
    """A bench_penalties entry, named "gpu penalty: ...", with the GPU target (<= 1.5) in place of
    the CPU one, except reference rows; the CPU explanation of a miss is replaced by this run's
    measured floor."""
    e = {**e, "name": f"gpu penalty: {e['name']}", "baseline_name": f"gpu: {e['baseline_name']}"}
    e.pop("why", None)
    if e["target"].startswith("reference"):
        return e
    e["cpu_target"], e["target"] = e["target"], f"ratio <= {PENALTY_TARGET}"
    e["met"] = e["ratio"] <= PENALTY_TARGET
    if not e["met"]:
        if "floor_ratio" in e:
            e["why"] = (
                f"measured in this run: the decompositions alone take {e['decomposition_ms']:.2f} ms per step "
                f"(floor x{e['floor_ratio']:.2f}); the rest of the penalty adds {e['other_ms']:.2f} ms"
            )
        else:
            e["why"] = "first GPU measurement: cause not analysed yet"
    return e


def penalties_group(device: torch.device, budget: Budget, out: Writer) -> None:
    """(d)"""
    import bench_penalties as bp

    budget.open("gpu_penalties")
    configs = bp.CONFIGS if TINY else [("mlp", 128), ("hardernet", 16), ("hardernet", 128)]
    labels = bp.TINY_LABELS if TINY else None
    block = PENALTY_BLOCK if device.type == "cuda" else bp.BLOCK
    for model, batch in configs:
        if not budget.allows(f"{model} batch {batch}"):
            return
        t = time.monotonic()
        entries = [gpu_target(e) for e in bp.measure(model, batch, labels, device=device.type, block=block)]
        for e in entries:
            e["timing"] = f"median of blocks of {block} steps between device syncs, alternating with the baseline"
        print(f"  {model} batch {batch}: {len(entries)} entries ({time.monotonic() - t:.0f} s)", flush=True)
        out.add("gpu_penalties", entries)


# ----------------------------------------------------------------------------- (e) nuclear norm


def device_ms(fn: Callable[[], object], device: torch.device, min_s: float = 0.25, max_reps: int = 30) -> float:
    """Median milliseconds of fn() between device syncs, after 2 warm-up calls; at least 3 and at
    most max_reps timings, until min_s seconds were timed."""
    for _ in range(2):
        fn()
    times: list[float] = []
    while len(times) < 3 or (sum(times) < min_s and len(times) < max_reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def gram_solver(m: torch.Tensor) -> torch.Tensor:
    return nuclear_norm_of(m, "gram")


def auto_solver(m: torch.Tensor) -> torch.Tensor:
    return nuclear_norm_of(m, "auto")


def host_eigh(m: torch.Tensor) -> torch.Tensor:
    """The gram solver with its eigh on the host (what auto does up to HOST_EIGH_MAX), at any size."""
    return gram_nuclear_norm(m, torch.device("cpu"))


def fwd_bwd(m: torch.Tensor, norm: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
    """A call of forward + backward of norm(m)."""

    def go() -> None:
        m.grad = None
        norm(m).backward()

    return go


def nuclear_group(device: torch.device, budget: Budget, out: Writer) -> None:
    """(e)"""
    budget.open("gpu_nuclear")
    g = torch.Generator(device=device).manual_seed(0)
    pays: dict[str, list[int]] = {"square": [], "tall": []}
    for q in NUCLEAR_SIDES:
        if not budget.allows(f"side {q}"):
            break
        entries = []
        for shape, (p, q_) in (("square", (q, q)), ("tall", (4 * q, q))):
            m = torch.randn(p, q_, generator=g, device=device).requires_grad_()

            t_gram = device_ms(fwd_bwd(m, gram_solver), device)
            t_auto = device_ms(fwd_bwd(m, auto_solver), device)
            routed_to_host = auto_route(device, q)[1] is not None
            t_host = t_auto if routed_to_host else device_ms(fwd_bwd(m, host_eigh), device)
            if t_host < t_gram:
                pays[shape].append(q)
            entries.append(
                entry(
                    f"gpu nuclear: solver auto vs gram | {shape} {p}x{q_}",
                    t_auto,
                    t_gram,
                    "solver gram (eigh on the matrix's device)",
                    "ms",
                    f"none: informs HOST_EIGH_MAX ({HOST_EIGH_MAX})",
                    None,
                    shape=[p, q_],
                    auto_route="host eigh" if routed_to_host else "device eigh",
                    host_eigh_ms=t_host,
                    device_eigh_ms=t_gram,
                    host_over_device=t_host / t_gram,
                    host_eigh_threads=torch.get_num_threads(),
                )
            )
            print(
                f"  {shape} {p}x{q_}: gram {t_gram:.3g} ms, auto {t_auto:.3g} ms "
                f"({'host' if routed_to_host else 'device'} eigh), host route {t_host:.3g} ms",
                flush=True,
            )
        out.add("gpu_nuclear", entries)
    for shape, sides in pays.items():
        print(
            f"  host eigh faster than the device's for {shape} matrices at q = {sides or 'none measured'}", flush=True
        )


# ----------------------------------------------------------------------------- main


def main() -> int:
    cuda = torch.cuda.is_available()
    if not (cuda or TINY):
        print("bench_gpu: needs a CUDA GPU (torch.cuda.is_available() is False): nothing measured, nothing written")
        return SKIPPED_STATUS
    session = Session()
    device = torch.device("cuda") if cuda and not TINY else torch.device("cpu")
    if TINY:
        torch.set_num_threads(1)  # a smoke test: one thread never waits at a barrier for a descheduled one
    if device.type == "cuda" and not session.tiny:
        cores = os.cpu_count() or 2
        limit = BUSY_LOAD * cores / 2
        session.busy = session.loadavg_start > limit
        print(f"busy rule here: load average {session.loadavg_start:.2f} at start, limit {limit:.2f} ({cores} cores)")
    info = device_info(device)
    print(
        f"bench_gpu on {device} ({info['device_name']}), torch {info['torch_version']}, CUDA {info['cuda_version']}, "
        f"cuDNN {info['cudnn_version']}; budget {BUDGET_S:.0f} s" + (" (tiny mode)" if TINY else ""),
        flush=True,
    )
    budget = Budget(BUDGET_S)
    out = Writer(session, info)
    failed = []

    def part(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            traceback.print_exc()
            print(f"  {name} FAILED (entries written before the failure are kept)", flush=True)
            failed.append(name)
            return None

    task = random_cifar_task(N_TRAIN, device)
    fp32 = part("gpu_loop", loop_group, MODELS, task, device, budget, out) or {}
    part("gpu_precision", precision_group, MODELS, fp32, task, device, budget, out)
    del task
    if device.type == "cuda":
        torch.cuda.empty_cache()
    part("gpu_vectorized", vectorized_group, device, session, budget, out)
    part("gpu_penalties", penalties_group, device, budget, out)
    part("gpu_nuclear", nuclear_group, device, budget, out)

    print(f"\nbench_gpu: {budget.elapsed():.0f} s")
    for group, entries in reversed(out.written.items()):  # the most important last, in the output's tail
        print_table(entries, f"{group} on {info['device_name']}")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
