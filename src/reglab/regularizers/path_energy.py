"""Path energy of the weight trajectory (study 2, seed-studies.md §2.5).

State vector s(theta): the weight layers' weights W_1, ..., W_L, flattened and concatenated
(biases excluded, as in study 2; under PaperWN the effective weights g V / ||V||_F). With
``roles: [weight, bias]`` (or ``norm``) the biases (normalization parameters) are further blocks
of s(theta): the path energy of those parameters' trajectory too. ``state: global`` (the
layered adjacency) holds weights only.

Penalty at optimizer step t (before the update), with theta_{t-1} the detached copy of the weights
taken when the previous step's penalty was computed, i.e. *before* the previous update (a copy
taken after it would equal theta_t and make the penalty identically zero):

    E_t = c * ||s(theta_t) - s(theta_{t-1})||^2,    R = E_t / 2,

so the trainer's lam * R has gradient lam * c * (theta_t - theta_{t-1}): a friction term against
repeating the last update. E_1 = 0 (the copy taken at `setup` is the current weights).
c = 1 for ``state: blocks``; c = 2 for ``state: global`` (the flattened layered adjacency holds
every weight twice, so its squared distance is exactly twice the blocks value; computed as 2x
without building the adjacency).

``anchor: init`` replaces theta_{t-1} by the weights at `setup` time: R = (c/2) ||s(theta) -
s(theta_0)||^2.

Monitoring (independent of lam, so a lam = 0 baseline is measured too): the squared length of
every update, c * ||s(theta_{t+1}) - s(theta_t)||^2, is counted once. With ``anchor: previous``
that is exactly the E the penalty computes at the next step, so it is taken from there rather than
computed a second time after the update (which would be a second pass over the weights every
step): the penalty keeps E, the next `after_step` adds it to the sums, and
until then the last update is "pending" -- `report` (and a resume, through the state's
``pending`` flag) measure it from the current weights. Changes that other terms' prox steps make
after this update are part of the step's path, as the next penalty sees them too. `report` gives
``energy_last`` (the last update's), ``energy_total`` (the running sum since training started,
kept across resume), ``steps`` and ``energy_epoch``: the sum of the update energies of the epoch
of the latest step (the trainer gives each step's epoch), so at an epoch-end evaluation, the
default cadence, it is that epoch's path energy sum_t E_t. It is *not* divided by the number of
training samples (study 2's "average path energy" divided it by 60 000).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ..errors import ConfigError
from ..models.structure import params_by_role, weight_layers
from .base import Options, Regularizer, StepContext
from .registry import REGULARIZERS


def state_blocks(model: nn.Module, roles: tuple[str, ...] = ("weight",)) -> list[torch.Tensor]:
    """The blocks of s(theta), differentiable: the weight layers' (effective) weights when
    "weight" is in roles, then the parameters of the other roles (bias, norm) in model order."""
    blocks = []
    if "weight" in roles:
        layers = weight_layers(model)
        if not layers:
            raise ValueError("path_energy: the model has no Linear or Conv2d layer")
        blocks = [layer.weight for _, layer in layers]
    others = tuple(r for r in roles if r != "weight")
    if others:
        blocks += [p for _, p in params_by_role(model, others)]
    if not blocks:
        raise ValueError(f"path_energy: the model has no parameter with role in {list(roles)}")
    return blocks


def squared_distance(current: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """sum_i ||current_i - reference_i||^2 (differentiable in `current`).

    One dot product per block: fewer kernels and autograd nodes than pow(2).sum()."""
    if len(current) != len(reference):
        raise ValueError(f"{len(current)} blocks against {len(reference)} stored")
    diffs = [(c - r).reshape(-1) for c, r in zip(current, reference, strict=True)]
    return torch.stack([torch.dot(d, d) for d in diffs]).sum()


def detached_copy(blocks: list[torch.Tensor]) -> list[torch.Tensor]:
    return [b.detach().clone() for b in blocks]


class PathEnergyOptions(Options):
    anchor: Literal["previous", "init"] = "previous"
    """previous: distance to the weights after the previous step; init: to the weights at setup."""
    state: Literal["blocks", "global"] = "blocks"
    """blocks: weights concatenated; global: flattened layered adjacency (= 2x blocks)."""


@REGULARIZERS.register("path_energy")
class PathEnergy(Regularizer):
    """R = (c/2) ||s(theta_t) - s(anchor)||^2 (module docstring); state survives resume."""

    vectorizes = True
    per_model_state = ("_previous", "_init", "_at_penalty")  # the anchors of each model's own trajectory

    Options = PathEnergyOptions
    follows_steps = True
    options: PathEnergyOptions

    def __init__(self, options, roles=("weight",)):
        super().__init__(options, roles)
        if options.state == "global" and self.roles != ("weight",):
            raise ConfigError(
                "roles",
                f"state: global is the layered adjacency, which holds the weights only; got {list(self.roles)} "
                "(use state: blocks to include biases or normalization parameters)",
                ["[weight]"],
            )
        self.scale = 2.0 if options.state == "global" else 1.0
        self._previous: list[torch.Tensor] | None = None
        self._at_penalty: list[torch.Tensor] | None = None
        self._init: list[torch.Tensor] | None = None
        self._energy_last: torch.Tensor | float = 0.0
        self._energy_total: torch.Tensor | float = 0.0
        self._steps = 0
        # the last update's energy is not in the sums yet (see the module docstring)
        self._pending = False
        # E of the pending update as the penalty computed it (anchor previous), else None
        self._pending_energy: torch.Tensor | None = None
        self._pending_epoch: int | None = None  # the epoch of the pending update's step
        # the sum of the counted update energies of epoch `_epoch` (see energy_epoch)
        self._epoch: int | None = None
        self._epoch_energy: torch.Tensor | float = 0.0

    def setup(self, model: nn.Module) -> None:
        blocks = detached_copy(state_blocks(model, self.roles))
        self._previous = blocks
        self._init = [b.clone() for b in blocks]

    def _anchor(self) -> list[torch.Tensor]:
        anchor = self._init if self.options.anchor == "init" else self._previous
        if anchor is None:
            raise RuntimeError("path_energy: setup(model) must be called before penalty()")
        return anchor

    def energy(self, model: nn.Module) -> torch.Tensor:
        """E = c * ||s(theta) - s(anchor)||^2, differentiable."""
        return self.scale * squared_distance(state_blocks(model, self.roles), self._anchor())

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        """(c/2)||theta_t - theta_{t-1}||^2 at step t, where theta_{t-1} are the weights when the
        previous step's penalty was computed (before its update): the squared length of the
        previous update, as in study 2 (E_1 = 0). Call once per step; the trainer does."""
        blocks = state_blocks(model, self.roles)
        self._at_penalty = detached_copy(blocks)  # theta_t: the anchor of the next step
        energy = self.scale * squared_distance(blocks, self._anchor())
        if self.options.anchor == "previous":
            self._pending_energy = energy.detach()  # = the previous update's energy
        return 0.5 * energy

    def _account(self, energy: torch.Tensor, epoch: int | None) -> None:
        # kept as tensors: no device sync per step; converted in report / state_dict.
        self._energy_last = energy
        self._energy_total = self._energy_total + energy
        self._steps += 1
        if epoch != self._epoch:
            self._epoch, self._epoch_energy = epoch, 0.0
        self._epoch_energy = self._epoch_energy + energy

    @torch.no_grad()
    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Count the update energies not yet counted and move the anchor to theta_t (the weights
        this step's penalty saw).

        anchor previous (this step's penalty measured the previous update): count that one; the
        update just applied stays pending until the next penalty measures it. Otherwise (anchor
        init, or no penalty this step) measure the update just applied now, from `before`."""
        epoch = None if ctx is None else ctx.epoch
        if self.options.anchor == "previous" and self._at_penalty is not None and self._pending_energy is not None:
            if self._pending:
                self._account(self._pending_energy, self._pending_epoch)
            self._previous = self._at_penalty
            self._pending, self._pending_epoch = True, epoch
        else:
            before = self._at_penalty if self._at_penalty is not None else self._previous
            now = state_blocks(model, self.roles)
            if before is not None:
                self._account(self.scale * squared_distance(now, before), epoch)
            # the next update is measured from here: the weights after this one (a monitor, which
            # computes no penalty, has no other copy of them)
            self._previous = detached_copy(now)
            self._pending = False
        self._at_penalty = None
        self._pending_energy = None

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        last, total, steps, epoch_energy = self._energy_last, self._energy_total, self._steps, self._epoch_energy
        if self._pending and self._previous is not None:  # the last update, not counted yet
            last = self.scale * squared_distance(state_blocks(model, self.roles), self._previous)
            total, steps = total + last, steps + 1
            epoch_energy = (epoch_energy if self._pending_epoch == self._epoch else 0.0) + last
        out = {
            "energy_last": float(last),
            "energy_total": float(total),
            "steps": float(steps),
            "energy_epoch": float(epoch_energy),
        }
        if self.options.anchor == "init" and self._init is not None:
            out["penalty"] = float(0.5 * self.energy(model))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "previous": None if self._previous is None else [t.cpu() for t in self._previous],
            "init": None if self._init is None else [t.cpu() for t in self._init],
            "energy_last": float(self._energy_last),
            "energy_total": float(self._energy_total),
            "steps": self._steps,
            "pending": self._pending,
            "pending_epoch": self._pending_epoch,
            "epoch": self._epoch,
            "epoch_energy": float(self._epoch_energy),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the stored weights onto the devices/dtypes set up by `setup` (call it first)."""
        self._previous = self._restore(state["previous"], self._previous)
        self._init = self._restore(state["init"], self._init)
        self._energy_last = float(state["energy_last"])
        self._energy_total = float(state["energy_total"])
        self._steps = int(state["steps"])
        # states saved before the pending update existed counted every update at once
        self._pending = bool(state.get("pending", False))
        self._pending_energy = None
        # states saved before per-epoch energies existed start the sum at the resume
        self._pending_epoch = state.get("pending_epoch")
        self._epoch = state.get("epoch")
        self._epoch_energy = float(state.get("epoch_energy", 0.0))

    @staticmethod
    def _restore(saved: list[torch.Tensor] | None, like: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
        if saved is None:
            return None
        if like is None:
            return [t.clone() for t in saved]
        if [tuple(t.shape) for t in saved] != [tuple(t.shape) for t in like]:
            raise ValueError("path_energy state does not match the model's weight shapes")
        return [t.to(device=ref.device, dtype=ref.dtype).clone() for t, ref in zip(saved, like, strict=True)]
