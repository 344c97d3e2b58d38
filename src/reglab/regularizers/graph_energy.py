"""Graph energy of the network's layered graph (study 2's ``global_adjacency``, §2.4, fixed).

For an MLP of Linear layers W_1 (n_1 x n_0), ..., W_L (n_L x n_{L-1}) the layered graph has the
input units and then each layer's output units as nodes, N = n_0 + n_1 + ... + n_L in all. Layer
i's nodes start at offset_i = n_0 + ... + n_{i-1} (offset_0 = 0). The symmetric adjacency A has

    A[offset_{i-1} + a, offset_i + b] = A[offset_i + b, offset_{i-1} + a] = W_i[b, a]

and zeros elsewhere (biases are not edges). The penalty is the graph energy

    R = sum_k |lambda_k(A)|,

counted once per step. Study 2 built the offsets from the wrong size list (blocks misplaced) and
added the whole energy once per 2-D parameter; both are fixed here.

The layered graph is bipartite: every edge joins an even layer (input, layer 2, layer 4, ...) to
an odd one. Ordering the nodes even layers first, A = [[0, B], [B^T, 0]] with the biadjacency
matrix B (even nodes x odd nodes), block-bidiagonal:

    block (layer 2k, layer 2k+1) = W_{2k+1}^T     (A[offset_{2k} + a, offset_{2k+1} + b] = W_{2k+1}[b, a])
    block (layer 2k, layer 2k-1) = W_{2k}         (A[offset_{2k} + b, offset_{2k-1} + a] = W_{2k}[b, a])

The eigenvalues of such an A are +-sigma_i(B) and |n_even - n_odd| zeros, so for any depth

    R = sum_k |lambda_k(A)| = 2 sum_i sigma_i(B) = 2 ||B||_*     exactly.

Methods (option ``method``):

- ``bipartite_svd`` (what ``auto`` uses, always): builds B (as B^T, `biadjacency_transposed`,
  which copies the first layer's weights untransposed) and takes its nuclear norm with
  `nuclear.nuclear_norm_of` (option ``solver``: ``gram``, the default, eigenvectors of the
  smaller Gram matrix in float64; or ``svdvals``, LAPACK's SVD): O(m n^2) time for m x n = the
  larger x the smaller of n_even, n_odd, O(m n) memory. For 784-128-128-10 B is 912 x 138
  (n_even = 784 + 128, n_odd = 128 + 10).
- ``dense``: builds the N x N adjacency A and runs `torch.linalg.eigvalsh`: O(N^3) time, O(N^2)
  memory, N = n_0 + ... + n_L = 1 050 for 784-128-128-10 (about 80 ms for the forward alone).
  Kept as the plain reference the fast route is tested against.

Gradients. The bipartite route's gradient is U V^T (U, V the thin singular vectors of B, both
solvers): well defined and stable
when the sigma_i(B) are distinct and nonzero, which holds for generic weights whenever B has full
rank min(n_even, n_odd). The |n_even - n_odd| structural zero eigenvalues of A never enter (B has
only min(n_even, n_odd) singular values), unlike the dense route where |lambda| sits at its kink
for each of them. Where some sigma_i(B) = 0 (a rank-deficient B: e.g. a 1-unit bottleneck such as
4-1-1-4 forces zeros, or weights that are exactly rank-deficient) the nuclear norm is not
differentiable: the gram solver returns the minimal subgradient U_r V_r^T over the nonzero ones,
svdvals one with arbitrary singular vectors of the zero singular values, which can jump from
step to step (nuclear.py). Repeated nonzero sigma_i are fine for
the value and for this gradient (only the singular values' gradient is needed), but the
singular vectors themselves are then not unique. eigvalsh's gradient (dense) is unstable when
eigenvalues repeat, and A always has repeated zero eigenvalues when n_even != n_odd.

Amortized (options ``refresh_every`` / ``refresh_tol``, bipartite route only; see
regularizers/amortized.py). R = 2 ||B||_* is a norm of B and B is linear in the weights, so with
Q = U V^T the polar factor of B^T at a refresh, 2 tr(Q^T B^T) = sum_i <G_i, W_i> with G_i twice
the block of Q at W_i's place in B^T, in W_i's orientation (`biadjacency_blocks`, the adjoint of
`biadjacency_transposed`); G_i is the exact route's gradient at the refresh, and between
refreshes sum_i <G_i, W_i> <= 2 ||Q||_2 ||B||_* = R is the penalty, with gradient G_i.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..errors import ConfigError
from ..models.structure import weight_layers
from .amortized import AmortizedPenalty, RefreshOptions
from .base import StepContext
from .l2 import require_weight_role_only
from .nuclear import Solver, nuclear_norm_and_factor, nuclear_norm_of
from .registry import REGULARIZERS


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


def biadjacency(weights: list[torch.Tensor]) -> torch.Tensor:
    """The (n_even x n_odd) biadjacency matrix B of the layered graph, differentiable.

    Rows: the nodes of layers 0, 2, 4, ... in that order; columns: layers 1, 3, 5, .... With A
    permuted to even nodes first, A = [[0, B], [B^T, 0]] (module docstring): W_i (layer i-1 ->
    layer i) is placed as W_i^T in block (i-1, i) for odd i and as W_i in block (i, i-1) for even
    i, so B[node u, node v] = A[node u, node v] for every even u and odd v.
    """
    sizes = layer_sizes(weights)
    even_start = [sum(sizes[0:i:2]) for i in range(len(sizes))]  # start among rows (even i)
    odd_start = [sum(sizes[1:i:2]) for i in range(len(sizes))]  # start among columns (odd i)
    w0 = weights[0]
    b = torch.zeros(sum(sizes[0::2]), sum(sizes[1::2]), dtype=w0.dtype, device=w0.device)
    for i, w in enumerate(weights, start=1):
        if i % 2:  # layer i-1 even (rows), layer i odd (columns): A[i-1, i] = W_i^T
            r, c = even_start[i - 1], odd_start[i]
            b[r : r + sizes[i - 1], c : c + sizes[i]] = w.T
        else:  # layer i even (rows), layer i-1 odd (columns): A[i, i-1] = W_i
            r, c = even_start[i], odd_start[i - 1]
            b[r : r + sizes[i], c : c + sizes[i - 1]] = w
    return b


def biadjacency_transposed(weights: list[torch.Tensor]) -> torch.Tensor:
    """B^T (rows: the nodes of layers 1, 3, ...; columns: layers 0, 2, ...), built directly: the
    odd-indexed weights W_1, W_3, ... (the first layer, usually the largest, among them) are copied
    as they are rather than transposed. Same singular values as B; the graph energy uses this
    form because it saves a transposed copy of the first (usually largest) weight matrix every step."""
    sizes = layer_sizes(weights)
    even_start = [sum(sizes[0:i:2]) for i in range(len(sizes))]
    odd_start = [sum(sizes[1:i:2]) for i in range(len(sizes))]
    w0 = weights[0]
    bt = torch.zeros(sum(sizes[1::2]), sum(sizes[0::2]), dtype=w0.dtype, device=w0.device)
    for i, w in enumerate(weights, start=1):
        if i % 2:  # B[i-1 block, i block] = W_i^T, so B^T holds W_i
            r, c = even_start[i - 1], odd_start[i]
            bt[c : c + sizes[i], r : r + sizes[i - 1]] = w
        else:  # B[i block, i-1 block] = W_i, so B^T holds W_i^T
            r, c = even_start[i], odd_start[i - 1]
            bt[c : c + sizes[i - 1], r : r + sizes[i]] = w.T
    return bt


def biadjacency_blocks(bt: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """The block of `bt` (a matrix shaped like B^T) at each weight's place in
    `biadjacency_transposed`, in that weight's own orientation, as contiguous copies: the adjoint
    of `biadjacency_transposed`, so sum_i <blocks_i, W_i> = <bt, biadjacency_transposed(W)>."""
    even_start = [sum(sizes[0:i:2]) for i in range(len(sizes))]
    odd_start = [sum(sizes[1:i:2]) for i in range(len(sizes))]
    blocks = []
    for i in range(1, len(sizes)):
        if i % 2:  # B^T holds W_i as it is
            r, c = even_start[i - 1], odd_start[i]
            blocks.append(bt[c : c + sizes[i], r : r + sizes[i - 1]].clone())
        else:  # B^T holds W_i^T
            r, c = even_start[i], odd_start[i - 1]
            blocks.append(bt[c : c + sizes[i - 1], r : r + sizes[i]].T.clone())
    return blocks


def graph_energy_and_factors(
    weights: list[torch.Tensor], solver: Solver = "gram"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(R, [G_i]): the exact graph energy 2 ||B||_* (float64) and its gradient with respect to
    each weight (shaped and typed as the weight), from the polar factor of B^T (module docstring)."""
    sizes = layer_sizes(weights)
    value, q = nuclear_norm_and_factor(biadjacency_transposed([w.detach() for w in weights]), solver)
    blocks = biadjacency_blocks(2.0 * q, sizes)
    return 2.0 * value, [g.to(w.dtype) for g, w in zip(blocks, weights, strict=True)]


def bipartite_graph_energy(weights: list[torch.Tensor] | torch.Tensor, solver: Solver = "gram") -> torch.Tensor:
    """2 * sum_i sigma_i(B) = 2 ||B||_*, B = biadjacency(weights): the exact graph energy of the
    layered graph of a chain of any depth (module docstring). A single matrix W is the chain [W]
    (then B = W^T and the energy is 2 ||W||_*)."""
    if isinstance(weights, torch.Tensor):
        weights = [weights]
    return 2.0 * nuclear_norm_of(biadjacency_transposed(weights), solver)


Method = Literal["auto", "dense", "bipartite_svd"]


def graph_energy(weights: list[torch.Tensor], method: Method = "auto", solver: Solver = "gram") -> torch.Tensor:
    """Graph energy of the chain `weights` by `method` (auto = bipartite_svd, exact for any depth;
    `solver` picks how that route computes singular values)."""
    layer_sizes(weights)
    if method in ("auto", "bipartite_svd"):
        return bipartite_graph_energy(weights, solver)
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


class GraphEnergyOptions(RefreshOptions):
    method: Method = "auto"
    """bipartite_svd: 2 ||B||_* of the biadjacency B (exact, any depth; the fast route);
    dense: eigvalsh of the full adjacency A (the slow reference); auto: bipartite_svd."""
    solver: Solver = "gram"
    """For bipartite_svd: gram (eigh of the smaller Gram matrix in float64, the fast default) or
    svdvals (LAPACK's SVD); see regularizers/nuclear.py."""


@REGULARIZERS.register("graph_energy")
class GraphEnergy(AmortizedPenalty):
    """R = sum_k |lambda_k(A)|, A the adjacency of the model's layered graph (module docstring)."""

    not_vectorized_why = "its penalty builds the layered adjacency by index assignment, not tested under vmap"

    Options = GraphEnergyOptions
    options: GraphEnergyOptions

    def __init__(self, options, roles=("weight",)):
        super().__init__(options, roles)
        require_weight_role_only(self.name, self.roles)
        if options.method == "dense" and options.refresh_every > 1:
            raise ConfigError(
                "refresh_every",
                "amortizes the bipartite route only; method dense is the slow reference (use auto or bipartite_svd)",
            )

    def setup(self, model: nn.Module) -> None:
        chain_weights(model, self.name)
        super().setup(model)

    def factor_weights(self, model: nn.Module) -> list[torch.Tensor]:
        return chain_weights(model, self.name)

    def exact_with_factors(self, weights: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return graph_energy_and_factors(weights, self.options.solver)

    def exact_penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        return graph_energy(chain_weights(model, self.name), self.options.method, self.options.solver)

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        exact = float(self.exact_penalty(model, None))
        return {"penalty": exact} | self.amortized_report(model, exact)
