"""Building a run: everything one run needs, in memory, from its config.

`prepare(cfg)` gives a `Setup`: the task data, the model, the optimizer and lr schedule, the
regularization (each regularizer with its lambda schedule), the monitors, the data and
augmentation generators and the step budget. Every user error surfaces here, before any file
is written. Training (reglab.train), the vectorized groups (reglab.vectorized) and landscapes
of finished runs (reglab.landscape) all build through it; it imports none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .config import RunConfig
from .errors import ConfigError
from .evaluation import LossFn, make_loss_fn
from .optim import build_lr_schedule, build_optimizer
from .regularization import Regularization, Term
from .regularizers import Regularizer, build_regularizer
from .runtime import keep_freed_memory, request_deterministic_cublas, resolve_device, seed_everything
from .schedules import build_schedule

if TYPE_CHECKING:  # reglab.data is imported when a run is prepared, not with this module
    from .data import TaskData


@dataclass
class Setup:
    cfg: RunConfig
    device: torch.device
    data: TaskData
    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_sched: LRScheduler | None
    """None for a constant learning rate."""
    regularization: Regularization
    loss_fn: LossFn
    steps_per_epoch: int
    total_steps: int
    data_gen: torch.Generator
    aug_gen: torch.Generator
    monitors: list[tuple[str, Regularizer]] = field(default_factory=list)
    """(key, regularizer) measured at each evaluation without entering the loss."""

    @property
    def terms(self) -> list[Term]:
        return self.regularization.terms

    @property
    def step_monitors(self) -> list[Regularizer]:
        """The monitors that follow every step (their measurements accumulate: path energy)."""
        return [reg for _, reg in self.monitors if reg.follows_steps]

    @property
    def mixed_precision(self) -> bool:
        """Whether the training forward runs under autocast (train.precision bf16)."""
        return self.cfg.train.precision == "bf16"

    def forward_context(self) -> contextlib.AbstractContextManager:
        """Where the training step's forward pass and data loss run: torch.autocast(bfloat16)
        for train.precision bf16, else nothing. Penalties, the optimizer step and evaluations
        stay outside it, in the parameters' float32."""
        if self.mixed_precision:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the model takes (channels-last images for
        train.channels_last; the tensor itself when it already is)."""
        if self.cfg.train.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def prepare(cfg: RunConfig, data_dir: str | None = None, data: TaskData | None = None) -> Setup:
    """Build everything a run needs, in memory. User errors surface here, before any file.

    `data`: the run's task data when the caller has already built it (runs of a vectorized group
    share one); it must be what `build_task` gives for this config and seed."""
    from .data import build_task, data_dir_for
    from .models import build_model
    from .models.registry import check_model_size

    keep_freed_memory()
    device = resolve_device(cfg.device)
    if cfg.train.deterministic:
        request_deterministic_cublas(device)  # before the run's first matrix product
    if cfg.train.precision == "bf16":
        _check_autocast(device)
    seed_everything(cfg.seed)
    if data is None:
        location = data_dir_for(cfg.data.dataset, cfg.data.dir or data_dir)
        data = build_task(cfg.data, run_seed=cfg.seed, device=device, data_dir=location)
    check_model_size(cfg.model, data.input_shape, data.num_outputs, device)
    seed_everything(cfg.seed)  # the model's init does not depend on how much data loading drew
    model = build_model(cfg.model, data.input_shape, data.num_outputs).to(device)
    if cfg.train.channels_last:
        model, data = _channels_last(cfg, model, data)
    optimizer = build_optimizer(cfg.optim, model)

    n = data.x_train.shape[0]
    bs = cfg.train.batch_size
    steps_per_epoch = math.ceil(n / bs)  # the last, partial batch is trained on too
    if cfg.train.iterations is not None:
        total = cfg.train.iterations
    else:
        assert cfg.train.epochs is not None  # TrainConfig sets epochs when iterations is not given
        total = math.ceil(cfg.train.epochs * steps_per_epoch)
    horizon = total if cfg.lr_schedule.unit == "iteration" else math.ceil(total / steps_per_epoch)
    lr_sched = build_lr_schedule(cfg.lr_schedule, optimizer, cfg.optim.lr, horizon)

    if cfg.train.abort is not None and cfg.train.abort.split == "val" and data.x_val is None:
        raise ConfigError(
            "train.abort.split",
            "val needs a validation set: set data.val_fraction, data.val_size or data.rest_as_validation",
        )
    if cfg.train.early_stopping.patience is not None and data.x_val is None:
        raise ConfigError(
            "train.early_stopping.patience",
            "early stopping needs a validation set: set data.val_fraction, data.val_size or data.rest_as_validation",
        )

    terms = []
    for i, rc in enumerate(cfg.regularizers):
        reg = build_regularizer(rc, f"regularizers.{i}")
        try:
            reg.setup(model)
        except ConfigError as e:  # an option that does not fit this model: name it fully
            from .regularizers import prefixed

            raise prefixed(e, f"regularizers.{i}") from None
        except ValueError as e:
            raise ConfigError(
                f"regularizers.{i}.name", f"{rc.name} cannot act on model {cfg.model.name}: {e}"
            ) from None
        sched = build_schedule(rc.schedule, rc.lam, f"regularizers.{i}.schedule")
        key = rc.name if sum(r.name == rc.name for r in cfg.regularizers) == 1 else f"{rc.name}.{i}"
        terms.append(Term(key, reg, sched))

    monitors = []
    for i, mc in enumerate(cfg.analysis.monitors):
        where = f"analysis.monitors.{i}"
        reg = build_regularizer(mc, where)
        try:
            reg.setup(model)
        except ValueError as e:
            raise ConfigError(f"{where}.name", f"{mc.name} cannot measure model {cfg.model.name}: {e}") from None
        monitors.append((mc.name, reg))

    data_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    loss_fn = make_loss_fn(cfg.train.loss, data.task)
    return Setup(
        cfg,
        device,
        data,
        model,
        optimizer,
        lr_sched,
        Regularization(terms),
        loss_fn,
        steps_per_epoch,
        total,
        data_gen,
        aug_gen,
        monitors,
    )


def _check_autocast(device: torch.device) -> None:
    """train.precision bf16 needs autocast to bfloat16 on the run's device; torch would otherwise
    switch it off with a warning (or raise on a GPU without bfloat16) and train in float32."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ctx = torch.autocast(device.type, dtype=torch.bfloat16)
    except (RuntimeError, ValueError) as e:
        raise ConfigError("train.precision", f"bf16 is not available on {device}: {e}", ["fp32"]) from None
    if not getattr(ctx, "_enabled", True) or caught:
        why = str(caught[0].message) if caught else "autocast disabled"
        raise ConfigError("train.precision", f"bf16 is not available on {device}: {why}", ["fp32"])


def _channels_last(cfg: RunConfig, model: nn.Module, data: TaskData) -> tuple[nn.Module, TaskData]:
    """The model's 4-D weights and the image tensors in channels-last memory format (a new
    TaskData: given data may be shared). Refused for models without 2-D convolutions, where it
    would change nothing but the run's hash."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ConfigError(
            "train.channels_last",
            f"model {cfg.model.name} has no 2-D convolutions; channels-last changes only the memory "
            "layout of convolution weights and image batches; leave it false",
        )
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    images = {
        k: getattr(data, k).contiguous(memory_format=torch.channels_last)
        for k in ("x_train", "x_val", "x_test")
        if getattr(data, k) is not None and getattr(data, k).dim() == 4
    }
    return model, dataclasses.replace(data, **images)
