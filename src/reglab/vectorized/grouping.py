"""Which runs can train together in one vectorized group, and why the others cannot.

Runs share a group when everything but their seed, learning rate and regularizer strengths
(``regularizers[i].lam``) is the same: dataset and task, model, optimizer kind and its other
settings, lr schedule, budget, batch size, evaluation, analysis, and the regularizers' names,
options and lambda schedules. Such runs take the same number of steps with batches of the same
size, so one `torch.func.vmap` call can train all of them at once.

A run falls back to one-by-one training (`train.run`) when (first reason that applies):

- batch norm: running statistics are buffers updated in the forward pass, which the group does
  not carry per model;
- early stopping or abort rules: each run would stop at its own step;
- augmentation: random crops drawn per run from the run's own generator;
- a regularizer whose class does not declare `vectorizes` (gradient_norm and jacobian_nuclear
  call autograd.grad or draw random numbers inside the penalty; graph_energy is untested under
  vmap);
- label noise drawn from the run seed (data.noise_seed unset) when grouped with other seeds is
  handled by the key (such runs group only with runs of the same seed), not as a fallback;
- monitors (analysis.monitors): measured by the one-by-one trainer only;
- train.precision bf16: torch.autocast does not reach inside torch.func.vmap (measured on a CPU:
  the vmapped forward stays float32), so a group would silently train in float32;
- train.channels_last: a group's stacked convolution weights are 5-D ([M, out, in, kh, kw]),
  for which channels-last has no meaning;
- (auto only) more than `MAX_PARAMS` parameters (`MAX_PARAMS_ONE_THREAD` when torch runs on one
  thread): the gain of vmap on CPU comes from fusing many small matrix products; for models this
  big one model already keeps the cores busy (see bench/bench_vectorized.py);
- (auto only) convolutions, on every device until measured to pay there
  (`CONVOLUTIONS_VECTORIZE`): vmap turns a convolution with per-model weights into one grouped
  convolution, which on a CPU is slower per model than the models one after another (about 2x
  for study 3's ConvNet and HarderNet); on a GPU it has not been measured;
- its group has a single run (nothing to share).

`--vectorize on` (plan_groups(..., auto=False)) keeps only the reasons that make grouping
impossible, not the two that only say it would not pay.
"""

from __future__ import annotations

import json
import math

import torch

from ..config import RunConfig, canonical_dict

MAX_PARAMS = 100_000
"""Under `auto`, models with more parameters than this train one by one (at one torch thread:
MAX_PARAMS_ONE_THREAD). Measured on the 2-core CPU at 2 threads (bench/bench_vectorized.py parts
(c) and (d), docs/benchmarks.md): per model against alone, a group of 8 MNIST MLPs of 102k
parameters sharing each batch 0.95, 5 seeds drawing their own batches 1.02; 203k 0.97-1.14
(seeds 1.17); 814k 1.14-1.74. Below it the gain grows as models shrink (22k: 0.4-0.5 shared,
0.74 seeds)."""

MAX_PARAMS_ONE_THREAD = 50_000
"""MAX_PARAMS when the group trains on one torch thread (a group trains in the sweep's own process,
on its threads): 51k 0.78 shared / 0.99 seeds, 77k 0.98 / 1.06, 118k seeds 1.12, 203k 1.21."""


def max_params_for(threads: int) -> int:
    """The `auto` size limit for a group trained on `threads` torch threads."""
    return MAX_PARAMS_ONE_THREAD if threads <= 1 else MAX_PARAMS


MAX_GROUP = 64
"""Largest group; bigger sets of compatible runs are split into groups of at most this size."""

CONVOLUTIONS_VECTORIZE: dict[str, bool] = {"cpu": False, "cuda": False, "mps": False}
"""Whether `auto` groups models with convolutions, per device type (a device type not listed:
no). cpu: measured no, grouped convolutions are 1.7-2.3x slower per model than one by one
(ARCHITECTURE.md, Decisions). cuda: not measured yet, so no: a group is a win on a GPU only if
cuDNN's grouped convolution of M models beats M launches of the plain one, which depends on the
model's channel counts and the batch; a GPU benchmark of study 3's ConvNet and HarderNet, group
vs one by one per model, flips this to True where the group is faster. mps: not measured."""


def vectorizes(name: str) -> bool:
    """Whether regularizer `name` trains under vmap (its class declares `vectorizes`)."""
    from ..regularizers import REGULARIZERS

    return name in REGULARIZERS and REGULARIZERS.get(name).vectorizes


# Input shapes of the built-in datasets (for counting parameters without reading data).
_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "digits": (64,),
}
_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "digits": 10}


def group_key(cfg: RunConfig) -> str:
    """Runs with equal keys can share a group: the canonical config without seed, optim.lr and
    the regularizers' lam (plus the device, which must be one for the whole group)."""
    d = canonical_dict(cfg)
    if not (cfg.data.label_noise > 0 and cfg.data.noise_seed is None):
        d.pop("seed", None)  # the data do not depend on the seed
    d["optim"].pop("lr", None)
    for r in d.get("regularizers", []):
        r.pop("lam", None)
    d["device"] = cfg.device
    return json.dumps(d, sort_keys=True)


def count_params(cfg: RunConfig) -> int | None:
    """Parameters of the run's model, built on the meta device (no memory, no data read);
    None when the input shape is unknown without reading the dataset."""
    return _count(cfg, _meta_model(cfg))


def has_convolutions(cfg: RunConfig) -> bool:
    """Whether the run's model has a Conv2d layer (False when it cannot be built without data)."""
    return _has_conv(_meta_model(cfg))


def _count(cfg: RunConfig, built) -> int | None:
    if built is None:
        return None
    n = sum(p.numel() for p in built.parameters())
    if cfg.model.weight_norm == "rho":  # Rho-WN adds one global scale
        n += 1
    elif cfg.model.weight_norm:  # PaperWN adds one scale g per weight layer
        from ..models.structure import weight_layers

        n += len(weight_layers(built))
    return n


def _has_conv(built) -> bool:
    from torch import nn

    return built is not None and any(isinstance(m, nn.Conv2d) for m in built.modules())


def device_type(cfg: RunConfig, device: str | None = None) -> str:
    """The device type the run trains on: `device` when given (a planner that knows where the
    runs will go, or a test), else the config's device, `auto` resolved as reglab.runtime does
    (cuda, then mps, then cpu) without raising for an absent one."""
    import torch

    name = device if device is not None else cfg.device
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    return name.split(":")[0]


def _meta_model(cfg: RunConfig):
    """The run's model built on the meta device (without weight normalization, whose PaperWN
    reads weight norms as Python floats, impossible on meta), or None."""
    import torch

    from ..models import build_model

    ds = cfg.data.dataset
    shape: tuple[int, ...]
    if ds == "synthetic":
        shape, classes = (cfg.data.synthetic.dim,), cfg.data.synthetic.classes
    elif ds in _INPUT_SHAPES:
        shape, classes = _INPUT_SHAPES[ds], _CLASSES[ds]
    else:
        return None
    outputs = 1 if cfg.data.binary_pair is not None else classes
    try:
        with torch.device("meta"):
            return build_model(cfg.model.model_copy(update={"weight_norm": False}), shape, outputs)
    except Exception:
        return None


def why_not_vectorized(
    cfg: RunConfig, max_params: int | None = None, auto: bool = True, device: str | None = None
) -> str | None:
    """The reason this run cannot (or, with `auto`, should not) join a vectorized group, or None
    when it can. `device`: where it will train (default: the config's device, see device_type).
    `max_params`: the size limit of `auto` (default: `max_params_for` torch's threads now)."""
    if cfg.model.batch_norm:
        return "model.batch_norm: batch norm keeps running statistics (buffers), not carried per model in a group"
    if cfg.train.early_stopping.patience is not None:
        return "train.early_stopping: each run would stop at its own step"
    if cfg.train.abort is not None:
        return "train.abort: each run would stop at its own step"
    if cfg.data.augment:
        return "data.augment: augmentation draws random crops per run"
    for i, r in enumerate(cfg.regularizers):
        if not vectorizes(r.name):
            from ..regularizers import REGULARIZERS

            why = REGULARIZERS.get(r.name).not_vectorized_why if r.name in REGULARIZERS else "unknown regularizer"
            return f"regularizers.{i}: {r.name} does not vectorize ({why})"
    if cfg.analysis.monitors:
        return "analysis.monitors: monitors are measured by the one-by-one trainer only"
    impossible = why_not_group_step(cfg)
    if impossible is not None:
        return impossible
    if not auto:
        return None
    built = _meta_model(cfg)  # once for both rules below
    n = _count(cfg, built)
    if n is None:
        return f"model: cannot count the parameters of {cfg.model.name} on {cfg.data.dataset} without reading the data"
    limit_note = ""
    if max_params is None:
        threads = torch.get_num_threads()
        max_params = max_params_for(threads)
        limit_note = " (the limit at one torch thread)" if threads <= 1 else ""
    if n > max_params:
        return (
            f"model: {n:,} parameters > {max_params:,}{limit_note}; "
            "vectorizing gains nothing on models this large (--vectorize on forces it)"
        )
    kind = device_type(cfg, device)
    if _has_conv(built) and not CONVOLUTIONS_VECTORIZE.get(kind, False):
        if kind == "cpu":
            return (
                f"model: {cfg.model.name} has convolutions, which vectorize into grouped convolutions, slower than "
                "one by one on a CPU (--vectorize on forces it)"
            )
        return (
            f"model: {cfg.model.name} has convolutions, which vectorize into grouped convolutions, not yet "
            f"measured to pay on {kind} (--vectorize on forces it)"
        )
    return None


def why_not_group_step(cfg: RunConfig) -> str | None:
    """The train.* settings the group step cannot honour (GroupStep refuses them too)."""
    if cfg.train.precision != "fp32":
        return (
            f"train.precision: {cfg.train.precision} autocast does not reach inside torch.func.vmap "
            "(the group would train in float32)"
        )
    if cfg.train.channels_last:
        return "train.channels_last: a group's stacked convolution weights are 5-D, with no channels-last layout"
    return None


def plan_groups(
    runs: list,
    min_group: int = 2,
    max_group: int = MAX_GROUP,
    max_params: int | None = None,
    auto: bool = True,
    device: str | None = None,
) -> tuple[list[list], list[tuple]]:
    """Split planned runs (sweep.grid.PlannedRun, or anything with a `.config`) into vectorized
    groups and runs that train one by one. `auto` adds the rules that only say grouping would
    not pay (size, by default `max_params_for` torch's threads now, the threads the sweep's
    groups train on; convolutions where not measured to pay); without it only impossibilities
    remain. `device`: where the runs will train (default: each config's device).

    Returns (groups, singles): groups are lists of >= min_group runs sharing `group_key`, at most
    max_group each (bigger sets are split evenly); singles are (run, reason) pairs. The order of
    runs inside a group follows the input order."""
    groups: list[list] = []
    singles: list[tuple] = []
    buckets: dict[str, list] = {}
    for r in runs:
        why = why_not_vectorized(r.config, max_params, auto, device)
        if why is not None:
            singles.append((r, why))
            continue
        buckets.setdefault(group_key(r.config), []).append(r)
    for members in buckets.values():
        if len(members) < min_group:
            for r in members:
                singles.append(
                    (r, f"no other run shares its model, data, batch size and settings (group of {len(members)})")
                )
            continue
        n_chunks = math.ceil(len(members) / max_group)
        size = math.ceil(len(members) / n_chunks)
        for k in range(0, len(members), size):
            chunk = members[k : k + size]
            if len(chunk) < min_group:  # cannot happen with even splitting, kept for safety
                singles += [(r, "left over after splitting a large group") for r in chunk]
            else:
                groups.append(chunk)
    return groups, singles


def describe_plan(groups: list[list], singles: list[tuple]) -> list[str]:
    """Human-readable lines: one per group, and one per reason runs train one by one (with how
    many and which: the hashes of up to 4, then a count)."""
    lines = []
    for g in groups:
        cfg = g[0].config
        varying = _varying(g)
        lines.append(
            f"vectorized group of {len(g)} runs ({cfg.model.name} {cfg.model.widths or ''} on {cfg.data.dataset}, "
            f"batch {cfg.train.batch_size}; varying: {', '.join(varying) or 'nothing'}): {' '.join(r.hash for r in g)}"
        )
    by_reason: dict[str, list[str]] = {}
    for r, why in singles:
        # the parameter count differs between models; the reason's kind is what repeats
        by_reason.setdefault(why, []).append(r.hash)
    for why, hashes in by_reason.items():
        shown = " ".join(hashes[:4]) + (f" and {len(hashes) - 4} more" if len(hashes) > 4 else "")
        lines.append(f"one by one ({len(hashes)} run{'s' if len(hashes) > 1 else ''}: {shown}): {why}")
    return lines


def _varying(group: list) -> list[str]:
    out = []
    if len({r.config.seed for r in group}) > 1:
        out.append("seed")
    if len({r.config.optim.lr for r in group}) > 1:
        out.append("optim.lr")
    for i in range(len(group[0].config.regularizers)):
        if len({r.config.regularizers[i].lam for r in group}) > 1:
            out.append(f"regularizers.{i}.lam")
    return out
