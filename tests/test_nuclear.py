"""The nuclear-norm solvers (regularizers/nuclear.py): the Gram route against LAPACK's SVD in
value and gradient, on the spectra where squaring the condition number could hurt."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reglab.config import RegularizerConfig
from reglab.errors import ConfigError
from reglab.regularizers import build_regularizer
from reglab.regularizers.nuclear import gram_nuclear_norm, nuclear_norm_of


def make(name: str, **options):
    return build_regularizer(RegularizerConfig(name=name, lam=1.0, **options), "regularizers.0")


def orthonormal(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, k, dtype=torch.float64, generator=g))[0]


def with_spectrum(p: int, q: int, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A p x q float64 matrix with singular values `sigma` (length min(p, q))."""
    g = torch.Generator().manual_seed(seed)
    k = len(sigma)
    return orthonormal(p, k, g) @ torch.diag(sigma.double()) @ orthonormal(q, k, g).T


def spectra() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "random tall": torch.randn(200, 48, dtype=torch.float64, generator=g) * 0.05,
        "random wide": torch.randn(30, 90, dtype=torch.float64, generator=g),
        "random square": torch.randn(64, 64, dtype=torch.float64, generator=g),
        "low rank + noise": torch.randn(150, 4, dtype=torch.float64, generator=g)
        @ torch.randn(4, 40, dtype=torch.float64, generator=g)
        + 1e-4 * torch.randn(150, 40, dtype=torch.float64, generator=g),
        "decaying 1 .. 1e-6": with_spectrum(120, 40, torch.logspace(0, -6, 40)),
        "repeated": with_spectrum(80, 30, torch.full((30,), 3.0)),
        "exact rank 3": with_spectrum(60, 90, torch.tensor([5.0, 2.0, 1.0] + [0.0] * 57))[:, :90],
    }


@pytest.mark.parametrize("name", list(spectra()))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_value_matches_float64_svd(name, dtype):
    m = spectra()[name]
    exact = torch.linalg.svdvals(m).sum().item()
    value = gram_nuclear_norm(m.to(dtype)).item()
    # float32: svdvals itself is accurate to ~eps * sigma_max per singular value
    rtol = 1e-10 if dtype == torch.float64 else 5e-6
    assert value == pytest.approx(exact, rel=rtol)
    if dtype == torch.float32:  # no worse than LAPACK's float32 SVD, within its own error scale
        lapack = torch.linalg.svdvals(m.float()).sum().item()
        assert abs(value - exact) <= max(10 * abs(lapack - exact), 1e-6 * exact)


@pytest.mark.parametrize(
    "name", ["random tall", "random wide", "random square", "low rank + noise", "decaying 1 .. 1e-6"]
)
def test_gram_gradient_is_u_vt(name):
    m = spectra()[name].clone().requires_grad_()
    gram_nuclear_norm(m).backward()
    u, s, vh = torch.linalg.svd(m.detach(), full_matrices=False)
    keep = s > s[0] * 1e-12
    expected = u[:, keep] @ vh[keep]
    # the small singular directions of "low rank + noise" (sigma ~1e-4 sigma_max) carry ~1e-7
    torch.testing.assert_close(m.grad, expected, rtol=0, atol=1e-6)


def test_gram_gradcheck():
    g = torch.Generator().manual_seed(2)
    for shape in [(7, 4), (4, 7), (5, 5)]:
        m = torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)
        assert torch.autograd.gradcheck(gram_nuclear_norm, (m,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rank_deficient_gradient_is_the_minimal_subgradient(dtype):
    """At zero singular values: U_r V_r^T over the nonzero ones (spectral norm 1), not unit
    vectors of rounding noise."""
    sigma = torch.tensor([5.0, 2.0, 1.0] + [0.0] * 27)
    m = with_spectrum(60, 30, sigma).to(dtype).requires_grad_()
    gram_nuclear_norm(m).backward()
    u, _s, vh = torch.linalg.svd(m.detach().double(), full_matrices=False)
    expected = u[:, :3] @ vh[:3]
    torch.testing.assert_close(m.grad.double(), expected, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-10)
    assert torch.linalg.matrix_norm(m.grad.double(), 2) <= 1 + 1e-5


def test_zero_matrix_has_zero_value_and_gradient():
    m = torch.zeros(9, 4, requires_grad=True)
    value = gram_nuclear_norm(m)
    value.backward()
    assert value.item() == 0.0 and torch.equal(m.grad, torch.zeros(9, 4))


def test_gram_under_vmap_matches_one_by_one():
    ms = torch.randn(5, 30, 12)
    batched = torch.func.vmap(gram_nuclear_norm)(ms)
    torch.testing.assert_close(batched, torch.stack([gram_nuclear_norm(m) for m in ms]))


def test_gram_gradient_under_vmap_matches_one_by_one():
    ms = torch.randn(4, 20, 9, dtype=torch.float64)
    batched = torch.func.vmap(torch.func.grad(gram_nuclear_norm))(ms)
    torch.testing.assert_close(batched, torch.stack([torch.func.grad(gram_nuclear_norm)(m) for m in ms]))
    wide = ms.transpose(1, 2).contiguous()
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(gram_nuclear_norm))(wide), batched.transpose(1, 2))


@pytest.mark.parametrize("shape", [(128, 128), (784, 128), (128, 784)])
def test_float32_gradient_is_close_to_float64_u_vt(shape):
    """Singular values 1 .. 1e-3 (what nuclear-norm training drives a layer towards): the float32
    gradient is within 1e-4 of the float64 U V^T in spectral norm (measured ~4e-5)."""
    k = min(shape)
    m64 = with_spectrum(*shape, torch.logspace(0, -3, k), seed=4)
    m = m64.float().requires_grad_()
    gram_nuclear_norm(m).backward()
    u, _, vh = torch.linalg.svd(m.detach().double(), full_matrices=False)
    assert torch.linalg.matrix_norm(m.grad.double() - u @ vh, 2) < 1e-4


def test_solvers_agree_and_unknown_solver_is_refused():
    m = spectra()["random wide"]
    assert nuclear_norm_of(m, "gram").item() == pytest.approx(nuclear_norm_of(m, "svdvals").item(), rel=1e-12)
    with pytest.raises(ValueError, match="solver"):
        nuclear_norm_of(m, "qr")
    with pytest.raises(ValueError, match="matrix"):
        nuclear_norm_of(torch.zeros(2, 2, 2))


@pytest.mark.parametrize("name", ["nuclear_norm", "spectral_energy", "graph_energy"])
def test_regularizers_give_equal_penalty_and_gradient_with_either_solver(name):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 9), nn.ReLU(), nn.Linear(9, 3)).double()
    grads = []
    values = []
    for solver in ("gram", "svdvals"):
        reg = make(name, solver=solver)
        reg.setup(model)
        model.zero_grad()
        value = reg.penalty(model, None)
        value.backward()
        values.append(value.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert values[0] == pytest.approx(values[1], rel=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-10)


def test_unknown_solver_option_names_the_field():
    with pytest.raises(ConfigError, match=r"regularizers\.0\.solver"):
        make("nuclear_norm", solver="qr")
