"""The regularizer protocol.

Three styles exist and reglab needs all three:

- a *penalty* R(theta) added to the loss as lam * R (the trainer multiplies by lam);
- a *proximal step* after the optimizer step, with threshold tau = lam * lr;
- a *parametrization* of the weights (PaperWN, see models.weightnorm; not a regularizer object).

A regularizer is one class. It implements `penalty` and/or `prox` (and `pre_step` for decoupled
decay); which of them it has is read from what it overrides (`has_penalty`, `has_prox`,
`has_pre_step` are derived when the class is created, so a prox can never be forgotten). Its
registered name is written once, in `@REGULARIZERS.register("name")`, which also sets the
class's `name`. It declares on the class whether it trains under vmap (`vectorizes`, or why not
in `not_vectorized_why`) and which of its attributes hold per-model tensor state
(`per_model_state`, stacked across the models of a vectorized group). It gets everything it
needs through `setup` (the model, for selecting parameters by role or capturing initial
weights) and `StepContext` (the batch, outputs and data loss of the current step, for
gradient-based penalties; None when a penalty is evaluated outside a step, e.g. by `report`). It
reports measurements through `report`. lam is owned by a lambda schedule (schedules.py), never
by the regularizer, so any regularizer can run under any schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..evaluation import LossFn


@dataclass
class StepContext:
    """What the trainer knows at the time a penalty is computed (before backward)."""

    step: int
    """Global optimizer step, 0-based."""
    x: torch.Tensor
    y: torch.Tensor
    outputs: torch.Tensor
    data_loss: torch.Tensor
    """Differentiable data loss of this batch (penalties like gradient_norm need it)."""
    loss_fn: LossFn | None = None
    """Callable (outputs, y) -> scalar loss, for penalties that re-run the model."""
    extra: dict[str, Any] = field(default_factory=dict)
    data_grads: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    """(parameter, d data_loss / d parameter) for every trainable parameter the loss uses, when a
    penalty had to compute them anyway (gradient_norm's finite-difference method). The trainer
    then backpropagates only the penalties and adds these, instead of running the data loss's
    backward a second time."""
    epoch: int | None = None
    """Epoch of this step, 0-based (None outside a trainer); per-epoch measurements use it."""


class Options(BaseModel):
    """Base for a regularizer's own options; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


_BaseOptions = Options
"""`Options` under a name the class attribute `Regularizer.Options` does not shadow."""


_HOOK_FLAGS = {"penalty": "has_penalty", "prox": "has_prox", "pre_step": "has_pre_step"}
"""Hook -> the flag the trainers read; the flag is True exactly when a class overrides the hook."""


class Regularizer:
    """Base class. Subclasses set `Options` and override the hooks they use (see the module
    docstring); the registry sets `name`."""

    name: ClassVar[str] = ""
    """Set by `REGULARIZERS.register(name)`."""
    Options: ClassVar[type[_BaseOptions]] = Options
    has_penalty: ClassVar[bool] = False
    has_prox: ClassVar[bool] = False
    has_pre_step: ClassVar[bool] = False
    """Derived from the overridden hooks in `__init_subclass__`; never set by hand."""
    vectorizes: ClassVar[bool] = False
    """Trains under vmap in a vectorized group; a regularizer that sets it True is tested there
    against the one-by-one trainer (tests/test_vectorized.py)."""
    not_vectorized_why: ClassVar[str] = "it is not among the regularizers tested under vmap"
    per_model_state: ClassVar[tuple[str, ...]] = ()
    """Attributes holding per-model tensors (or lists of tensors) that the penalty reads, stacked
    across the models of a vectorized group."""
    uses_batch: ClassVar[bool] = False
    """The penalty needs the training batch (StepContext), so it cannot be a monitor."""
    follows_steps: ClassVar[bool] = False
    """Its measurements accumulate over steps (after_step); as a monitor it follows every step and
    is read through `report` only."""

    options: _BaseOptions
    """Subclasses narrow this annotation to their own options class."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for hook, flag in _HOOK_FLAGS.items():
            if flag in cls.__dict__:
                raise TypeError(f"{cls.__name__} sets {flag}: it is derived from whether the class overrides {hook}()")
            setattr(cls, flag, getattr(cls, hook) is not getattr(Regularizer, hook))

    def __init__(self, options: _BaseOptions, roles: list[str] | tuple[str, ...] = ("weight",)):
        self.options = options
        self.roles = tuple(roles)

    def setup(self, model: nn.Module) -> None:
        """Called once before training (and again after a resume, before load_state_dict)."""

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        """R(theta), differentiable, *without* lam. `ctx` is None outside a training step; a
        penalty that needs the batch sets `uses_batch` and reads it through `require_context`."""
        raise NotImplementedError

    @torch.no_grad()
    def pre_step(self, model: nn.Module, lam: float, lr: float) -> None:
        """Called after the backward and before the optimizer step (when `has_pre_step`): act on
        the weights the gradient was taken at, as decoupled weight decay does."""

    @torch.no_grad()
    def prox(self, model: nn.Module, lam: float, lr: float) -> dict[str, float]:
        """Proximal step after the optimizer step, threshold lam * lr. Returns measurements."""
        return {}

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Called after the optimizer (and prox) step: update state such as previous weights."""

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        """Measurements at evaluation time (norms, rho, active units...)."""
        return {}

    def require_context(self, ctx: StepContext | None) -> StepContext:
        """`ctx`, which a penalty that reads the batch cannot do without."""
        if ctx is None:
            raise ValueError(f"{self.name}: its penalty needs the training step's batch (a StepContext)")
        return ctx

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (for a resume that continues exactly), as plain data and tensors."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; called after `setup` on resume."""
