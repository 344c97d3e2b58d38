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

``auto`` (per device; `auto_route`): the gram solver, with its eigh where it is fastest for the
matrix's device and size. On a CPU that is plain ``gram``, bit for bit. On CUDA, for a smaller
side q <= HOST_EIGH_MAX, the Gram matrix is formed on the GPU (float64, one GEMM: the p x q
matrix stays where it is), its q x q doubles go to the host for LAPACK's eigh, and V comes back.
Why: cuSOLVER's eigh (and svd) on a matrix of tens to hundreds of rows is latency-bound (a
tridiagonal reduction of q small steps, each a few kernel launches), and torch checks its
`info` on the host after every call, a device synchronization the host round trip costs anyway;
LAPACK does a 128 x 128 float64 eigh in well under a millisecond on one core. svdvals on the GPU
has the same launch and sync costs and reads the whole p x q matrix, so auto never picks it.
Above HOST_EIGH_MAX the host's O(q^3) eigh would dominate and the GPU's runs instead. On MPS
(no float64) the matrix goes to the host and the whole float64 part runs there. HOST_EIGH_MAX
is a guess until a GPU measures it (bench_penalties.py on CUDA, gram vs auto per layer size),
which may also change the rule (one batched eigh for all layers). ``gram`` stays the default,
so existing configs compute on every device what they computed before.
"""

from __future__ import annotations

from typing import Literal

import torch

Solver = Literal["gram", "svdvals", "auto"]
SOLVERS = ("gram", "svdvals", "auto")

HOST_EIGH_MAX = 1024
"""`auto` on CUDA: Gram matrices up to this size are eigen-decomposed on the host (docstring)."""


def auto_route(device: torch.device, size: int) -> tuple[Literal["gram", "svdvals"], torch.device | None]:
    """What `solver: auto` runs for a matrix on `device` whose smaller side is `size`: the
    solver, and where the Gram matrix's eigh runs (None: on the matrix's device)."""
    host = torch.device("cpu")
    if device.type == "cuda":
        return "gram", host if size <= HOST_EIGH_MAX else None
    if device.type == "mps":  # no float64 on MPS
        return "gram", host
    return "gram", None


def tall(m: torch.Tensor) -> torch.Tensor:
    """M or M^T, whichever has at least as many rows as columns (same singular values)."""
    return m if m.shape[0] >= m.shape[1] else m.T


def gram_nuclear_norm(m: torch.Tensor, eigh_on: torch.device | None = None) -> torch.Tensor:
    """||M||_* through the eigenvectors of the smaller Gram matrix (module docstring).

    A wide M (fewer rows than columns) is not transposed: its Gram matrix is M M^T, V are its
    left singular vectors and the norms are those of the rows of V^T M. Products then read M in
    its own layout and its gradient needs no transposed copy. `eigh_on`: the device of the eigh
    (None: M's; see `auto_route`)."""
    wide = m.shape[0] < m.shape[1]
    m64 = m.detach()
    if eigh_on is not None and m64.device.type == "mps":  # no float64 there: form the Gram on the host
        m64 = m64.to(eigh_on)
    m64 = m64.to(torch.float64)
    gram = m64 @ m64.T if wide else m64.T @ m64
    _, v = torch.linalg.eigh(gram if eigh_on is None else gram.to(eigh_on))
    v = v.to(device=m.device, dtype=m.dtype)
    products = v.T @ m if wide else m @ v  # rows (wide) or columns (tall) have norms sigma_i
    norms = torch.linalg.vector_norm(products, dim=1 if wide else 0)
    tol = norms.detach().max() * max(m.shape) ** 0.5 * torch.finfo(m.dtype).eps
    return torch.where(norms > tol, norms, torch.zeros_like(norms)).sum()


def nuclear_norm_and_factor(m: torch.Tensor, solver: Solver = "gram") -> tuple[torch.Tensor, torch.Tensor]:
    """(||M||_*, Q) of a matrix, both float64 and detached: Q = U V^T, the polar factor of M and
    the nuclear norm's gradient at M (what `nuclear_norm_of` backpropagates), with
    tr(Q^T M) = ||M||_*. gram: Q = sum_i u_i v_i^T over the directions kept by
    `gram_nuclear_norm`'s rounding threshold (the minimal subgradient U_r V_r^T at zero singular
    values); svdvals: U V^T of LAPACK's thin SVD. The amortized penalties keep Q between refreshes
    (regularizers/amortized.py). Products are taken in float64 (a refresh is occasional)."""
    if m.dim() != 2:
        raise ValueError(f"nuclear norm of a matrix: got shape {tuple(m.shape)}")
    m64 = m.detach().to(torch.float64)
    if solver == "auto":
        solver = auto_route(m.device, min(m.shape))[0]  # an occasional refresh: its eigh stays on m's device
    if solver == "svdvals":
        u, s, vh = torch.linalg.svd(m64, full_matrices=False)
        return s.sum(), u @ vh
    if solver != "gram":
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}; got {solver!r}")
    wide = m.shape[0] < m.shape[1]
    _, v = torch.linalg.eigh(m64 @ m64.T if wide else m64.T @ m64)
    products = v.T @ m64 if wide else m64 @ v  # rows (wide) sigma_i v_i^T, columns (tall) sigma_i u_i
    norms = torch.linalg.vector_norm(products, dim=1 if wide else 0)
    keep = norms > norms.max() * max(m.shape) ** 0.5 * torch.finfo(m.dtype).eps
    inverse = torch.where(keep, 1.0 / torch.where(keep, norms, 1.0), 0.0)
    # sum_i u_i v_i^T: U = v (wide) or V = v (tall)
    q = v @ (products * inverse[:, None]) if wide else (products * inverse[None, :]) @ v.T
    return torch.where(keep, norms, 0.0).sum(), q


def nuclear_norm_of(m: torch.Tensor, solver: Solver = "gram") -> torch.Tensor:
    """sum_i sigma_i(M) of a matrix, differentiable, by `solver` (gram, svdvals, or auto: per
    device, `auto_route`)."""
    if m.dim() != 2:
        raise ValueError(f"nuclear norm of a matrix: got shape {tuple(m.shape)}")
    if solver == "auto":
        route, eigh_on = auto_route(m.device, min(m.shape))
        return gram_nuclear_norm(m, eigh_on) if route == "gram" else nuclear_norm_of(m, route)
    if solver == "gram":
        return gram_nuclear_norm(m)
    if solver == "svdvals":
        return torch.linalg.svdvals(tall(m)).sum()
    raise ValueError(f"solver must be one of {', '.join(SOLVERS)}; got {solver!r}")


__all__ = [
    "HOST_EIGH_MAX",
    "SOLVERS",
    "Solver",
    "auto_route",
    "gram_nuclear_norm",
    "nuclear_norm_and_factor",
    "nuclear_norm_of",
    "tall",
]
