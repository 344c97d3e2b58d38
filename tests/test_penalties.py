"""Penalty regularizers: values on hand-computed examples, gradients (gradcheck in float64),
normalizations, PaperWN, roles, state for resume, and option validation."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

from reglab.config import RegularizerConfig
from reglab.errors import ConfigError
from reglab.models.structure import UnitGroup
from reglab.models.weightnorm import apply_paper_wn, wn_scale
from reglab.regularizers import REGULARIZERS, build_regularizer
from reglab.regularizers.graph_energy import biadjacency, biadjacency_transposed, graph_energy, layered_adjacency
from reglab.regularizers.l2 import l2_mul
from reglab.regularizers.path_norm import unit_path_norms

# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def make(name: str, roles=("weight",), **options):
    """Build a registered regularizer through the config path (validates its options)."""
    cfg = RegularizerConfig(name=name, lam=1.0, roles=list(roles), **options)
    return build_regularizer(cfg, "regularizers.0")


def set_weights(layer: nn.Module, weight, bias=None) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))


def mlp(*widths: int, bias: bool = True, dtype=torch.float64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def small_cnn(dtype=torch.float64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    ).to(dtype)


class _PenaltyOf(nn.Module):
    """forward() = reg.penalty(model): lets functional_call substitute the parameters."""

    def __init__(self, reg, model):
        super().__init__()
        self.model = model
        self.reg = reg

    def forward(self):
        return self.reg.penalty(self.model, None)


def assert_gradcheck(reg, model: nn.Module) -> None:
    """gradcheck of the penalty w.r.t. every parameter of the (float64) model."""
    reg.setup(model)
    wrapper = _PenaltyOf(reg, model)
    names = [n for n, _ in wrapper.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in wrapper.named_parameters())

    def f(*ps):
        return functional_call(wrapper, dict(zip(names, ps, strict=True)), ())

    assert gradcheck(f, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def grads_of(reg, model) -> dict[str, torch.Tensor]:
    model.zero_grad()
    reg.penalty(model, None).backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------------------------
# registry and option validation
# ----------------------------------------------------------------------------------------------


def test_all_names_registered():
    for name in [
        "l2",
        "decoupled_weight_decay",
        "l2_sum",
        "l2_mul",
        "frobenius",
        "nuclear_norm",
        "spectral_energy",
        "graph_energy",
        "path_energy",
        "path_norm",
    ]:
        assert name in REGULARIZERS


def test_unknown_option_names_the_field():
    cfg = RegularizerConfig(name="l2_mul", lam=1.0, bogus=1)
    with pytest.raises(ConfigError) as e:
        build_regularizer(cfg, "regularizers.0")
    assert e.value.field == "regularizers.0.bogus"
    assert "depth_normalization" in str(e.value)  # lists the allowed options


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [("l2_sum", "geometric", "l2_mul"), ("l2_mul", "mean", "l2_sum"), ("l2_sum", "median", None)],
)
def test_depth_normalization_is_checked_per_penalty(name, value, hint):
    with pytest.raises(ConfigError) as e:
        make(name, depth_normalization=value)
    assert e.value.field == "regularizers.0.depth_normalization"
    if hint:
        assert hint in str(e.value)


def test_bad_features_normalization_and_method_rejected():
    with pytest.raises(ConfigError, match="features_normalization"):
        make("l2_sum", features_normalization="f_both")
    with pytest.raises(ConfigError, match="method"):
        make("graph_energy", method="lanczos")
    with pytest.raises(ConfigError, match="anchor"):
        make("path_energy", anchor="start")


def test_weight_layer_penalties_reject_other_roles():
    for name in ["l2_mul", "nuclear_norm", "graph_energy", "path_norm"]:
        with pytest.raises(ConfigError, match="roles"):
            make(name, roles=["weight", "bias"])
    with pytest.raises(ConfigError, match="roles"):  # the adjacency holds weights only
        make("path_energy", state="global", roles=["weight", "bias"])


ROLE_CHECKED = ["l2_sum", "l2_mul", "frobenius", "nuclear_norm", "spectral_energy", "graph_energy", "path_energy", "path_norm", "pathprox"]


@pytest.mark.parametrize("name", ROLE_CHECKED)
def test_constructor_config_errors_are_prefixed_with_where(name):
    extra = {"state": "global"} if name == "path_energy" else {}
    cfg = RegularizerConfig(name=name, lam=1.0, roles=["weight", "bias"], **extra)
    with pytest.raises(ConfigError) as e:
        build_regularizer(cfg, "regularizers.3")
    assert e.value.field == "regularizers.3.roles"
    assert str(e.value).startswith("regularizers.3.roles: ")
    assert e.value.allowed == ["[weight]"]
    assert str(e.value).count("(allowed:") == 1  # the message is not doubled


def test_jacobian_nuclear_roles_error_is_prefixed():
    cfg = RegularizerConfig(name="jacobian_nuclear", lam=1.0, split=1, roles=["bias"])
    with pytest.raises(ConfigError) as e:
        build_regularizer(cfg, "regularizers.1")
    assert e.value.field == "regularizers.1.roles"


def test_prefixed_keeps_an_already_prefixed_field():
    from reglab.regularizers import prefixed

    err = ConfigError("regularizers.0.roles", "bad", ["[weight]"])
    assert prefixed(err, "regularizers.0") is err
    moved = prefixed(ConfigError("roles", "bad roles", ["[weight]"]), "regularizers.2")
    assert (moved.field, str(moved), moved.allowed) == ("regularizers.2.roles", "regularizers.2.roles: bad roles (allowed: [weight])", ["[weight]"])
    plain = prefixed(ConfigError("split", "too large"), "regularizers.0")
    assert (plain.field, str(plain), plain.allowed) == ("regularizers.0.split", "regularizers.0.split: too large", None)


def test_bad_roles_are_caught_at_config_validation():
    from reglab.config import load_config
    from reglab.regularizers import check_regularizer_options

    with pytest.raises(ConfigError) as e:
        check_regularizer_options(RegularizerConfig(name="graph_energy", roles=["weight", "norm"]), "regularizers.0")
    assert e.value.field == "regularizers.0.roles"
    # ... and so by load_config, before any data, model or run exists
    with pytest.raises(ConfigError) as e:
        load_config(None, ["regularizers=[{name: l2, lam: 1}, {name: path_norm, lam: 1, roles: [bias]}]"])
    assert e.value.field == "regularizers.1.roles"
    cfg = load_config(None, ["regularizers=[{name: l2, lam: 1, roles: [weight, bias, norm]}]"])  # l2 selects by role
    assert cfg.regularizers[0].roles == ["weight", "bias", "norm"]


# ----------------------------------------------------------------------------------------------
# l2 and decoupled weight decay
# ----------------------------------------------------------------------------------------------


def test_l2_hand_value_and_half():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)).double()
    set_weights(model[0], [[1.0, 2.0], [0.0, -1.0]], [5.0, 5.0])
    set_weights(model[1], [[3.0, 0.0]], [7.0])
    assert make("l2").penalty(model, None).item() == pytest.approx(1 + 4 + 1 + 9)
    assert make("l2", half=True).penalty(model, None).item() == pytest.approx(7.5)
    assert make("l2", roles=["bias"]).penalty(model, None).item() == pytest.approx(25 + 25 + 49)


def test_l2_roles_select_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.uniform_(0.5, 2.0)
    everything = sum(p.pow(2).sum() for p in model.parameters())
    weights_only = model[0].weight.pow(2).sum() + model[3].weight.pow(2).sum()
    all_roles = make("l2", roles=["weight", "bias", "norm"]).penalty(model, None)
    assert all_roles.item() == pytest.approx(everything.item(), rel=1e-6)
    assert make("l2").penalty(model, None).item() == pytest.approx(weights_only.item(), rel=1e-6)
    # every parameter receives the gradient 2p under the AutoL2 selection
    grads = grads_of(make("l2", roles=["weight", "bias", "norm"]), model)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], 2 * p.detach())


def test_l2_gradcheck():
    assert_gradcheck(make("l2", roles=["weight", "bias"], half=True), mlp(3, 4, 2))


def test_decoupled_weight_decay_scales_selected_params_only():
    reg = make("decoupled_weight_decay")
    assert not reg.has_penalty and reg.has_pre_step and not reg.has_prox
    model = mlp(3, 4, 2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reg.pre_step(model, lam=0.1, lr=0.5)
    for n, p in model.named_parameters():
        factor = 0.95 if n.endswith("weight") else 1.0
        torch.testing.assert_close(p.detach(), factor * before[n])


# ----------------------------------------------------------------------------------------------
# l2_sum and l2_mul
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def two_layer_ones():
    """W1 = ones(2, 3) (n1 = 6), W2 = [[3, 4]] (n2 = 25)."""
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    set_weights(model[0], torch.ones(2, 3), [10.0, 10.0])
    set_weights(model[2], [[3.0, 4.0]], [10.0])
    return model


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("l2_sum", {}, 31.0),
        ("l2_sum", {"depth_normalization": "mean"}, 15.5),
        ("l2_sum", {"features_normalization": "f_out"}, 6 / 2 + 25 / 1),
        ("l2_sum", {"features_normalization": "f_in"}, 6 / 3 + 25 / 2),
        ("l2_sum", {"features_normalization": "f_in", "depth_normalization": "mean"}, (2 + 12.5) / 2),
        ("l2_mul", {}, 150.0),
        ("l2_mul", {"depth_normalization": "geometric"}, math.sqrt(150.0)),
        ("l2_mul", {"features_normalization": "f_out"}, 3 * 25),
        ("l2_mul", {"features_normalization": "f_in", "depth_normalization": "geometric"}, math.sqrt(2 * 12.5)),
    ],
)
def test_layer_norm_penalties_hand_values(two_layer_ones, name, options, expected):
    assert make(name, **options).penalty(two_layer_ones, None).item() == pytest.approx(expected)


def test_conv_fan_in_excludes_kernel_area():
    model = nn.Sequential(nn.Conv2d(2, 3, 3)).double()
    set_weights(model[0], torch.ones(3, 2, 3, 3))  # n = 54
    assert make("l2_sum", features_normalization="f_in").penalty(model, None).item() == pytest.approx(27.0)
    assert make("l2_sum", features_normalization="f_out").penalty(model, None).item() == pytest.approx(18.0)


def test_layer_norm_report(two_layer_ones):
    rep = make("l2_mul", depth_normalization="geometric").report(two_layer_ones)
    assert rep["norm.0"] == pytest.approx(math.sqrt(6))
    assert rep["norm.2"] == pytest.approx(5.0)
    assert rep["rho"] == pytest.approx(5 * math.sqrt(6))  # never normalized
    assert rep["penalty"] == pytest.approx(math.sqrt(150))


def test_l2_mul_gradient_identity():
    model = mlp(3, 5, 4, 2, seed=1)
    reg = make("l2_mul")
    grads = grads_of(reg, model)
    layers = [model[0], model[2], model[4]]
    norms = [layer.weight.detach().pow(2).sum() for layer in layers]
    for k, layer in enumerate(layers):
        others = math.prod(float(n) for i, n in enumerate(norms) if i != k)
        name = f"{[0, 2, 4][k]}.weight"
        torch.testing.assert_close(grads[name], 2 * layer.weight.detach() * others)
        assert grads[name.replace("weight", "bias")].abs().max() == 0


def test_l2_mul_gradient_with_a_zero_layer():
    # dR/dn_k = prod_{l != k} n_l exactly, also for the zero factor
    n = torch.tensor([0.0, 2.0, 3.0, 5.0], dtype=torch.float64, requires_grad=True)
    value = l2_mul(list(n.unbind()))
    value.backward()
    assert value.item() == 0.0
    torch.testing.assert_close(n.grad, torch.tensor([30.0, 0.0, 0.0, 0.0], dtype=torch.float64))


def test_l2_mul_product_of_many_small_factors_does_not_underflow():
    factors = [torch.tensor(1e-30)] * 2 + [torch.tensor(1e30)] * 2  # float32 intermediates would overflow
    assert l2_mul(factors).item() == pytest.approx(1.0)
    tiny = [torch.tensor(1e-8)] * 10
    assert l2_mul(tiny, "geometric").item() == pytest.approx(1e-8)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("l2_sum", {"features_normalization": "f_in", "depth_normalization": "mean"}),
        ("l2_mul", {"features_normalization": "f_out"}),
        ("l2_mul", {"depth_normalization": "geometric"}),
    ],
)
def test_layer_norm_penalties_gradcheck(name, options):
    assert_gradcheck(make(name, **options), mlp(3, 4, 3, 2, seed=2))


def test_paper_wn_uses_g():
    model = apply_paper_wn(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double(), g0=1.0)
    g1, g2 = wn_scale(model[0]), wn_scale(model[2])
    with torch.no_grad():
        g1.fill_(2.0)
        g2.fill_(3.0)
    assert make("l2_sum").penalty(model, None).item() == pytest.approx(13.0)
    assert make("l2_mul").penalty(model, None).item() == pytest.approx(36.0)
    # both feature normalizations apply under PaperWN (study 1 ignored f_in)
    assert make("l2_sum", features_normalization="f_in").penalty(model, None).item() == pytest.approx(4 / 3 + 9 / 4)
    assert make("l2_sum", features_normalization="f_out").penalty(model, None).item() == pytest.approx(4 / 4 + 9 / 2)
    rep = make("l2_mul").report(model)
    assert rep["norm.0"] == pytest.approx(2.0) and rep["norm.2"] == pytest.approx(3.0)
    assert rep["rho"] == pytest.approx(6.0)
    # gradient reaches g only: dR/dg1 = 2 g1 g2^2
    model.zero_grad()
    make("l2_mul").penalty(model, None).backward()
    assert g1.grad.item() == pytest.approx(2 * 2.0 * 9.0)
    assert model[0].parametrizations.weight.original.grad is None


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
    return [torch.randn(b, a, dtype=torch.float64, generator=g) for a, b in zip(widths[:-1], widths[1:], strict=True)]


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


# ----------------------------------------------------------------------------------------------
# path energy
# ----------------------------------------------------------------------------------------------


def _shift_weights(model: nn.Module, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    deltas = []
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                d = 0.1 * torch.randn_like(m.weight)
                m.weight.add_(d)
                m.bias.add_(1.0)  # biases are not part of the state
                deltas.append(d)
    return deltas


def test_path_energy_first_step_then_squared_change():
    # The trainer's order at every step: penalty (before the update) -> update -> after_step.
    model = mlp(3, 4, 2)
    reg = make("path_energy")
    reg.setup(model)
    assert reg.penalty(model, None).item() == 0.0  # step 1: E_1 = 0
    d1 = _shift_weights(model, seed=1)  # update 1
    reg.after_step(model, None)
    change1 = sum(float(d.pow(2).sum()) for d in d1)
    # step 2: half the squared length of update 1, gradient theta_2 - theta_1 on the weights only
    assert reg.penalty(model, None).item() == pytest.approx(0.5 * change1)
    grads = grads_of(reg, model)
    torch.testing.assert_close(grads["0.weight"], d1[0])
    torch.testing.assert_close(grads["2.weight"], d1[1])
    assert grads["0.bias"].abs().max() == 0
    d2 = _shift_weights(model, seed=2)  # update 2
    reg.after_step(model, None)
    change2 = sum(float(d.pow(2).sum()) for d in d2)
    assert reg.penalty(model, None).item() == pytest.approx(0.5 * change2)  # step 3
    rep = reg.report(model)
    assert rep["energy_last"] == pytest.approx(change2)
    assert rep["energy_total"] == pytest.approx(change1 + change2)
    assert rep["steps"] == 2


def test_path_energy_with_bias_role_adds_the_biases_path():
    model = mlp(3, 4, 2)
    reg = make("path_energy", roles=["weight", "bias"])
    reg.setup(model)
    reg.penalty(model, None)
    d = _shift_weights(model, seed=1)  # weights by d, every bias by +1
    reg.after_step(model, None)
    n_bias = sum(m.bias.numel() for m in model if isinstance(m, nn.Linear))
    change = sum(float(x.pow(2).sum()) for x in d) + n_bias * 1.0
    assert reg.penalty(model, None).item() == pytest.approx(0.5 * change)
    grads = grads_of(reg, model)
    torch.testing.assert_close(grads["0.weight"], d[0])
    torch.testing.assert_close(grads["0.bias"], torch.ones_like(grads["0.bias"]))
    only_bias = make("path_energy", roles=["bias"])
    only_bias.setup(model)
    only_bias.penalty(model, None)
    _shift_weights(model, seed=2)
    only_bias.after_step(model, None)
    assert only_bias.penalty(model, None).item() == pytest.approx(0.5 * n_bias)


@pytest.mark.parametrize("anchor", ["previous", "init"])
def test_path_energy_per_epoch_sums_the_epochs_updates(anchor):
    """energy_epoch: the updates of the latest step's epoch, the pending last one included (an
    epoch-end evaluation reports between the epoch's last update and the next step's penalty)."""
    from types import SimpleNamespace

    model = mlp(3, 4, 2)
    reg = make("path_energy", anchor=anchor)
    reg.setup(model)
    per_epoch = []
    for epoch, seeds in enumerate([(1, 2, 3), (4, 5)]):
        energies = []
        for seed in seeds:
            reg.penalty(model, None)
            energies.append(sum(float(d.pow(2).sum()) for d in _shift_weights(model, seed)))
            reg.after_step(model, SimpleNamespace(epoch=epoch))
        per_epoch.append(sum(energies))
        rep = reg.report(model)
        assert rep["energy_epoch"] == pytest.approx(per_epoch[-1])
        assert rep["energy_total"] == pytest.approx(sum(per_epoch))


def _trainer_steps(reg, model, seeds) -> list[float]:
    """The trainer's order per step (penalty -> update -> after_step); the updates' energies."""
    energies = []
    for seed in seeds:
        reg.penalty(model, None)
        energies.append(sum(float(d.pow(2).sum()) for d in _shift_weights(model, seed)))
        reg.after_step(model, None)
    return energies


def test_path_energy_counts_every_update_once_whenever_it_is_reported():
    """The update energy is taken from the next step's penalty; a report between steps (as at an
    evaluation) measures the pending last update itself and changes nothing."""
    model = mlp(3, 4, 2)
    reg = make("path_energy")
    reg.setup(model)
    energies = _trainer_steps(reg, model, [11, 12])
    for _ in range(2):  # report is read-only
        rep = reg.report(model)
        assert rep["energy_last"] == pytest.approx(energies[-1])
        assert rep["energy_total"] == pytest.approx(sum(energies))
        assert rep["steps"] == 2
    energies += _trainer_steps(reg, model, [13, 14, 15])
    rep = reg.report(model)
    assert rep["energy_last"] == pytest.approx(energies[-1])
    assert rep["energy_total"] == pytest.approx(sum(energies))
    assert rep["steps"] == 5


def test_path_energy_resume_with_a_pending_update_continues_exactly():
    model = mlp(3, 4, 2)
    reg = make("path_energy")
    reg.setup(model)
    energies = _trainer_steps(reg, model, [21, 22])  # a checkpoint after a step: one update pending
    state = reg.state_dict()
    assert state["pending"] is True
    resumed = make("path_energy")
    resumed.setup(model)
    resumed.load_state_dict(state)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for r in (reg, resumed):
        model.load_state_dict(weights)
        more = _trainer_steps(r, model, [23, 24])
    rep_a, rep_b = reg.report(model), resumed.report(model)
    assert rep_a == pytest.approx(rep_b)
    assert rep_b["energy_total"] == pytest.approx(sum(energies + more))
    assert rep_b["steps"] == 4
    # a state written before the pending flag existed had counted every update already
    old = {k: v for k, v in state.items() if k != "pending"}
    legacy = make("path_energy")
    legacy.setup(model)
    legacy.load_state_dict(old)
    assert legacy.report(model)["steps"] == state["steps"]


def test_path_energy_global_is_twice_blocks():
    model = mlp(3, 4, 2)
    blocks, glob = make("path_energy"), make("path_energy", state="global")
    for reg in (blocks, glob):
        reg.setup(model)
    _shift_weights(model, seed=2)
    assert glob.penalty(model, None).item() == pytest.approx(2 * blocks.penalty(model, None).item())


def test_path_energy_anchor_init():
    model = mlp(3, 4, 2)
    reg = make("path_energy", anchor="init")
    reg.setup(model)
    reg.penalty(model, None)
    d1 = _shift_weights(model, seed=3)
    reg.after_step(model, None)
    reg.penalty(model, None)
    d2 = _shift_weights(model, seed=4)
    reg.after_step(model, None)
    total = sum(float((a + b).pow(2).sum()) for a, b in zip(d1, d2, strict=True))
    assert reg.penalty(model, None).item() == pytest.approx(0.5 * total)
    rep = reg.report(model)
    assert rep["penalty"] == pytest.approx(0.5 * total)
    # monitoring still sums the per-step update energies
    e1, e2 = (sum(float(d.pow(2).sum()) for d in ds) for ds in (d1, d2))
    assert rep["energy_last"] == pytest.approx(e2)
    assert rep["energy_total"] == pytest.approx(e1 + e2)
    assert rep["steps"] == 2


def test_path_energy_state_dict_resumes_exactly():
    model = mlp(3, 4, 2)
    reg = make("path_energy")
    reg.setup(model)
    reg.penalty(model, None)
    _shift_weights(model, seed=5)
    reg.after_step(model, None)
    expected = reg.penalty(model, None).item()
    assert expected > 0
    buf = io.BytesIO()
    torch.save(reg.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = make("path_energy")
    resumed.setup(model)  # would give 0 without the saved state
    assert resumed.penalty(model, None).item() == 0.0
    resumed.load_state_dict(state)
    assert resumed.penalty(model, None).item() == pytest.approx(expected)
    assert resumed.report(model) == reg.report(model)


def test_path_energy_gradcheck():
    model = mlp(3, 4, 2)
    reg = make("path_energy", state="global")
    reg.setup(model)
    _shift_weights(model, seed=7)
    wrapper = _PenaltyOf(reg, model)
    names = [n for n, _ in wrapper.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in wrapper.named_parameters())
    assert gradcheck(lambda *ps: functional_call(wrapper, dict(zip(names, ps, strict=True)), ()), params)


# ----------------------------------------------------------------------------------------------
# path norm
# ----------------------------------------------------------------------------------------------


class Grouped(nn.Module):
    """A model that declares its unit groups, as the real models do."""

    def __init__(self, inp: nn.Module, out: nn.Module):
        super().__init__()
        self.inp, self.out = inp, out

    def forward(self, x):
        return self.out(torch.relu(self.inp(x)))

    def unit_groups(self):
        return [UnitGroup("g0", self.inp, self.out)]


@pytest.fixture
def hand_group() -> Grouped:
    """||w_j|| = 5, 0, 1 and ||v_j|| = 1, 5, sqrt 8; bias b = (0, 0, 1)."""
    model = Grouped(nn.Linear(2, 3), nn.Linear(3, 2)).double()
    set_weights(model.inp, [[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], [0.0, 0.0, 1.0])
    set_weights(model.out, [[1.0, 5.0, 2.0], [0.0, 0.0, 2.0]], [9.0, 9.0])
    return model


def test_path_norm_hand_value(hand_group):
    torch.testing.assert_close(
        unit_path_norms(hand_group.unit_groups()[0]), torch.tensor([5.0, 0.0, math.sqrt(8)], dtype=torch.float64)
    )
    assert make("path_norm").penalty(hand_group, None).item() == pytest.approx(5 + math.sqrt(8))
    # with the bias, w_3 = (1, 0, 1): sqrt 2 * sqrt 8 = 4
    assert make("path_norm", include_bias=True).penalty(hand_group, None).item() == pytest.approx(9.0)
    rep = make("path_norm").report(hand_group)
    assert rep["total"] == pytest.approx(5 + math.sqrt(8))
    assert rep["group.g0"] == pytest.approx(5 + math.sqrt(8))


def test_path_norm_conv_group_and_rescaling_invariance():
    torch.manual_seed(8)
    model = Grouped(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 4, 3)).double()
    w, v = model.inp.weight.detach(), model.out.weight.detach()
    expected = [float(w[j].norm() * v[:, j].norm()) for j in range(3)]
    group = model.unit_groups()[0]
    np.testing.assert_allclose(unit_path_norms(group).detach().numpy(), expected, rtol=1e-12)
    with torch.no_grad():
        model.inp.weight[1] *= 7.0
        model.out.weight[:, 1] /= 7.0
    np.testing.assert_allclose(unit_path_norms(group).detach().numpy(), expected, rtol=1e-12)
    # a change that is not a rescaling does change it
    with torch.no_grad():
        model.inp.weight[1] *= 7.0
    assert unit_path_norms(group)[1].item() == pytest.approx(7 * expected[1])


def test_path_norm_needs_unit_groups():
    with pytest.raises(ValueError, match="unit groups"):
        make("path_norm").setup(mlp(3, 4, 2))


@pytest.mark.parametrize("include_bias", [False, True])
def test_path_norm_gradcheck(include_bias):
    torch.manual_seed(9)
    model = Grouped(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    assert_gradcheck(make("path_norm", include_bias=include_bias), model)
