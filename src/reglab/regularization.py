"""A run's regularization: its terms (regularizer + lambda schedule) combined into one object.

`Regularization` owns what a training step does with the terms, in this order:

1. `penalties(model, ctx)`: every term's R (without lam) and the weighted lam * R of the terms
   whose lam is not 0 (a term at lam = 0 is measured, and its gradient never built);
2. after the backward, `before_optimizer_step(model, lr)`: the pre-step hooks (decoupled decay);
3. after the optimizer step, `after_optimizer_step(model, lr, ctx)`: each term's proximal step,
   then its `after_step` (state such as the previous weights);
4. `measure(step, metrics)`: the lambda schedules that asked for a measurement at
   this step see the batch's loss and accuracy and may change lam.

The trainer calls these four; your own loop can too, or use the two conveniences `context`
(the step's StepContext) and `finish_step` (3 and 4 together, the accuracy read off the outputs);
the README has a complete loop. lam is read from each term's schedule whenever a term is
applied, so a schedule's change takes effect at the next step. `term(...)` and
`Regularization.of(...)` build terms by name with plain keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .evaluation import correct
from .regularizers.base import Regularizer, StepContext
from .schedules.base import LambdaSchedule


@dataclass
class Term:
    """One regularizer with its lambda schedule; `key` names it in logs (lam.KEY, penalty.KEY)."""

    key: str
    reg: Regularizer
    sched: LambdaSchedule

    @property
    def lam(self) -> float:
        """The current lam (the schedule owns it)."""
        return self.sched.lam


class Regularization:
    """The terms of a run, applied around the optimizer step, in this order: `penalties` (lam * R
    of every term, summed into the loss), `before_optimizer_step` (after the backward),
    `after_optimizer_step` (proximal steps, then after-step updates) and `measure` (the lambda
    schedules that asked see the batch's loss and accuracy). `finish_step` does the last two in
    your own loop."""

    def __init__(self, terms: list[Term]):
        keys = [t.key for t in terms]
        if len(set(keys)) != len(keys):
            raise ValueError(f"term keys must be distinct, got {keys}")
        self.terms = list(terms)

    def __len__(self) -> int:
        return len(self.terms)

    def __iter__(self):
        return iter(self.terms)

    @property
    def lams(self) -> tuple[float, ...]:
        """Every term's current lam, in order."""
        return tuple(t.sched.lam for t in self.terms)

    def setup(self, model: nn.Module) -> None:
        """Every term's `setup(model)`: once, before the first step."""
        for t in self.terms:
            t.reg.setup(model)

    def penalties(self, model: nn.Module, ctx: StepContext | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(values, weighted): R of every term with a penalty (detached, for logging) and
        lam * R (differentiable) of those whose lam is not 0."""
        values: list[torch.Tensor] = []
        weighted: list[torch.Tensor] = []
        for t in self.terms:
            if t.reg.has_penalty:
                r = t.reg.penalty(model, ctx)
                values.append(r.detach())
                if t.sched.lam != 0.0:
                    weighted.append(t.sched.lam * r)
        return values, weighted

    def penalty(self, model: nn.Module, ctx: StepContext | None = None) -> torch.Tensor:
        """sum_k lam_k R_k, differentiable (a 0-d zero when no term has a penalty)."""
        _, weighted = self.penalties(model, ctx)
        if not weighted:
            p = next(model.parameters(), None)
            return torch.zeros((), device=None if p is None else p.device)
        return torch.stack(weighted).sum()

    def before_optimizer_step(self, model: nn.Module, lr: float) -> None:
        """After the backward, before `optimizer.step()`: the pre-step hooks (decoupled decay acts
        on the weights the gradient was taken at)."""
        for t in self.terms:
            if t.reg.has_pre_step:
                t.reg.pre_step(model, t.sched.lam, lr)

    def after_optimizer_step(self, model: nn.Module, lr: float, ctx: StepContext | None) -> dict[str, dict[str, float]]:
        """Proximal steps and after-step updates; returns each prox's measurements by key."""
        out: dict[str, dict[str, float]] = {}
        for t in self.terms:
            if t.reg.has_prox:
                out[t.key] = t.reg.prox(model, t.sched.lam, lr)
            t.reg.after_step(model, ctx)  # type: ignore[arg-type]
        return out

    def wanting_measurement(self, step: int, epoch_step: int | None = None) -> list[Term]:
        """The terms whose schedule measures after step `step` (0-based)."""
        return [t for t in self.terms if t.sched.wants_measurement(step, epoch_step)]

    def measure(self, step: int, metrics: dict[str, float], terms: list[Term] | None = None) -> None:
        """Hand the step's metrics (train_loss, train_acc, epoch_step) to the schedules that asked."""
        for t in self.wanting_measurement(step, int(metrics.get("epoch_step", 0))) if terms is None else terms:
            t.sched.observe(step, metrics)

    def report(self, model: nn.Module) -> dict[str, float]:
        """Every term's measurements as KEY.NAME, and lam.KEY."""
        out: dict[str, float] = {}
        for t in self.terms:
            out.update({f"{t.key}.{k}": v for k, v in t.reg.report(model).items()})
            out[f"lam.{t.key}"] = t.sched.lam
        return out

    def state_dict(self) -> list[dict[str, Any]]:
        """One {"reg", "sched"} entry per term, in order (the checkpoint's "terms")."""
        return [{"reg": t.reg.state_dict(), "sched": t.sched.state_dict()} for t in self.terms]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        """Restore what `state_dict` returned (regularizer and schedule state of every term)."""
        if len(state) != len(self.terms):
            raise ValueError(f"state for {len(state)} terms, this regularization has {len(self.terms)}")
        for t, st in zip(self.terms, state, strict=True):
            t.reg.load_state_dict(st["reg"])
            t.sched.load_state_dict(st["sched"])

    # ------------------------------------------------------------------ for your own loop
    @classmethod
    def of(cls, *terms: Term) -> Regularization:
        """Combine terms built by `term`; a name used twice gets keys NAME.0, NAME.1, ..."""
        names = [t.key for t in terms]
        keyed = [
            Term(t.key if names.count(t.key) == 1 else f"{t.key}.{i}", t.reg, t.sched) for i, t in enumerate(terms)
        ]
        return cls(keyed)

    @staticmethod
    def context(step: int, x, y, outputs, loss, loss_fn=None, epoch: int | None = None) -> StepContext:
        """The StepContext of a step of your loop (penalties that need the batch read it)."""
        return StepContext(step, x, y, outputs, loss, loss_fn, epoch=epoch)

    def finish_step(self, model: nn.Module, lr: float, ctx: StepContext, epoch_step: int | None = None) -> None:
        """After `optimizer.step()`: proximal steps, after-step updates, and the schedules'
        measurements of this batch (accuracy: argmax, or sign for one output per example).
        `epoch_step` is the batch's index in its epoch (default: the global step), the clock of
        schedules that count within epochs (AutoL2 with compat: true)."""
        self.after_optimizer_step(model, lr, ctx)
        in_epoch = ctx.step if epoch_step is None else epoch_step
        asking = self.wanting_measurement(ctx.step, in_epoch)
        if asking:
            out = ctx.outputs.detach()
            hits = correct(out, ctx.y, "binary" if out.ndim == 1 else "classes")  # the trainer's own count
            metrics = {"train_loss": float(ctx.data_loss.detach()), "train_acc": float(hits) / len(ctx.y)}
            self.measure(ctx.step, {**metrics, "epoch_step": in_epoch}, asking)


def term(
    name: str,
    lam: float = 0.0,
    schedule: str | dict[str, Any] | None = None,
    roles: list[str] | None = None,
    key: str | None = None,
    **options: Any,
) -> Term:
    """A regularizer by name with its options as keyword arguments, under a lambda schedule
    (a name, or a mapping with `name` and the schedule's options; default constant lam).

    >>> term("l2_mul", lam=1e-4, depth_normalization="geometric")
    >>> term("pathprox", lam=1e-3, schedule={"name": "autol2", "every": 5})

    Bad names or options raise ConfigError naming the argument, as in a config file."""
    from pydantic import ValidationError

    from .config import RegularizerConfig
    from .errors import ConfigError, pydantic_message
    from .regularizers import build_regularizer
    from .schedules import build_schedule

    entry: dict[str, Any] = {"name": name, "lam": lam, **options}
    if schedule is not None:
        entry["schedule"] = {"name": schedule} if isinstance(schedule, str) else dict(schedule)
    if roles is not None:
        entry["roles"] = list(roles)
    try:
        cfg = RegularizerConfig.model_validate(entry)
    except ValidationError as e:  # pydantic's error, as one line naming the field
        err = e.errors()[0]
        raise ConfigError(".".join(map(str, err["loc"])) or name, pydantic_message(err)) from None
    reg = build_regularizer(cfg, name)
    return Term(key or name, reg, build_schedule(cfg.schedule, cfg.lam, f"{name}.schedule"))
