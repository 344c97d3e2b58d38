"""Stacked parameters and the vmapped step objective.

`StackedModels` takes M models of one architecture, stacks each parameter into one [M, ...]
leaf tensor, and makes every model's own parameters *views* of its slice (``p.data =
stacked[i]``). The group trains the stacked tensors; each model object always shows its current
weights, so the one-by-one code (evaluate, regularizer prox/report/after_step, analysis,
state_dict) runs unchanged on model i. Checkpoints must clone those views (see trainer.py).

`GroupObjective` computes, for one model, forward -> data loss -> sum of lam_k * R_k with the
regularizers' own `penalty(model, ctx)` code: `torch.func.functional_call` swaps the template
model's parameters for the (batched) slices, and the penalty is called inside that same call, so
it reads the swapped parameters. Per-model regularizer state that a penalty reads (path_energy's
previous / initial weights) is stacked too and swapped onto the template regularizer for the call.
`vmap` over the models gives [M] totals; one backward of their sum gives every model's gradient.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..evaluation import LossFn
from ..regularizers import Regularizer, StepContext


class StackedModels:
    def __init__(self, models: list[nn.Module]):
        if any(True for _ in models[0].buffers()):
            raise ValueError("models with buffers (e.g. batch norm running statistics) cannot be vectorized")
        self.names = [n for n, _ in models[0].named_parameters()]
        self.params: dict[str, Tensor] = {}
        with torch.no_grad():
            for n in self.names:
                parts = [dict(m.named_parameters())[n] for m in models]
                self.params[n] = torch.stack([p.detach() for p in parts]).requires_grad_(parts[0].requires_grad)
            for i, m in enumerate(models):
                for n, p in m.named_parameters():
                    p.data = self.params[n].detach()[i]  # model i's parameter is now a view of slice i
        self.size = len(models)

    def trainable(self) -> list[Tensor]:
        return [p for p in self.params.values() if p.requires_grad]


def tensor_attributes(reg: Regularizer) -> list[str]:
    """Attributes of a regularizer that hold tensors with at least one dimension, or non-empty
    lists of tensors: what could be per-model state."""
    out = []
    for k, v in vars(reg).items():
        if (isinstance(v, Tensor) and v.ndim >= 1) or (
            isinstance(v, list) and v and all(isinstance(t, Tensor) for t in v)
        ):
            out.append(k)
    return sorted(out)


def stateful_attributes(reg: Regularizer) -> list[str]:
    """The per-model state the regularizer declares (`per_model_state`) that is set now, sorted.
    A tensor attribute it does not declare is an error: under vmap it would be shared by the
    models of a group instead of being one per model."""
    undeclared = sorted(set(tensor_attributes(reg)) - set(reg.per_model_state))
    if undeclared:
        raise TypeError(
            f"regularizer {reg.name} holds tensors in {undeclared} that its class does not declare in "
            "per_model_state; declare them (per-model state) or keep them out of the instance"
        )
    return sorted(a for a in reg.per_model_state if getattr(reg, a, None) is not None)


def stack_state(regs: list[Regularizer], attrs: list[str]) -> dict[str, Tensor | list[Tensor]]:
    """{attr: stacked value} over the per-model instances `regs` of one regularizer."""
    out: dict = {}
    for a in attrs:
        vals = [getattr(r, a) for r in regs]
        if isinstance(vals[0], Tensor):
            out[a] = torch.stack(vals)
        else:
            out[a] = [torch.stack([v[j] for v in vals]) for j in range(len(vals[0]))]
    return out


def _is_tensor_state(v) -> bool:
    return isinstance(v, Tensor) or (isinstance(v, list) and bool(v) and all(isinstance(t, Tensor) for t in v))


class GroupObjective(nn.Module):
    """forward(x, y, lams, states) for ONE model (called through functional_call under vmap).

    Returns (total, data_loss, outputs, penalties [K'] over penalty terms (empty when none),
    effects). A penalty may also update its regularizer's state (path_energy keeps a copy of the
    weights it saw as the next step's anchor): the template regularizer's attributes are restored
    after each call, and the tensor attributes the penalty (re)assigned come back in `effects`
    (one dict per term), batched over models, for the trainer to hand to each model's own
    regularizer; other (Python) attributes it assigned are in `self.scalar_effects`."""

    def __init__(self, model: nn.Module, regs: list[Regularizer], loss_fn: LossFn):
        super().__init__()
        self.model = copy.deepcopy(model)
        self.regs = [copy.deepcopy(r) for r in regs]
        self.loss_fn = loss_fn
        self.step = 0
        self.scalar_effects: list[dict] = [{} for _ in regs]

    def forward(self, x: Tensor, y: Tensor, lams: Tensor, states: list[dict]):
        out = self.model(x)
        data_loss = self.loss_fn(out, y)
        total = data_loss
        values = []
        effects: list[dict] = [{} for _ in self.regs]
        if self.regs:
            ctx = StepContext(self.step, x, y, out, data_loss, self.loss_fn)
            for k, reg in enumerate(self.regs):
                if not reg.has_penalty:
                    continue
                saved = dict(vars(reg))
                try:
                    for a, v in states[k].items():
                        setattr(reg, a, v)
                    swapped = dict(vars(reg))
                    r = reg.penalty(self.model, ctx)
                    for a, v in vars(reg).items():
                        if a in swapped and v is swapped[a]:
                            continue
                        if _is_tensor_state(v):
                            effects[k][a] = v
                        else:
                            self.scalar_effects[k][a] = v
                finally:
                    reg.__dict__.clear()
                    reg.__dict__.update(saved)
                values.append(r)
                lam = lams[k]
                # as the one-by-one trainer: a term with lam == 0 is not added at all
                total = torch.where(lam != 0, total + lam * r, total)
        pens = torch.stack([v.float() for v in values]) if values else data_loss.new_zeros(0)
        return total, data_loss, out, pens, effects


def apply_effects(objective: GroupObjective, effects: list[dict], regs_per_model: list[list[Regularizer]]) -> None:
    """Give model i's regularizers the state their penalty set in the vmapped call (slice i)."""
    for k, eff in enumerate(effects):
        for i, regs in enumerate(regs_per_model):
            reg = regs[k]
            for a, v in eff.items():
                setattr(reg, a, v[i].detach() if isinstance(v, Tensor) else [t[i].detach() for t in v])
            for a, v in objective.scalar_effects[k].items():
                setattr(reg, a, copy.copy(v))
        objective.scalar_effects[k] = {}


class VmappedStep:
    """Calls GroupObjective for all models at once: (params, x [M,B,..], y [M,B], lams [M,K],
    states) -> totals [M], data_loss [M], outputs [M,B,..], penalties [M,K'], effects.
    With `shared=True` every model gets the same batch, x [B,..] and y [B] (runs of one seed
    draw the same data order): no per-model copy of the batch, and each layer's products of all
    models become one larger matrix product."""

    def __init__(self, objective: GroupObjective):
        self.objective = objective
        prefix = "model."

        def one(params, x, y, lams, states):
            return functional_call(objective, {prefix + k: v for k, v in params.items()}, (x, y, lams, states))

        self._fn = vmap(one, in_dims=(0, 0, 0, 0, 0), randomness="error")
        self._fn_shared = vmap(one, in_dims=(0, None, None, 0, 0), randomness="error")

    def __call__(
        self, params: dict, x: Tensor, y: Tensor, lams: Tensor, states: list[dict], step: int, shared: bool = False
    ):
        self.objective.step = step
        return (self._fn_shared if shared else self._fn)(params, x, y, lams, states)
