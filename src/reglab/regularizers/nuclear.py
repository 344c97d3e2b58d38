"""The nuclear norm ||M||_* = sum_i sigma_i(M) with its gradient, by two solvers.

Every SVD-based penalty (nuclear_norm, spectral_energy's rectangular layers, graph_energy's
biadjacency) ends here. Below, A is the tall orientation of M (M or M^T, p x q with p >= q:
same singular values); `gram_nuclear_norm` works on a wide M as it is (M M^T, V^T M), which is
the same computation without transposed copies.

``svdvals`` (the reference): `torch.linalg.svdvals(A).sum()`. With autograd on, torch computes
the full thin SVD and the gradient U V^T. LAPACK's SVD is slow on a CPU for these sizes: its
bidiagonalization is memory-bound, and a 128 x 128 SVD costs ~10 eighs of the same size
(measured: bench/bench_penalties.py, and the notes in README "Benchmarks").

``gram`` (the default): the right singular vectors V are the eigenvectors of the q x q Gram
matrix A^T A, and for any orthonormal V

    f(A; V) = sum_i ||A v_i||_2  >=  ||A||_*,   with equality when V are A's right singular vectors.

So the value is sum_i ||A v_i|| with V from `eigh(A^T A)`, and its gradient with V held fixed,

    d f / d A = sum_i (A v_i / ||A v_i||) v_i^T = U V^T,

is exactly the nuclear norm's gradient (V is a stationary point of f, so V's own dependence on A
adds nothing). Autograd does this by itself: V is computed from A.detach(), then A @ V, column
norms, sum. Cost: one p x q x q GEMM for the Gram, one q x q eigh, one GEMM for A V and one in
the backward: about 5x less than the SVD for 784 x 128 and 128 x 128 on 2 CPU threads. The eigh
is the floor; bench_penalties.py measures its share of the step in its own run. (Tried and
measured slower or no faster in the trainer: a custom autograd Function taking the value from
the float64 eigenvalues and returning A H, H = V Sigma^+ V^T formed in float64, as the whole
backward (one large GEMM instead of two; 2x closer to the float64 U V^T in float32, but 0.2-0.3
ms slower per MLP step in paired A/Bs of 600 and 1 200 trainer steps: the q^3 float64 product for
H and the Python Function cost more than the float32 GEMM saved); float32 Grams; eighs of
different layers in parallel threads, which MKL's internal threading makes ~2.7x slower; the eighs
in a worker thread overlapping the data forward/backward, after which every later step of the
process ran 3-7x slower (the worker's OpenMP team competing for the 2 cores), and with
OMP_WAIT_POLICY=passive two 128 x 128 eighs took 25-34 ms instead of ~4.)

Why not warm-start V from the previous step instead of a fresh eigh (measured, MNIST MLP
784-128-128-10, SGD lr 0.1 momentum 0.9, nuclear_norm 1e-4, 1 200 steps): in the previous step's
basis the Gram matrix of the 128 x 128 layer has relative off-diagonal ||D^-1/2 E D^-1/2||_2 ~ 1 at
every step (its smallest singular values are ~1e-3 of the largest and their vectors turn fast),
and using that basis as is gives gradients off by ~1 in spectral norm; even the 784 x 128 layer
has ~0.1. No first-order correction converges from there, so every step needs the eigh.

Precision. Forming A^T A squares the condition number, so the Gram matrix and its eigh are taken
in float64 whatever A's dtype: V is then accurate to ~1e-8 even for singular values a million
times below the largest, and float32 singular values come out as accurate as svdvals' own (tests
compare both on random, low-rank, rank-deficient and decaying spectra). Only the p x q products
stay in A's dtype.

Zero singular values. The nuclear norm is not differentiable where some sigma_i = 0; any
U_r V_r^T + W with W orthogonal to both singular subspaces and ||W||_2 <= 1 is a subgradient.
Directions whose ||A v_i|| is at the rounding level of the product (below eps * sqrt(max(p, q)) *
sigma_max; measured rounding noise of a rank-deficient float32 A is ~0.3 eps * sigma_max) are
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
    its own layout and its gradient needs no transposed copy (measured 2-5 % of the MNIST MLP's
    nuclear-norm step)."""
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
