"""Graph energy of the network's layered graph (study 2's ``global_adjacency``, §2.4, fixed).

For an MLP of Linear layers W_1 (n_1 x n_0), ..., W_L (n_L x n_{L-1}) the layered graph has the
input units and then each layer's output units as nodes, N = n_0 + n_1 + ... + n_L in all. Layer
i's nodes start at offset_i = n_0 + ... + n_{i-1} (offset_0 = 0). The symmetric adjacency A has

    A[offset_{i-1} + a, offset_i + b] = A[offset_i + b, offset_{i-1} + a] = W_i[b, a]

and zeros elsewhere (biases are not edges). The penalty is the graph energy

    R = sum_k |lambda_k(A)|,

counted once per step. Study 2 built the offsets from the wrong size list (blocks misplaced) and
added the whole energy once per 2-D parameter; both are fixed here.

Cost: ``dense`` builds A and runs `torch.linalg.eigvalsh` on it: O(N^3) time, O(N^2) memory per
step (N = 1 168 nodes for 784-128-128-10). A is block tridiagonal, but its spectrum has no cheaper
exact form in general, so the dense route stays. For one weight layer (a bipartite graph) the
energy is exactly 2 * sum_i sigma_i(W): ``bipartite_svd`` uses that (an SVD of the n_1 x n_0
matrix); ``auto`` picks it for one layer and ``dense`` otherwise.

Gradients through eigvalsh are unstable when eigenvalues repeat (A always has a repeated zero
eigenvalue when the layer sizes differ, and |lambda| is not differentiable at 0; autograd returns
one subgradient there).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..models.structure import weight_layers
from . import REGULARIZERS
from .base import Options, Regularizer, StepContext
from .l2 import require_weight_role_only


def layer_sizes(weights: list[torch.Tensor]) -> list[int]:
    """[n_0, n_1, ..., n_L] for a chain of matrices W_i of shape (n_i, n_{i-1}); checks the chain."""
    if not weights:
        raise ValueError("a layered graph needs at least one weight matrix")
    sizes = [weights[0].shape[1]]
    for i, w in enumerate(weights):
        if w.dim() != 2:
            raise ValueError(f"weight {i} is not a matrix (shape {tuple(w.shape)})")
        if w.shape[1] != sizes[-1]:
            raise ValueError(
                f"weights do not form a chain: weight {i} has {w.shape[1]} inputs but the previous layer has "
                f"{sizes[-1]} outputs"
            )
        sizes.append(w.shape[0])
    return sizes


def layered_adjacency(weights: list[torch.Tensor]) -> torch.Tensor:
    """The symmetric N x N adjacency of the layered graph (module docstring), differentiable."""
    sizes = layer_sizes(weights)
    total = sum(sizes)
    w0 = weights[0]
    upper = torch.zeros(total, total, dtype=w0.dtype, device=w0.device)
    offset = 0
    for i, w in enumerate(weights):
        rows = slice(offset, offset + sizes[i])  # layer i-1 nodes (inputs of w)
        cols = slice(offset + sizes[i], offset + sizes[i] + sizes[i + 1])  # layer i nodes
        upper[rows, cols] = w.T  # A[offset_{i-1} + a, offset_i + b] = W_i[b, a]
        offset += sizes[i]
    return upper + upper.T


def dense_graph_energy(weights: list[torch.Tensor]) -> torch.Tensor:
    """sum_k |lambda_k(A)| with A = layered_adjacency(weights) (eigvalsh, O(N^3))."""
    return torch.linalg.eigvalsh(layered_adjacency(weights)).abs().sum()


def bipartite_graph_energy(weight: torch.Tensor) -> torch.Tensor:
    """Energy of the bipartite graph of one matrix: eig([[0, W^T], [W, 0]]) = +-sigma_i(W) and
    zeros, so the energy is exactly 2 * sum_i sigma_i(W)."""
    return 2.0 * torch.linalg.svdvals(weight).sum()


Method = Literal["auto", "dense", "bipartite_svd"]


def graph_energy(weights: list[torch.Tensor], method: Method = "auto") -> torch.Tensor:
    """Graph energy of the chain `weights` by `method` (auto: bipartite_svd for one matrix)."""
    layer_sizes(weights)
    if method == "auto":
        method = "bipartite_svd" if len(weights) == 1 else "dense"
    if method == "bipartite_svd":
        if len(weights) != 1:
            raise ValueError(f"bipartite_svd is exact for one weight layer only, got {len(weights)}")
        return bipartite_graph_energy(weights[0])
    if method == "dense":
        return dense_graph_energy(weights)
    raise ValueError(f"method must be auto, dense or bipartite_svd, got {method!r}")


def chain_weights(model: nn.Module, name: str = "graph_energy") -> list[torch.Tensor]:
    """The weights of a model whose weight layers are Linear layers forming a chain.

    Raises ValueError otherwise (the trainer reports a setup ValueError as a config error)."""
    layers = weight_layers(model)
    if not layers:
        raise ValueError(f"{name} needs a model with Linear layers; this model has no weight layer")
    for lname, layer in layers:
        if not isinstance(layer, nn.Linear):
            raise ValueError(
                f"{name} is defined for MLPs of Linear layers forming a chain; layer {lname!r} is "
                f"{type(layer).__name__}"
            )
    weights = [layer.weight for _, layer in layers]
    try:
        layer_sizes(weights)
    except ValueError as e:
        raise ValueError(f"{name}: the model's Linear layers do not form a chain ({e})") from None
    return weights


class GraphEnergyOptions(Options):
    method: Method = "auto"
    """dense: eigvalsh of the full adjacency; bipartite_svd: 2 sum sigma (one layer only);
    auto: bipartite_svd for one layer, dense otherwise."""


@REGULARIZERS.register("graph_energy")
class GraphEnergy(Regularizer):
    """R = sum_k |lambda_k(A)|, A the adjacency of the model's layered graph (module docstring)."""

    name = "graph_energy"
    Options = GraphEnergyOptions

    def __init__(self, options, roles=("weight",)):
        super().__init__(options, roles)
        require_weight_role_only(self.name, self.roles)

    def setup(self, model: nn.Module) -> None:
        weights = chain_weights(model, self.name)
        if self.options.method == "bipartite_svd" and len(weights) != 1:
            raise ValueError(
                f"graph_energy method bipartite_svd is exact for one weight layer only; this model has "
                f"{len(weights)} (use method auto or dense)"
            )

    def penalty(self, model: nn.Module, ctx: StepContext) -> torch.Tensor:
        return graph_energy(chain_weights(model, self.name), self.options.method)

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        return {"penalty": float(self.penalty(model, None))}
