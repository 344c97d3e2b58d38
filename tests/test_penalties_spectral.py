"""Spectral penalties: frobenius, nuclear norm, spectral energy and graph energy (values, dense vs bipartite SVD,
gradients)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from penalty_helpers import assert_gradcheck, make, mlp, set_weights, small_cnn
from reglab.regularizers.graph_energy import biadjacency, biadjacency_transposed, graph_energy, layered_adjacency

# ----------------------------------------------------------------------------------------------
# frobenius, nuclear norm, spectral energy
# ----------------------------------------------------------------------------------------------


def test_frobenius_hand_value(two_layer_ones):
    assert make("frobenius").penalty(two_layer_ones, None).item() == pytest.approx(31.0)


def test_nuclear_norm_matches_numpy_svd_and_convention():
    model = small_cnn()
    expected = sum(
        np.linalg.svd(m.weight.detach().numpy().reshape(m.weight.shape[0], -1), compute_uv=False).sum()
        for m in [model[0], model[2], model[4]]
    )
    assert make("nuclear_norm").penalty(model, None).item() == pytest.approx(expected, rel=1e-10)
    doubled = make("nuclear_norm", graph_energy_convention=True).penalty(model, None).item()
    assert doubled == pytest.approx(2 * expected, rel=1e-10)


def test_nuclear_norm_hand_value():
    model = nn.Sequential(nn.Linear(2, 2, bias=False)).double()
    set_weights(model[0], [[3.0, 0.0], [0.0, -4.0]])
    assert make("nuclear_norm").penalty(model, None).item() == pytest.approx(7.0)


def test_spectral_energy_square_and_rectangular():
    square = nn.Sequential(nn.Linear(2, 2, bias=False)).double()
    set_weights(square[0], [[0.0, 1.0], [-1.0, 0.0]])  # antisymmetric: symmetric part 0
    assert make("spectral_energy").penalty(square, None).item() == pytest.approx(0.0, abs=1e-12)
    set_weights(square[0], [[1.0, 2.0], [0.0, -3.0]])  # S = [[1, 1], [1, -3]]: eig -1 +- sqrt 5
    assert make("spectral_energy").penalty(square, None).item() == pytest.approx(2 * math.sqrt(5))
    rect = nn.Sequential(nn.Linear(3, 2, bias=False)).double()
    set_weights(rect[0], [[3.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    assert make("spectral_energy").penalty(rect, None).item() == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("name", "options"),
    [("frobenius", {}), ("nuclear_norm", {"graph_energy_convention": True}), ("spectral_energy", {})],
)
def test_spectral_gradcheck(name, options):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2), nn.Conv2d(1, 2, 2)).double()
    assert_gradcheck(make(name, **options), model)


# ----------------------------------------------------------------------------------------------
# graph energy
# ----------------------------------------------------------------------------------------------


def numpy_layered_adjacency(weights: list[np.ndarray]) -> np.ndarray:
    """Independent construction: node k of layer i has index sum(sizes[:i]) + k."""
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    a = np.zeros((sum(sizes), sum(sizes)))
    for i, w in enumerate(weights):
        for out_unit in range(w.shape[0]):
            for in_unit in range(w.shape[1]):
                src, dst = starts[i] + in_unit, starts[i + 1] + out_unit
                a[src, dst] = a[dst, src] = w[out_unit, in_unit]
    return a


@pytest.mark.parametrize("method", ["dense", "bipartite_svd", "auto"])
def test_graph_energy_single_layer_is_twice_nuclear_norm(method):
    model = mlp(4, 3, seed=4)
    sigma = np.linalg.svd(model[0].weight.detach().numpy(), compute_uv=False)
    reg = make("graph_energy", method=method)
    reg.setup(model)
    assert reg.penalty(model, None).item() == pytest.approx(2 * sigma.sum(), rel=1e-10)


@pytest.mark.parametrize("widths", [(3, 4, 2), (3, 4, 2, 5)])
def test_graph_energy_dense_matches_numpy_adjacency(widths):
    model = mlp(*widths, seed=5)
    weights = [m.weight.detach().numpy() for m in model if isinstance(m, nn.Linear)]
    a = numpy_layered_adjacency(weights)
    np.testing.assert_allclose(layered_adjacency([m.weight for m in model if isinstance(m, nn.Linear)]).detach(), a)
    expected = np.abs(np.linalg.eigvalsh(a)).sum()
    reg = make("graph_energy")
    reg.setup(model)
    assert reg.penalty(model, None).item() == pytest.approx(expected, rel=1e-10)


def test_graph_energy_hand_value():
    # path graph 0 - 1 - 2 with weights 3 and 4: eigenvalues 0, +-5 -> energy 10
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)).double()
    set_weights(model[0], [[3.0]])
    set_weights(model[1], [[4.0]])
    assert make("graph_energy").penalty(model, None).item() == pytest.approx(10.0)


def test_graph_energy_gradcheck():
    # layer sizes 2-4-2: both sides of the bipartite layered graph have 4 nodes, so the
    # spectrum is generically simple and nonzero (eigvalsh is differentiable there)
    assert_gradcheck(make("graph_energy", method="dense"), mlp(2, 4, 2, seed=6))
    assert_gradcheck(make("graph_energy", method="bipartite_svd"), mlp(4, 3, seed=6))


def test_graph_energy_rejects_unsupported_models():
    with pytest.raises(ValueError, match="Conv2d"):
        make("graph_energy").setup(small_cnn())
    with pytest.raises(ValueError, match="chain"):
        make("graph_energy").setup(nn.ModuleList([nn.Linear(3, 4), nn.Linear(5, 2)]))
    make("graph_energy", method="bipartite_svd").setup(mlp(3, 4, 2))  # any depth now


def random_chain(widths, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, a, dtype=torch.float64, generator=g) for a, b in itertools.pairwise(widths)]


@pytest.mark.parametrize(
    "widths",
    [(5, 3), (3, 4, 2), (6, 2, 7), (3, 5, 4, 2), (4, 2, 6, 3), (3, 6, 2, 5, 4), (5, 3, 4, 3, 6), (2, 2, 2, 2, 2)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_graph_energy_bipartite_svd_equals_dense(widths, seed):
    weights = random_chain(widths, seed)
    dense = graph_energy(weights, "dense")
    assert graph_energy(weights, "bipartite_svd").item() == pytest.approx(dense.item(), rel=1e-8, abs=1e-8)
    assert graph_energy(weights, "auto").item() == pytest.approx(dense.item(), rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("widths", [(3, 4, 2), (4, 2, 6, 3), (3, 6, 2, 5, 4)])
def test_biadjacency_is_the_even_odd_block_of_the_adjacency(widths):
    weights = random_chain(widths, 3)
    sizes = list(widths)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    even = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in range(0, len(sizes), 2)])
    odd = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in range(1, len(sizes), 2)])
    a = numpy_layered_adjacency([w.numpy() for w in weights])
    np.testing.assert_array_equal(biadjacency(weights).numpy(), a[np.ix_(even, odd)])
    np.testing.assert_array_equal(biadjacency_transposed(weights).numpy(), a[np.ix_(odd, even)])
    # the permuted adjacency is [[0, B], [B^T, 0]]: no edge inside a side
    assert not a[np.ix_(even, even)].any() and not a[np.ix_(odd, odd)].any()


@pytest.mark.parametrize("widths", [(3, 4, 2), (4, 2, 6, 3), (3, 6, 2, 5, 4)])
def test_graph_energy_bipartite_svd_gradient_equals_dense(widths):
    # Generic random weights: B has full rank and distinct nonzero singular values, so both
    # routes are differentiable and must give the same gradient (the dense route's zero
    # eigenvalues of A have eigenvectors inside one side only and contribute nothing).
    weights = [w.requires_grad_(True) for w in random_chain(widths, 4)]
    sigma = torch.linalg.svdvals(biadjacency([w.detach() for w in weights]))
    assert sigma.min() > 1e-3 and (sigma[:-1] - sigma[1:]).min() > 1e-6
    g_svd = torch.autograd.grad(graph_energy(weights, "bipartite_svd"), weights)
    g_dense = torch.autograd.grad(graph_energy(weights, "dense"), weights)
    for a, b in zip(g_svd, g_dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_graph_energy_bipartite_svd_gradcheck_deep():
    assert_gradcheck(make("graph_energy", method="bipartite_svd"), mlp(3, 4, 2, 5, seed=7))
    assert_gradcheck(make("graph_energy"), mlp(4, 3, 5, seed=8))


def test_graph_energy_rank_deficient_chain_is_finite():
    # 4-1-1-4: the 1-unit bottleneck forces zero singular values of B (structural rank 2 of 5);
    # the value is still exact and autograd returns a finite subgradient.
    weights = [w.requires_grad_(True) for w in random_chain((4, 1, 1, 4), 5)]
    value = graph_energy(weights, "bipartite_svd")
    assert value.item() == pytest.approx(graph_energy(weights, "dense").item(), rel=1e-8)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(value, weights))
