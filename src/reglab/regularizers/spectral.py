"""Per-layer spectral penalties of study 2 (seed-studies.md §2.4): Frobenius, nuclear norm and
the "layerwise" spectral energy.

Each weight W_l is viewed as a matrix M_l of shape (out, in*k*k) (a Linear weight as is, a conv
weight reshaped); biases are never included. Penalties sum over the model's weight layers:

- ``frobenius``:       R = sum_l ||M_l||_F^2 = sum_l sum_i sigma_i(M_l)^2
- ``nuclear_norm``:    R = c * sum_l sum_i sigma_i(M_l),  c = 1, or 2 with
                       ``graph_energy_convention`` (the energy of the bipartite adjacency
                       [[0, M], [M^T, 0]], whose eigenvalues are +-sigma_i; study 2's
                       ``nuclear_norm`` method used c = 2)
- ``spectral_energy``: R = sum_l e(M_l) with e(M) = sum_i |lambda_i((M + M^T)/2)| for square M and
                       e(M) = sum_i sigma_i(M) for rectangular M (study 2's ``layerwise``). It mixes
                       two different quantities, as the study did: the nuclear norm of the symmetric
                       part for square layers and the nuclear norm for the others. The rectangular
                       case is a nuclear norm (`nuclear.py`), not sqrt(eig(Gram)) as the study did,
                       whose gradient explodes near zero singular values.

Nuclear norms come from `nuclear.nuclear_norm_of` with the option ``solver``: ``gram`` (default:
eigenvectors of the smaller Gram matrix in float64, faster than LAPACK's SVD on a CPU for tall
layers, as accurate) or ``svdvals`` (the reference). Both return the gradient U V^T; nuclear.py
says what each does at zero singular values. eigvalsh's gradient is unstable when eigenvalues
repeat.

``nuclear_norm`` and ``spectral_energy`` take ``refresh_every`` / ``refresh_tol``: the exact
gradient (U V^T, or V sign(Lambda) V^T of a square layer's symmetric part) computed every k steps
and its linear lower bound sum_l <G_l, W_l> as the penalty in between (regularizers/amortized.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.structure import weight_layers
from .amortized import AmortizedPenalty, RefreshOptions
from .base import Regularizer, StepContext
from .l2 import require_weight_role_only
from .nuclear import Solver, nuclear_norm_and_factor, nuclear_norm_of
from .registry import REGULARIZERS


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) for a Linear weight; (out, in*k*k) for a conv weight."""
    return weight.reshape(weight.shape[0], -1)


def frobenius_sq(weight: torch.Tensor) -> torch.Tensor:
    """||W||_F^2 = sum_ij W_ij^2."""
    return weight.pow(2).sum()


def nuclear_norm(weight: torch.Tensor, solver: Solver = "gram") -> torch.Tensor:
    """||M||_* = sum_i sigma_i(M) of the matrix view M of `weight`."""
    return nuclear_norm_of(as_matrix(weight), solver)


def symmetric_part_energy(matrix: torch.Tensor) -> torch.Tensor:
    """sum_i |lambda_i((M + M^T)/2)| for a square M (eigvalsh)."""
    return torch.linalg.eigvalsh(0.5 * (matrix + matrix.T)).abs().sum()


def symmetric_part_energy_and_factor(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_i |lambda_i(S)|, P) of S = (M + M^T)/2, both float64 and detached: P = V sign(Lambda)
    V^T is the energy's gradient with respect to M (symmetric, so <P, M> = <P, S> = the energy)."""
    m64 = matrix.detach().to(torch.float64)
    lam, v = torch.linalg.eigh(0.5 * (m64 + m64.T))
    return lam.abs().sum(), (v * torch.sign(lam)) @ v.T


def layerwise_spectral_energy(weight: torch.Tensor, solver: Solver = "gram") -> torch.Tensor:
    """Study 2's "layerwise" value: symmetric-part energy if the matrix view is square, else the
    nuclear norm."""
    m = as_matrix(weight)
    if m.shape[0] == m.shape[1]:
        return symmetric_part_energy(m)
    return nuclear_norm_of(m, solver)


class _PerLayerPenalty(Regularizer):
    """R = sum over weight layers of `per_layer(W_l)`; report: the total and each layer's value."""

    vectorizes = True

    def __init__(self, options, roles=("weight",)):
        super().__init__(options, roles)
        require_weight_role_only(self.name, self.roles)

    def per_layer(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layer_values(self, model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        layers = weight_layers(model)
        if not layers:
            raise ValueError(f"{self.name}: the model has no Linear or Conv2d layer")
        return [(name, self.per_layer(layer.weight)) for name, layer in layers]

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        return torch.stack([v for _, v in self.layer_values(model)]).sum()

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        values = self.layer_values(model)
        out = {f"layer.{name}": float(v) for name, v in values}
        out["penalty"] = float(torch.stack([v for _, v in values]).sum())
        return out


@REGULARIZERS.register("frobenius")
class Frobenius(_PerLayerPenalty):
    """R = sum_l ||W_l||_F^2 over weight layers (study 2's ``frobenius_norm``: squared)."""

    def per_layer(self, weight):
        return frobenius_sq(weight)


class SolverOptions(RefreshOptions):
    solver: Solver = "gram"
    """How singular values are computed: gram (eigh of the smaller Gram matrix in float64, the
    fast default) or svdvals (LAPACK's SVD, the reference); see regularizers/nuclear.py."""


class NuclearNormOptions(SolverOptions):
    graph_energy_convention: bool = False
    """Multiply by 2: the graph energy of each layer's bipartite adjacency (study 2's value)."""


class _AmortizedPerLayer(AmortizedPenalty, _PerLayerPenalty):
    """A per-layer penalty with ``refresh_every`` / ``refresh_tol`` (regularizers/amortized.py):
    one factor per weight layer; `layer_factor` gives the exact value and gradient of one layer's
    term as float64 (value, matrix factor)."""

    options: SolverOptions

    def layer_factor(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def factor_weights(self, model: nn.Module) -> list[torch.Tensor]:
        layers = weight_layers(model)
        if not layers:
            raise ValueError(f"{self.name}: the model has no Linear or Conv2d layer")
        return [layer.weight for _, layer in layers]

    def exact_with_factors(self, weights: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        values, factors = [], []
        for w in weights:
            value, factor = self.layer_factor(as_matrix(w))
            values.append(value)
            factors.append(factor.reshape(w.shape).to(w.dtype))
        return torch.stack(values).sum(), factors

    def exact_penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        return _PerLayerPenalty.penalty(self, model, ctx)

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        out = _PerLayerPenalty.report(self, model)
        return out | self.amortized_report(model, out["penalty"])


@REGULARIZERS.register("nuclear_norm")
class NuclearNorm(_AmortizedPerLayer):
    """R = c * sum_l sum_i sigma_i(M_l), c = 2 with graph_energy_convention else 1."""

    Options = NuclearNormOptions
    options: NuclearNormOptions

    def per_layer(self, weight):
        value = nuclear_norm(weight, self.options.solver)
        return 2.0 * value if self.options.graph_energy_convention else value

    def layer_factor(self, matrix):
        value, q = nuclear_norm_and_factor(matrix, self.options.solver)
        c = 2.0 if self.options.graph_energy_convention else 1.0
        return c * value, c * q


@REGULARIZERS.register("spectral_energy")
class SpectralEnergy(_AmortizedPerLayer):
    """Study 2's ``layerwise``: sum_l of |eig| of the symmetric part (square M_l) or of the
    singular values (rectangular M_l). See the module docstring for why it mixes the two."""

    Options = SolverOptions
    options: SolverOptions

    def per_layer(self, weight):
        return layerwise_spectral_energy(weight, self.options.solver)

    def layer_factor(self, matrix):
        if matrix.shape[0] == matrix.shape[1]:
            return symmetric_part_energy_and_factor(matrix)
        return nuclear_norm_and_factor(matrix, self.options.solver)
