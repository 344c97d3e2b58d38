"""Squared-norm regularizers: plain L2 over parameters by role, decoupled weight decay, and the
per-layer L2-sum and L2-mul penalties of study 1 (seed-studies.md §1.6, §1.7, §3.4, §3.7).

Formulas (W_l = weight of the l-th weight layer, l = 1..L in registration order):

- ``l2``:      R = sum_{p in params selected by role} ||p||^2          (x 1/2 with ``half``)
- ``decoupled_weight_decay``: no penalty; after the optimizer step p <- (1 - lam*lr) * p
- ``l2_sum``:  R = sum_l n_l                (``depth_normalization: mean`` -> R / L)
- ``l2_mul``:  R = prod_l n_l               (``depth_normalization: geometric`` -> R^(1/L))

with n_l = ||W_l||_F^2 (g_l^2 under PaperWN), optionally divided by the weight's dim 0
(``features_normalization: f_out``, output features / channels) or dim 1 (``f_in``, input
features / channels, kernel area *not* included). Under PaperWN both f_out and f_in apply
(study 1 silently ignored f_in there; fixed).

Under Rho-WN every n_l is the constant 1 (times its features normalization) and the global
output scale rho carries the network's scale: ``l2_mul`` is rho^2 * prod_l n_l (to the 1/L with
``geometric``), and ``l2_sum`` is refused, since it would be a constant (as in study 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import field_validator
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from ..models.structure import WeightLayer, layer_norm_sq, params_by_role, weight_layers
from ..models.weightnorm import global_scale, weight_parametrizations
from .base import Options, Regularizer, StepContext
from .registry import REGULARIZERS

FeaturesNormalization = Literal["none", "f_out", "f_in"]


# ----------------------------------------------------------------------------------------------
# plain functions (the math)
# ----------------------------------------------------------------------------------------------


def squared_norm_sum(params: Sequence[torch.Tensor], half: bool = False) -> torch.Tensor:
    """sum_p ||p||^2 over `params` (every entry squared and summed); x 1/2 when `half`.

    An empty list gives a 0-d zero tensor (float32, CPU)."""
    if not params:
        return torch.zeros(())
    total = torch.stack([p.pow(2).sum() for p in params]).sum()
    return 0.5 * total if half else total


def weight_shape(layer: WeightLayer) -> torch.Size:
    """Shape of a weight layer's weight without computing a parametrization."""
    if parametrize.is_parametrized(layer, "weight"):
        return weight_parametrizations(layer).original.shape
    return layer.weight.shape


def layer_quantity(layer: WeightLayer, features_normalization: FeaturesNormalization = "none") -> torch.Tensor:
    """n_l = ||W_l||_F^2 (g_l^2 under PaperWN), divided by dim 0 (f_out) or dim 1 (f_in) of W_l."""
    n = layer_norm_sq(layer)
    if features_normalization == "f_out":
        return n / weight_shape(layer)[0]
    if features_normalization == "f_in":
        return n / weight_shape(layer)[1]
    if features_normalization != "none":
        raise ValueError(f"features_normalization must be none, f_out or f_in, got {features_normalization!r}")
    return n


def layer_quantities(model: nn.Module, features_normalization: FeaturesNormalization = "none") -> list[torch.Tensor]:
    """[n_1, ..., n_L] over the model's weight layers (see `layer_quantity`)."""
    return [layer_quantity(layer, features_normalization) for _, layer in weight_layers(model)]


def l2_sum(quantities: list[torch.Tensor], depth_normalization: Literal["none", "mean"] = "none") -> torch.Tensor:
    """R_sum = sum_l n_l; with ``mean``, R_sum / L."""
    if not quantities:
        raise ValueError("l2_sum needs at least one weight layer")
    total = torch.stack(quantities).sum()
    return total / len(quantities) if depth_normalization == "mean" else total


def _high_precision(t: torch.Tensor) -> torch.Tensor:
    """float64 copy where the device supports it (not on MPS), else `t` unchanged."""
    return t if t.device.type == "mps" else t.double()


def l2_mul(quantities: list[torch.Tensor], depth_normalization: Literal["none", "geometric"] = "none") -> torch.Tensor:
    """R_mul = prod_l n_l; with ``geometric``, (prod_l n_l)^(1/L) = exp(mean_l log n_l).

    The product is a plain `torch.prod` taken in float64 (where the device has it) and cast back,
    so intermediate products of many small or large factors neither under- nor overflow, and the
    gradient is exactly dR/dn_k = prod_{l != k} n_l, also when some n_l is 0 (torch.prod's
    backward handles zeros). Hence dR/dW_k = 2 W_k prod_{l != k} n_l.

    The geometric mean is computed in log space; its gradient R / (L n_k) is undefined when a
    layer is exactly zero (the true derivative is infinite there)."""
    if not quantities:
        raise ValueError("l2_mul needs at least one weight layer")
    stacked = torch.stack(quantities)
    wide = _high_precision(stacked)
    value = wide.log().mean().exp() if depth_normalization == "geometric" else wide.prod()
    return value.to(stacked.dtype)


def require_weight_role_only(name: str, roles: tuple[str, ...]) -> None:
    """For regularizers that act on weight layers' weights (not on parameters by role)."""
    if tuple(roles) != ("weight",):
        raise ConfigError(
            "roles",
            f"{name} acts on the weight layers' weights and does not select parameters by role; got {list(roles)}",
            ["[weight]"],
        )


def _zero_like_model(model: nn.Module) -> torch.Tensor:
    p = next(model.parameters(), None)
    return torch.zeros(()) if p is None else torch.zeros((), device=p.device, dtype=p.dtype)


# ----------------------------------------------------------------------------------------------
# regularizers (thin wrappers)
# ----------------------------------------------------------------------------------------------


class L2Options(Options):
    half: bool = False
    """R = 1/2 sum ||p||^2 instead of sum ||p||^2."""


@REGULARIZERS.register("l2")
class L2(Regularizer):
    """R = sum_{p selected by roles} ||p||^2 (no 1/2 unless ``half``).

    Default roles [weight]: every non-bias parameter of non-normalization layers (under PaperWN
    that is the direction V *and* the scale g). AutoL2 style (study 3, §3.4, §3.7) is roles
    [weight, bias, norm]: every parameter, no 1/2."""

    vectorizes = True

    Options = L2Options
    options: L2Options

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        params = [p for _, p in params_by_role(model, self.roles)]
        if not params:
            return _zero_like_model(model)
        return squared_norm_sum(params, self.options.half)

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        return {"penalty": float(self.penalty(model, None))}


@REGULARIZERS.register("decoupled_weight_decay")
class DecoupledWeightDecay(Regularizer):
    """Decoupled weight decay (Loshchilov & Hutter; torch.optim.AdamW): before the optimizer
    step, p <- (1 - lam * lr) * p for every parameter selected by roles, so the update is
    p <- (1 - lam * lr) p - lr * u with u the optimizer's own update direction. No penalty: the
    decay never enters the gradient (nor Adam's moment estimates or SGD's momentum). The decay
    per step is coupled to the learning rate (lam * lr, as in torch.optim.AdamW); with plain SGD
    (no momentum) a step equals one with the penalty (lam/2) sum ||p||^2. Applied after the step
    instead it would be (1 - lam * lr)(p - lr * u), off by lam * lr^2 * u."""

    vectorizes = True

    @torch.no_grad()
    def pre_step(self, model: nn.Module, lam: float, lr: float) -> None:
        factor = 1.0 - lam * lr
        for _, p in params_by_role(model, self.roles):
            p.mul_(factor)


class _LayerNormOptions(Options):
    features_normalization: FeaturesNormalization = "none"
    """Divide each n_l by the weight's dim 0 (f_out) or dim 1 (f_in, kernel area not included)."""


class L2SumOptions(_LayerNormOptions):
    depth_normalization: Literal["none", "mean"] = "none"
    """mean: divide the sum by the number of weight layers L."""

    @field_validator("depth_normalization", mode="before")
    @classmethod
    def _not_geometric(cls, v):
        if v == "geometric":
            raise ValueError("l2_sum takes depth_normalization none or mean (geometric is l2_mul's)")
        return v


class L2MulOptions(_LayerNormOptions):
    depth_normalization: Literal["none", "geometric"] = "none"
    """geometric: the L-th root of the product (geometric mean of the n_l)."""

    @field_validator("depth_normalization", mode="before")
    @classmethod
    def _not_mean(cls, v):
        if v == "mean":
            raise ValueError("l2_mul takes depth_normalization none or geometric (mean is l2_sum's)")
        return v


class _LayerNormPenalty(Regularizer):
    """Shared report for l2_sum / l2_mul: per-layer norms, rho and the penalty value."""

    vectorizes = True

    options: _LayerNormOptions

    def __init__(self, options, roles=("weight",)):
        super().__init__(options, roles)
        require_weight_role_only(self.name, self.roles)

    def _combine(self, quantities: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        quantities = layer_quantities(model, self.options.features_normalization)
        rho = global_scale(model)
        if rho is not None and quantities:
            quantities[0] = quantities[0] * rho**2  # Rho-WN: the network's scale is rho
        return self._combine(quantities)

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        """``norm.<layer>`` = ||W_l||_F (|g_l| under PaperWN, 1 under Rho-WN), ``rho`` =
        prod_l ||W_l||_F (times |rho| under Rho-WN; never normalized), ``penalty`` = R as trained
        (normalizations applied)."""
        out: dict[str, float] = {}
        norms = []
        for name, layer in weight_layers(model):
            norm = layer_norm_sq(layer).sqrt()
            norms.append(norm)
            out[f"norm.{name}"] = float(norm)
        rho = global_scale(model)
        if rho is not None:
            norms.append(rho.detach().abs())
        out["rho"] = float(_high_precision(torch.stack(norms)).prod()) if norms else 0.0
        out["penalty"] = float(self.penalty(model, None))
        return out


@REGULARIZERS.register("l2_sum")
class L2Sum(_LayerNormPenalty):
    """R = sum_l n_l (/ L with depth_normalization mean); n_l = ||W_l||_F^2 or g_l^2 (PaperWN),
    optionally / fan-out or / fan-in. Biases and normalization parameters are never included."""

    Options = L2SumOptions
    options: L2SumOptions

    def setup(self, model: nn.Module) -> None:
        if global_scale(model) is not None:
            raise ConfigError(
                "regularizers",
                "l2_sum is constant under Rho-WN (model.weight_norm: rho makes every layer's norm 1); "
                "penalize the network's scale with l2_mul (= rho^2), or use weight_norm: true (PaperWN)",
            )

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        return self._combine(layer_quantities(model, self.options.features_normalization))

    def _combine(self, quantities):
        return l2_sum(quantities, self.options.depth_normalization)


@REGULARIZERS.register("l2_mul")
class L2Mul(_LayerNormPenalty):
    """R = prod_l n_l ((.)^(1/L) with depth_normalization geometric); n_l as for l2_sum.
    dR/dW_k = 2 W_k prod_{l != k} n_l: each layer decays with the product of the others."""

    Options = L2MulOptions
    options: L2MulOptions

    def _combine(self, quantities):
        return l2_mul(quantities, self.options.depth_normalization)
