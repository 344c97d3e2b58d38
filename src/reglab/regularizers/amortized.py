"""Amortized spectral penalties: the exact gradient refreshed every k steps, a linear lower bound
in between (options ``refresh_every`` and ``refresh_tol`` of nuclear_norm, spectral_energy and
graph_energy).

Why a stale gradient still makes sense. Each of the three penalties is a seminorm of the weights
theta (a norm of a linear image of them): R is convex and positively homogeneous of degree 1,

    nuclear_norm:     ||M_l||_*                             per layer (times 2 by convention)
    spectral_energy:  ||S_l||_* = sum |lambda(S_l)|,  S_l = (M_l + M_l^T)/2, for square layers
    graph_energy:     ||A||_* = sum |lambda(A)| = 2 ||B||_*,  A and B linear in the weights.

For such an R and any subgradient G in dR(theta_0), Euler's identity R(theta_0) = <G, theta_0>
holds (take t -> 1 from both sides in R(t theta_0) = t R(theta_0) >= R(theta_0) + (t-1)<G, theta_0>),
so the subgradient inequality gives, for every theta,

    R(theta) >= R(theta_0) + <G, theta - theta_0> = <G, theta>,

with equality at theta_0. So L(theta) = <G, theta> is a lower bound of R, exact where G was
computed, and its gradient is G itself: a subgradient of R at theta_0 (stale, not R's gradient at
theta). G is what each exact route backpropagates:

- nuclear norm: G = Q = U V^T, the polar factor (<Q, M> = tr(Q^T M) <= ||Q||_2 ||M||_* = ||M||_*);
- symmetric-part energy: G = P = V sign(Lambda) V^T of S = V Lambda V^T (P is symmetric, so
  <P, M> = <P, S> = sum sign(lambda_i) v_i^T S v_i <= ||S||_*);
- graph energy: B^T = T(W_1, ..., W_L) places each W_i (or W_i^T) as a block, so
  2 tr(Q_B^T B) = sum_i <G_i, W_i> with G_i = 2 x the block of Q = polar factor of B^T at W_i's
  place, in W_i's orientation (T's adjoint applied to 2Q, `graph_energy.biadjacency_blocks`).
  Equivalently, A's factor V sign(Lambda) V^T is [[0, Q_B], [Q_B^T, 0]] after the even/odd
  permutation, and <that, A> = 2 tr(Q_B^T B). The analogue exists because A is linear in the
  weights and Sum|lambda| is a norm; the dense route computes the same R, but amortizing is
  offered for the bipartite route only (the dense one is the slow reference).

How far below. With Delta = theta - theta_0: 0 <= R(theta) - L(theta) = R(theta) - R(theta_0) -
<G, Delta> <= 2 R(Delta) (G lies in the dual unit ball: |<G, Delta>| <= R(Delta)), and
R(Delta) <= sqrt(r) c ||Delta||_F (r the smaller side of the matrix): the gap is at most
proportional to the relative change rho = ||Delta||_F / ||theta_0||_F. Where R is smooth at
theta_0 (distinct nonzero singular values / eigenvalues) the gap is second order, O(rho^2).

The route. With ``refresh_every: k > 1``, G is computed exactly (value and factor, float64 eigh
as the exact route) at `setup` and then after every k-th optimizer step, in `after_step` on the
weights the next step's penalty will see; a penalty inside a training step (ctx given) is
L(theta) = sum_l <G_l, W_l>, one product and sum per layer, differentiable with gradient G. With
``refresh_tol: t`` the factor is also refreshed after a step that moved some layer (some block of
theta) by more than t relative to its weights at the last refresh (rho_l > t): one pass over the
weights a step, against a copy taken at each refresh. So a penalty right after a refresh is
exact (up to rounding) and in between it is the lower bound with a stale subgradient.

A penalty without a step (ctx None: `report`, monitors) is always the exact value; `report`
adds ``refreshes`` (exact factors computed so far), ``refresh_gap`` ((R - L) / R measured at
the last refresh with the factor it replaced: how far the bound had drifted, 0 before the first
replacement) and ``bound_gap`` ((R - L) / R now). The factors (and the reference weights of
``refresh_tol``) are per-model state: stacked in a vectorized group, where the vmapped penalty
is only the linear form; refreshing happens per model outside vmap, in `after_step`. They are
saved with the regularizer's state, so a resumed run continues with the factors of the
uninterrupted one. ``refresh_every: 1`` (the default) is the exact route as before, computed by
the same code, with no state.

Caveats. A refresh takes the weights after this term's `after_step`: another term's proximal
step that runs later in the same step (pathprox listed after it) moves the weights once more,
and the next penalty is then the lower bound at those weights, not the exact value. The same
holds for changes another term's `setup` makes (pathprox's unit normalization) when listed
after this one. The first factor is computed at `setup`.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from ..errors import ConfigError
from .base import Options, Regularizer, StepContext


class RefreshOptions(Options):
    refresh_every: int = Field(1, ge=1)
    """1: exact every step. k > 1: the exact (sub)gradient is computed every k steps and the
    penalty in between is its linear lower bound <G, theta> (regularizers/amortized.py)."""
    refresh_tol: float | None = Field(None, gt=0)
    """With refresh_every > 1: refresh early after a step that moved some layer by more than this
    fraction of its weights (relative Frobenius change since the last refresh)."""


def check_refresh_options(options: RefreshOptions) -> None:
    if options.refresh_tol is not None and options.refresh_every == 1:
        raise ConfigError(
            "refresh_tol",
            "needs refresh_every > 1 (the most steps a factor is kept); with refresh_every 1 every step is exact",
        )


def restore_tensors(saved: list[torch.Tensor], like: list[torch.Tensor] | None, what: str) -> list[torch.Tensor]:
    """`saved` on the devices and dtypes of `like` (the state `setup` built), shapes checked."""
    if like is None:
        return [t.clone() for t in saved]
    if [tuple(t.shape) for t in saved] != [tuple(t.shape) for t in like]:
        raise ValueError(f"{what} does not match the model's weight shapes")
    return [t.to(device=ref.device, dtype=ref.dtype).clone() for t, ref in zip(saved, like, strict=True)]


class AmortizedPenalty(Regularizer):
    """A seminorm penalty with ``refresh_every`` / ``refresh_tol`` (module docstring). Subclasses
    give `factor_weights` (the tensors the factors pair with), `exact_with_factors` (the exact
    value and its gradient factors) and `exact_penalty` (the exact route, unchanged)."""

    per_model_state = ("_factors", "_reference")
    options: RefreshOptions

    def __init__(self, options, roles=("weight",)):
        super().__init__(options, roles)
        check_refresh_options(options)
        self._factors: list[torch.Tensor] | None = None
        """G_l per weight tensor (its shape and dtype): the gradient of the exact penalty at the
        last refresh."""
        self._reference: list[torch.Tensor] | None = None
        """The weights at the last refresh (refresh_tol only)."""
        self._reference_norms: list[float] = []
        self._age = 0
        """Optimizer steps since the last refresh."""
        self._refreshes = 0
        self._gap = 0.0

    # ------------------------------------------------------------------ what a subclass gives
    def factor_weights(self, model: nn.Module) -> list[torch.Tensor]:
        raise NotImplementedError

    def exact_with_factors(self, weights: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(exact value as a float64 0-d tensor, factors G_l shaped and typed like `weights`)."""
        raise NotImplementedError

    def exact_penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ the route
    @property
    def amortized(self) -> bool:
        return self.options.refresh_every > 1

    def setup(self, model: nn.Module) -> None:
        if self.amortized:
            self._factors, self._refreshes, self._gap = None, 0, 0.0
            self.refresh(model)

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        if not self.amortized or ctx is None:
            return self.exact_penalty(model, ctx)
        return self.lower_bound(model)

    def lower_bound(self, model: nn.Module) -> torch.Tensor:
        """L(theta) = sum_l <G_l, W_l>, differentiable (gradient G); vmaps (G is per-model state)."""
        if self._factors is None:
            raise RuntimeError(f"{self.name}: setup(model) must be called before penalty()")
        weights = self.factor_weights(model)
        return torch.stack([(g * w).sum() for g, w in zip(self._factors, weights, strict=True)]).sum()

    @torch.no_grad()
    def refresh(self, model: nn.Module) -> None:
        """The exact value and factors at the current weights; records how far the bound with the
        factors they replace had drifted (`refresh_gap`)."""
        weights = [w.detach() for w in self.factor_weights(model)]
        value, factors = self.exact_with_factors(weights)
        if self._factors is not None:
            self._gap = self._relative_gap(value, self._factors, weights)
        self._factors = factors
        if self.options.refresh_tol is not None:
            self._reference = [w.clone() for w in weights]
            self._reference_norms = [float(torch.linalg.vector_norm(w)) for w in self._reference]
        self._age = 0
        self._refreshes += 1

    @staticmethod
    def _relative_gap(value: torch.Tensor, factors: list[torch.Tensor], weights: list[torch.Tensor]) -> float:
        products = [(g.double() * w.double()).sum() for g, w in zip(factors, weights, strict=True)]
        bound = float(torch.stack(products).sum())
        exact = float(value)
        return (exact - bound) / exact if exact > 0 else 0.0

    @torch.no_grad()
    def relative_change(self, model: nn.Module) -> float:
        """max over weight tensors of ||W - W_ref||_F / ||W_ref||_F since the last refresh."""
        assert self._reference is not None
        weights = self.factor_weights(model)
        changes = torch.stack(
            [torch.linalg.vector_norm(w.detach() - ref) for w, ref in zip(weights, self._reference, strict=True)]
        ).tolist()  # one device synchronization
        worst = 0.0
        for change, norm in zip(changes, self._reference_norms, strict=True):
            worst = max(worst, change / norm if norm > 0 else (float("inf") if change > 0 else 0.0))
        return worst

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Refresh after every `refresh_every`-th step, or earlier when the weights moved by more
        than `refresh_tol`: the next step's penalty then starts from exact factors."""
        if not self.amortized:
            return
        self._age += 1
        due = self._age >= self.options.refresh_every
        tol = self.options.refresh_tol
        if not due and tol is not None:
            due = self.relative_change(model) > tol
        if due:
            self.refresh(model)

    # ------------------------------------------------------------------ reports and resume
    @torch.no_grad()
    def amortized_report(self, model: nn.Module, exact: float) -> dict[str, float]:
        """The refresh measurements `report` adds when amortized (module docstring)."""
        if not self.amortized or self._factors is None:
            return {}
        bound = float(self.lower_bound(model))
        return {
            "refreshes": float(self._refreshes),
            "refresh_gap": self._gap,
            "bound_gap": (exact - bound) / exact if exact > 0 else 0.0,
        }

    def state_dict(self) -> dict[str, Any]:
        if not self.amortized:
            return {}
        return {
            "factors": None if self._factors is None else [t.detach().cpu() for t in self._factors],
            "reference": None if self._reference is None else [t.cpu() for t in self._reference],
            "reference_norms": list(self._reference_norms),
            "age": self._age,
            "refreshes": self._refreshes,
            "gap": self._gap,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the factors onto the devices and dtypes `setup` gave them (call it first)."""
        if not self.amortized or not state:
            return
        if state["factors"] is not None:
            self._factors = restore_tensors(state["factors"], self._factors, f"{self.name} factors")
        if state["reference"] is not None:
            self._reference = restore_tensors(state["reference"], self._reference, f"{self.name} reference weights")
        self._reference_norms = [float(n) for n in state["reference_norms"]]
        self._age = int(state["age"])
        self._refreshes = int(state["refreshes"])
        self._gap = float(state["gap"])


__all__ = ["AmortizedPenalty", "RefreshOptions", "check_refresh_options", "restore_tensors"]
