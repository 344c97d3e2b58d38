"""The nuclear norm ||M||_* = sum_i sigma_i(M) with its gradient, by two solvers.

Every SVD-based penalty (nuclear_norm, spectral_energy's rectangular layers, graph_energy's
biadjacency) ends here. Below, A is the tall orientation of M (M or M^T, p x q with p >= q:
same singular values); `gram_nuclear_norm` works on a wide M as it is (M M^T, V^T M), which is
the same computation without transposed copies.

``svdvals`` (the reference): `torch.linalg.svdvals(A).sum()`. With autograd on, torch computes
the full thin SVD and the gradient U V^T. On a CPU it is the slower solver for tall matrices:
its bidiagonalization reads the whole p x q matrix repeatedly and is memory-bound.

``gram`` (the default): the right singular vectors V are the eigenvectors of the q x q Gram
matrix A^T A, and for any orthonormal V

    f(A; V) = sum_i ||A v_i||_2  >=  ||A||_*,   with equality when V are A's right singular vectors.

So the value is sum_i ||A v_i|| with V from `eigh(A^T A)`, and its gradient with V held fixed,

    d f / d A = sum_i (A v_i / ||A v_i||) v_i^T = U V^T,

is exactly the nuclear norm's gradient (V is a stationary point of f, so V's own dependence on A
adds nothing). Autograd does this by itself: V is computed from A.detach(), then A @ V, column
norms, sum. Cost: one p x q x q GEMM for the Gram, one q x q eigh, one GEMM for A V and one in
the backward, which on a CPU is faster than the SVD on tall matrices and as fast on square ones.
The eigh is the floor of any exact per-step method; bench_penalties.py measures its share of the
step. The plain autograd form is kept because the alternatives measured in the trainer (a custom
autograd Function, float32 Grams, eighs on parallel or background threads) were slower; see
ARCHITECTURE.md, Decisions.

A fresh eigh every step, not a V warm-started from the previous step: on a trained MLP the
smallest singular values' vectors turn fast, so in the previous step's basis the Gram matrix is
far from diagonal (relative off-diagonal ~1 for the MNIST MLP's 128 x 128 layer) and gives
gradients off by ~1 in spectral norm; no cheap first-order correction converges from there.

Precision. Forming A^T A squares the condition number, so the Gram matrix and its eigh are taken
in float64 whatever A's dtype: V is then accurate to ~1e-8 even for singular values a million
times below the largest, and float32 singular values come out as accurate as svdvals' own (tests
compare both on random, low-rank, rank-deficient and decaying spectra). Only the p x q products
stay in A's dtype.

Zero singular values. The nuclear norm is not differentiable where some sigma_i = 0; any
U_r V_r^T + W with W orthogonal to both singular subspaces and ||W||_2 <= 1 is a subgradient.
Directions whose ||A v_i|| is at the rounding level of the product (below eps * sqrt(max(p, q)) *
sigma_max; the rounding noise of a rank-deficient float32 A is ~0.3 eps * sigma_max) are
dropped from the sum, so the
gradient there is the minimal one U_r V_r^T with spectral norm 1, rather than unit vectors of
rounding noise (which would give a "subgradient" of spectral norm >> 1). svdvals instead returns
arbitrary singular vectors for the zero singular values, a subgradient that can jump from step
to step.
"""

from __future__ import annotations

from typing import Literal

import torch

Solver = Literal["gram", "svdvals"]
SOLVERS = ("gram", "svdvals")


def tall(m: torch.Tensor) -> torch.Tensor:
    """M or M^T, whichever has at least as many rows as columns (same singular values)."""
    return m if m.shape[0] >= m.shape[1] else m.T


def gram_nuclear_norm(m: torch.Tensor) -> torch.Tensor:
    """||M||_* through the eigenvectors of the smaller Gram matrix (module docstring).

    A wide M (fewer rows than columns) is not transposed: its Gram matrix is M M^T, V are its
    left singular vectors and the norms are those of the rows of V^T M. Products then read M in
    its own layout and its gradient needs no transposed copy."""
    wide = m.shape[0] < m.shape[1]
    m64 = m.detach().to(torch.float64)
    _, v = torch.linalg.eigh(m64 @ m64.T if wide else m64.T @ m64)
    v = v.to(m.dtype)
    products = v.T @ m if wide else m @ v  # rows (wide) or columns (tall) have norms sigma_i
    norms = torch.linalg.vector_norm(products, dim=1 if wide else 0)
    tol = norms.detach().max() * max(m.shape) ** 0.5 * torch.finfo(m.dtype).eps
    return torch.where(norms > tol, norms, torch.zeros_like(norms)).sum()


def nuclear_norm_of(m: torch.Tensor, solver: Solver = "gram") -> torch.Tensor:
    """sum_i sigma_i(M) of a matrix, differentiable, by `solver` (gram or svdvals)."""
    if m.dim() != 2:
        raise ValueError(f"nuclear norm of a matrix: got shape {tuple(m.shape)}")
    if solver == "gram":
        return gram_nuclear_norm(m)
    if solver == "svdvals":
        return torch.linalg.svdvals(tall(m)).sum()
    raise ValueError(f"solver must be one of {', '.join(SOLVERS)}; got {solver!r}")


__all__ = ["SOLVERS", "Solver", "gram_nuclear_norm", "nuclear_norm_of", "tall"]
