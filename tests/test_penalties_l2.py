"""L2-family penalties: l2, decoupled weight decay, l2_sum and l2_mul (hand values, normalizations, gradients,
PaperWN)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from penalty_helpers import assert_gradcheck, grads_of, make, mlp, set_weights
from reglab.models.weightnorm import apply_paper_wn, wn_scale
from reglab.regularizers.l2 import l2_mul

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
