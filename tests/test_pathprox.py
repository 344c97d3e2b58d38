"""PathProx: group-lasso prox, layerwise balance, unit normalisation, penalties and measurements."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from reglab.models.structure import UnitGroup
from reglab.regularizers import REGULARIZERS, pathprox_ops
from reglab.regularizers import pathprox as pp
from reglab.regularizers.pathprox import (
    PathProx,
    balance_groups,
    group_path_norms,
    normalize_units,
    prox_group_lasso,
)

DT = torch.float64


# --------------------------------------------------------------------------- tiny models


class MLP(nn.Module):
    """8 -> 6 -> 5 -> 4 -> 3 (-> 2 with extra), ReLU between layers; groups (L1,L2), (L3,L4)."""

    def __init__(self, bias: bool = True, extra: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.L1 = nn.Linear(8, 6, bias=bias)
        self.L2 = nn.Linear(6, 5, bias=bias)
        self.L3 = nn.Linear(5, 4, bias=bias)
        self.L4 = nn.Linear(4, 3, bias=bias)
        self.L5 = nn.Linear(3, 2, bias=bias) if extra else None
        self.to(DT)

    def forward(self, x):
        h = F.relu(self.L1(x))
        h = F.relu(self.L2(h))
        h = F.relu(self.L3(h))
        h = self.L4(h)
        return self.L5(F.relu(h)) if self.L5 is not None else h

    def unit_groups(self):
        return [UnitGroup("g1", self.L1, self.L2), UnitGroup("g2", self.L3, self.L4)]


class CNN(nn.Module):
    """conv-relu-conv-relu-maxpool-conv-relu-conv; groups (c1,c2), (c3,c4)."""

    def __init__(self, bias: bool = True, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.c2 = nn.Conv2d(4, 5, 3, padding=1, bias=bias)
        self.c3 = nn.Conv2d(5, 6, 3, padding=1, bias=bias)
        self.c4 = nn.Conv2d(6, 2, 3, padding=1, bias=bias)
        self.to(DT)

    def forward(self, x):
        h = F.relu(self.c2(F.relu(self.c1(x))))
        h = F.max_pool2d(h, 2)
        return self.c4(F.relu(self.c3(h)))

    def unit_groups(self):
        return [UnitGroup("a", self.c1, self.c2), UnitGroup("b", self.c3, self.c4)]


class MidMLP(nn.Module):
    """8 -> 6 -> 5 -> O: 5 -> 5 -> 4 -> 3, ReLU between layers; groups (L1,L2), (L3,L4), O in no group."""

    def __init__(self, bias: bool = True, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.L1 = nn.Linear(8, 6, bias=bias)
        self.L2 = nn.Linear(6, 5, bias=bias)
        self.O = nn.Linear(5, 5, bias=bias)
        self.L3 = nn.Linear(5, 4, bias=bias)
        self.L4 = nn.Linear(4, 3, bias=bias)
        self.to(DT)

    def forward(self, x):
        for layer in (self.L1, self.L2, self.O, self.L3):
            x = F.relu(layer(x))
        return self.L4(x)

    def unit_groups(self):
        return [UnitGroup("g1", self.L1, self.L2), UnitGroup("g2", self.L3, self.L4)]


def mlp_input(n=32):
    return torch.randn(n, 8, dtype=DT, generator=torch.Generator().manual_seed(1))


def cnn_input(n=4):
    return torch.randn(n, 3, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(2))


MODELS = [
    pytest.param(lambda: MLP(), mlp_input, id="mlp"),
    pytest.param(lambda: MLP(extra=True), mlp_input, id="mlp-extra"),
    pytest.param(lambda: MLP(bias=False), mlp_input, id="mlp-nobias"),
    pytest.param(lambda: MidMLP(), mlp_input, id="mlp-mid-other"),
    pytest.param(lambda: CNN(), cnn_input, id="cnn"),
    pytest.param(lambda: CNN(bias=False), cnn_input, id="cnn-nobias"),
]


def unbalance(model):
    """Make group path norms very unequal (function changes, which is fine before a test)."""
    with torch.no_grad():
        g1, g2 = model.unit_groups()
        g1.out.weight.mul_(7.0)
        g2.inp.weight.mul_(0.2)


def pnorms(group, include_bias=False):
    with torch.no_grad():
        return group_path_norms(group, include_bias)


def make(**opts) -> PathProx:
    cls = REGULARIZERS.get("pathprox")
    return cls(cls.Options(**opts))


def close(a, b, tol=1e-5):
    return torch.allclose(a, b, rtol=tol, atol=tol)


# --------------------------------------------------------------------------- group-lasso prox


def _grid_argmin(z: torch.Tensor, tau: float) -> torch.Tensor:
    """argmin of 1/2 ||v - z||^2 + tau ||v|| over R^2 by a zooming grid search (f is convex)."""
    centre, half = torch.zeros(2, dtype=DT), float(z.norm()) + 1.0
    for _ in range(7):
        ax = torch.linspace(-half, half, 201, dtype=DT)
        gx, gy = torch.meshgrid(centre[0] + ax, centre[1] + ax, indexing="ij")
        pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
        f = 0.5 * (pts - z).pow(2).sum(1) + tau * pts.norm(dim=1)
        centre = pts[f.argmin()]
        half /= 10.0
    return centre


@pytest.mark.parametrize(
    "z,tau",
    [
        ([3.0, -4.0], 1.0),
        ([3.0, -4.0], 4.99),
        ([3.0, -4.0], 5.0),  # ||z|| = tau -> exactly 0
        ([0.3, 0.1], 1.0),
        ([-1.0, 2.0], 0.0),
        ([0.5, 0.5], 0.2),
    ],
)
def test_prox_group_lasso_is_the_argmin(z, tau):
    z = torch.tensor(z, dtype=DT)
    got = prox_group_lasso(z.unsqueeze(0), tau)[0]
    ref = _grid_argmin(z, tau)
    assert torch.allclose(got, ref, atol=1e-5)
    if float(z.norm()) <= tau:
        assert torch.equal(got, torch.zeros_like(got))  # exactly zero, not just small


def test_prox_group_lasso_rows_are_independent():
    v = torch.randn(7, 5, dtype=DT)
    tau = float(v.norm(dim=1).median())
    out = prox_group_lasso(v, tau)
    for j in range(7):
        n = float(v[j].norm())
        expected = torch.zeros(5, dtype=DT) if n <= tau else (1 - tau / n) * v[j]
        assert torch.allclose(out[j], expected)
    assert (out.norm(dim=1) == 0).sum() == (v.norm(dim=1) <= tau).sum() >= 1
    with pytest.raises(ValueError):
        prox_group_lasso(v, -1.0)


# --------------------------------------------------------------------------- balance


@pytest.mark.parametrize("build,inputs", MODELS)
def test_balance_preserves_function_and_equalises_groups(build, inputs):
    model = build()
    unbalance(model)
    x = inputs()
    groups = model.unit_groups()
    before = [float(pnorms(g).sum()) for g in groups]
    y0 = model(x)
    scales = balance_groups(groups, pp.layers_between_groups(model, groups))
    after = [float(pnorms(g).sum()) for g in groups]
    assert len(scales) == 1 and abs(scales[0] - 1.0) > 0.1  # it really rescaled
    assert close(model(x), y0)
    gmean = math.exp(sum(math.log(p) for p in before) / len(before))
    for p in after:
        assert abs(p - gmean) <= 1e-5 * gmean
    assert abs(math.prod(after) - math.prod(before)) <= 1e-5 * math.prod(before)


def test_balance_compensates_even_without_v_bias():
    """Original bug: a V-layer without bias skipped the next group's compensation."""
    model = MLP()
    model.L2.bias = None
    unbalance(model)
    x = mlp_input()
    y0 = model(x)
    balance_groups(model.unit_groups())
    assert close(model(x), y0)


def test_balance_needs_the_layers_between_groups():
    """A biased weight layer between V_g and W_{g+1} must get its bias scaled too."""
    model, x = MidMLP(), mlp_input()
    groups = model.unit_groups()
    assert pp.layers_between_groups(model, groups) == [[model.O]]
    unbalance(model)
    y0 = model(x)
    balance_groups(groups)  # told nothing about O
    assert (model(x) - y0).abs().max() > 1e-3


def test_balance_chain_of_three_groups():
    torch.manual_seed(3)
    layers = nn.ModuleList([nn.Linear(4, 4).to(DT) for _ in range(6)])
    groups = [UnitGroup(f"g{i}", layers[2 * i], layers[2 * i + 1]) for i in range(3)]
    with torch.no_grad():
        layers[1].weight.mul_(10.0)
        layers[4].weight.mul_(0.1)

    def fwd(x):
        for i, layer in enumerate(layers):
            x = layer(x)
            if i < len(layers) - 1:
                x = F.relu(x)
        return x

    x = torch.randn(16, 4, dtype=DT)
    y0 = fwd(x)
    before = torch.tensor([float(pnorms(g).sum()) for g in groups])
    balance_groups(groups)
    after = torch.tensor([float(pnorms(g).sum()) for g in groups])
    assert close(fwd(x), y0)
    assert torch.allclose(after, before.log().mean().exp().expand(3), rtol=1e-5)


# --------------------------------------------------------------------------- unit normalisation


@pytest.mark.parametrize("build,inputs", MODELS)
def test_normalize_units_compensated_preserves_function(build, inputs):
    model, x = build(), inputs()
    y0 = model(x)
    pn0 = [pnorms(g) for g in model.unit_groups()]
    for g in model.unit_groups():
        normalize_units(g, compensate=True)
    assert close(model(x), y0)
    for g, p0 in zip(model.unit_groups(), pn0):
        w = g.inp.weight.reshape(g.size, -1)
        assert torch.allclose(w.norm(dim=1), torch.ones(g.size, dtype=DT))
        assert torch.allclose(pnorms(g), p0)


@pytest.mark.parametrize("build,inputs", MODELS)
def test_normalize_units_uncompensated_changes_function(build, inputs):
    model, x = build(), inputs()
    y0 = model(x)
    for g in model.unit_groups():
        normalize_units(g, compensate=False)
    assert (model(x) - y0).abs().max() > 1e-3


def test_normalize_units_with_bias_uses_joint_norm():
    model, x = MLP(), mlp_input()
    y0 = model(x)
    for g in model.unit_groups():
        normalize_units(g, compensate=True, include_bias=True)
        joint = torch.cat([g.inp.weight, g.inp.bias.unsqueeze(1)], dim=1).norm(dim=1)
        assert torch.allclose(joint, torch.ones(g.size, dtype=DT))
        assert (g.inp.weight.norm(dim=1) < 1 - 1e-6).any()
    assert close(model(x), y0)


# --------------------------------------------------------------------------- prox step


def test_prox_zeros_exactly_the_units_below_tau():
    model = MLP()
    reg = make(balance=False)
    reg.setup(model)
    # With compensation, after normalisation ||v_j|| equals the unit's path norm p_j.
    p = torch.cat([pnorms(g) for g in model.unit_groups()])
    tau = float(p.median())
    expected_dead = int((p <= tau).sum())
    assert 0 < expected_dead < p.numel()
    assert reg.report(model)["units_zeroed"] == 0.0  # no prox step yet
    assert reg.prox(model, lam=tau / 0.5, lr=0.5) == {}
    rep = reg.report(model)
    assert rep["units_zeroed"] == expected_dead
    assert rep["active_units_pct"] == pytest.approx(100.0 * (p.numel() - expected_dead) / p.numel())
    for g, dead in zip(model.unit_groups(), (p <= tau).split([g.size for g in model.unit_groups()])):
        v_dead = g.out.weight.transpose(0, 1)[dead]
        assert v_dead.numel() > 0 or not dead.any()
        assert torch.equal(v_dead, torch.zeros_like(v_dead))
    # The survivors shrank by exactly tau in path norm.
    p_after = torch.cat([pnorms(g) for g in model.unit_groups()])
    assert torch.allclose(p_after[p > tau], p[p > tau] - tau)


def test_weight_decay_never_makes_exact_zeros():
    model = MLP()
    reg = make(algorithm="weight_decay")
    reg.setup(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = mlp_input(), torch.randn(32, 3, dtype=DT)
    params0 = [p.detach().clone() for p in model.parameters()]
    for _ in range(20):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y) + 0.1 * reg.penalty(model, None)
        loss.backward()
        opt.step()
        assert reg.prox(model, lam=0.1, lr=0.1) == {}
    assert any(not torch.equal(a, b) for a, b in zip(params0, model.parameters()))
    rep = reg.report(model)
    assert rep["active_units_pct"] == 100.0 and rep["active_units_pct_thresh"] == 100.0
    assert rep["units_zeroed"] == 0.0


def test_units_zeroed_counts_only_units_this_step_zeroed():
    model = MLP()
    reg = make(balance=False)
    reg.setup(model)
    g1, _g2 = model.unit_groups()
    with torch.no_grad():
        g1.out.weight[:, 0] = 0.0  # already dead: thresholded again, but not counted
        g1.out.weight[:, 1] *= 1e-6  # alive, far below tau: zeroed by this step
    reg.prox(model, lam=1e-3, lr=1.0)
    p = torch.cat([pnorms(g) for g in model.unit_groups()])
    assert p[0] == 0.0 and p[1] == 0.0
    assert reg.report(model)["units_zeroed"] == 1.0
    reg.prox(model, lam=1e-3, lr=1.0)  # nothing new to zero
    assert reg.report(model)["units_zeroed"] == 0.0


@pytest.mark.parametrize("balance", [True, False])
def test_prox_computes_no_path_norms_beyond_the_balance(monkeypatch, balance):
    # Expensive things are computed once per step, never twice for logging: the prox step
    # needs the group path norms only for the layerwise balance (one per group).
    calls = []
    real = pp.unit_path_norms
    monkeypatch.setattr(pp, "unit_path_norms", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(pathprox_ops, "group_path_norms", pp.unit_path_norms)  # the balance's
    model = MLP()
    reg = make(balance=balance)
    reg.setup(model)
    reg.prox(model, lam=0.01, lr=0.1)
    assert len(calls) == (len(model.unit_groups()) if balance else 0)


@pytest.mark.parametrize("build,inputs", MODELS)
def test_full_sgd_step_then_prox(build, inputs):
    model, x = build(), inputs()
    reg = make(balance=False)
    reg.setup(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    opt.zero_grad()
    y = model(x)
    loss = y.pow(2).mean() + 0.01 * reg.penalty(model, None)
    loss.backward()
    opt.step()
    vbias = [None if g.out.bias is None else g.out.bias.detach().clone() for g in model.unit_groups()]
    reg.prox(model, lam=0.01, lr=0.05)
    for g, b in zip(model.unit_groups(), vbias):
        norms = g.inp.weight.reshape(g.size, -1).norm(dim=1)
        v_norms = g.out.weight.transpose(0, 1).reshape(g.size, -1).norm(dim=1)
        assert torch.all(((norms - 1).abs() < 1e-6) | (v_norms == 0))
        if b is not None:
            assert torch.equal(g.out.bias, b)


@pytest.mark.parametrize("build,inputs", MODELS)
@pytest.mark.parametrize("balance", [True, False])
def test_prox_with_zero_threshold_preserves_function(build, inputs, balance):
    model, x = build(), inputs()
    unbalance(model)
    y0 = model(x)
    reg = make(balance=balance)
    reg.setup(model)
    reg.prox(model, lam=0.0, lr=0.1)
    assert close(model(x), y0)
    if balance:
        pn = [float(pnorms(g).sum()) for g in model.unit_groups()]
        assert pn[0] == pytest.approx(pn[1], rel=1e-5)


def test_original_code_first_step_jump_and_its_fix():
    # normalize_at_start=False is the original code: the first projection changes the function.
    model, x = MLP(), mlp_input()
    y0 = model(x)
    reg = make(normalize_at_start=False)
    reg.setup(model)
    reg.prox(model, lam=0.0, lr=0.1)
    assert (model(x) - y0).abs().max() > 1e-3
    # Default: setup normalises every unit with compensation (function unchanged, ||w_j|| = 1),
    # so the first projection (lam = 0) changes nothing either.
    model = MLP()
    y0 = model(x)
    reg = make()
    reg.setup(model)
    torch.testing.assert_close(model(x), y0, rtol=1e-5, atol=1e-6)
    for g in model.unit_groups():
        torch.testing.assert_close(g.inp.weight.flatten(1).norm(dim=1), torch.ones(g.size, dtype=g.inp.weight.dtype))
    reg.prox(model, lam=0.0, lr=0.1)
    torch.testing.assert_close(model(x), y0, rtol=1e-5, atol=1e-6)


def test_last_group_v_bias_untouched_by_balanced_prox():
    model = MLP()
    unbalance(model)
    reg = make()
    reg.setup(model)
    b4 = model.L4.bias.detach().clone()
    reg.prox(model, lam=0.1, lr=0.1)
    assert torch.equal(model.L4.bias, b4)


# --------------------------------------------------------------------------- regularize_bias


def test_regularize_bias_disables_balance(monkeypatch):
    calls = []
    real = pp.balance_groups
    monkeypatch.setattr(pp, "balance_groups", lambda *args: calls.append(1) or real(*args))
    model = MLP()
    unbalance(model)
    make().prox(model, lam=0.0, lr=0.1)
    assert calls == [1]

    model = MLP()
    unbalance(model)
    x = mlp_input()
    y0 = model(x)
    reg = make(regularize_bias=True)
    reg.setup(model)  # normalises [w_j, b_j] once, with compensation
    reg.prox(model, lam=0.0, lr=0.1)
    assert calls == [1]  # not called again
    pn = [float(pnorms(g, include_bias=True).sum()) for g in model.unit_groups()]
    assert abs(pn[0] - pn[1]) > 0.1 * max(pn)  # not equalised
    assert close(model(x), y0)
    for g in model.unit_groups():
        joint = torch.cat([g.inp.weight, g.inp.bias.unsqueeze(1)], dim=1).norm(dim=1)
        assert torch.allclose(joint, torch.ones(g.size, dtype=DT))


# --------------------------------------------------------------------------- penalties and report


class HandNet(nn.Module):
    """x(2) -> W(2 units) -> relu -> V(2) -> relu -> O(1); group (W, V), other layer O."""

    def __init__(self, bias: bool = True):
        super().__init__()
        self.W = nn.Linear(2, 2, bias=bias)
        self.V = nn.Linear(2, 2, bias=bias)
        self.O = nn.Linear(2, 1, bias=bias)
        with torch.no_grad():
            self.W.weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
            self.V.weight.copy_(torch.tensor([[1.0, 2.0], [2.0, 0.0]]))  # v_0 = (1, 2), v_1 = (2, 0)
            self.O.weight.copy_(torch.tensor([[1.0, 1.0]]))
            if bias:
                self.W.bias.copy_(torch.tensor([1.0, 2.0]))
                self.V.bias.copy_(torch.tensor([3.0, 0.0]))
                self.O.bias.copy_(torch.tensor([2.0]))

    def forward(self, x):
        return self.O(F.relu(self.V(F.relu(self.W(x)))))

    def unit_groups(self):
        return [UnitGroup("wv", self.W, self.V)]


# ||W||^2 = 26, ||V||^2 = 9, ||O||^2 = 2, ||b_W||^2 = 5, ||b_V||^2 = 9, ||b_O||^2 = 4
@pytest.mark.parametrize(
    "algorithm,regularize_bias,expected",
    [
        ("weight_decay", False, 0.5 * (26 + 9) + 0.5 * 2),
        ("prox", False, 0.5 * 2),
        ("weight_decay", True, 0.5 * (26 + 9 + 2) + 0.5 * (5 + 9 + 4)),  # b_V once (bug 3)
        ("prox", True, 0.5 * 2 + 0.5 * (9 + 4)),
    ],
)
def test_penalty_hand_computed(algorithm, regularize_bias, expected):
    model = HandNet()
    reg = make(algorithm=algorithm, regularize_bias=regularize_bias)
    reg.setup(model)
    pen = reg.penalty(model, None)
    assert float(pen.detach()) == pytest.approx(expected)
    pen.backward()
    assert model.O.weight.grad is not None


@pytest.mark.parametrize("algorithm", ["prox", "weight_decay"])
def test_report_hand_computed(algorithm):
    model = HandNet()
    rep = make(algorithm=algorithm).report(model)
    pn = 5 * math.sqrt(5) + 1 * 2  # ||w_0|| ||v_0|| + ||w_1|| ||v_1||
    assert rep == pytest.approx(
        {
            "active_units_pct": 100.0,
            "active_units_pct_thresh": 100.0,
            "units_zeroed": 0.0,
            "path_norm": pn,
            "path_norm.wv": pn,
            "objective_path_norm": pn + 1.0,
            "objective_l2": 18.5,
        }
    )
    rep_b = make(algorithm=algorithm, regularize_bias=True).report(model)
    pn_b = math.sqrt(26) * math.sqrt(5) + math.sqrt(5) * 2  # ||[w_j, b_j]|| ||v_j||
    assert rep_b["path_norm"] == pytest.approx(pn_b)
    assert rep_b["objective_path_norm"] == pytest.approx(pn_b + 1.0 + 0.5 * (9 + 4))
    assert rep_b["objective_l2"] == pytest.approx(27.5)


def test_report_active_counts_and_threshold():
    model = HandNet()
    with torch.no_grad():
        model.V.weight[:, 1] = 0.0
    reg = make(active_threshold=1.0)
    rep = reg.report(model)
    assert rep["active_units_pct"] == 50.0
    with torch.no_grad():
        model.V.weight[:, 1] = torch.tensor([1e-12, 0.0])
        model.W.weight[0] *= 1e-3  # p_0 = 5e-3 * sqrt(5) < 1
    rep = reg.report(model)
    assert rep["active_units_pct"] == 100.0
    assert rep["active_units_pct_thresh"] == 0.0


@pytest.mark.parametrize("build,inputs", MODELS)
def test_report_is_consistent(build, inputs):
    model = build()
    rep = make().report(model)
    groups = model.unit_groups()
    manual = {}
    for g in groups:
        w = g.inp.weight.detach().reshape(g.size, -1)
        v = g.out.weight.detach()
        manual[g.name] = sum(float(w[j].norm() * v[:, j].norm()) for j in range(g.size))
    for name, value in manual.items():
        assert rep[f"path_norm.{name}"] == pytest.approx(value)
    assert rep["path_norm"] == pytest.approx(sum(manual.values()))
    assert rep["objective_path_norm"] <= rep["objective_l2"]  # AM-GM


# --------------------------------------------------------------------------- setup errors


def test_setup_requires_unit_groups():
    with pytest.raises(ValueError, match="unit groups"):
        make().setup(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)))


def test_setup_rejects_parametrized_layers():
    class Scale(nn.Module):
        def forward(self, w):
            return 2 * w

    model = MLP()
    parametrize.register_parametrization(model.L3, "weight", Scale())
    with pytest.raises(ValueError, match="parametrized"):
        make().setup(model)


def test_setup_rejects_mixed_and_mismatched_groups():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3)
            self.l = nn.Linear(2, 1)

        def unit_groups(self):
            return [UnitGroup("m", self.c, self.l)]

    with pytest.raises(ValueError, match="Conv2d->Linear"):
        make().setup(Mixed())

    class Mismatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 3)
            self.b = nn.Linear(4, 1)

        def unit_groups(self):
            return [UnitGroup("x", self.a, self.b)]

    with pytest.raises(ValueError, match="3 units"):
        make().setup(Mismatch())


def test_setup_checks_layer_order():
    class Gap(MidMLP):
        def unit_groups(self):
            return [UnitGroup("g", self.L2, self.L3)]  # O sits between them

    with pytest.raises(ValueError, match="right after"):
        make().setup(Gap())

    class Reversed(MLP):
        def unit_groups(self):
            return list(reversed(super().unit_groups()))

    with pytest.raises(ValueError, match="forward order"):
        make().setup(Reversed())
    make(balance=False).setup(Reversed())  # order only matters to the balance


def test_per_unit_helpers_are_path_norms():
    # PathProx reuses path_norm's per-unit views instead of keeping its own copies.
    from reglab.regularizers import path_norm

    assert group_path_norms is path_norm.unit_path_norms
    for build, _inputs in [(MLP, mlp_input), (CNN, cnn_input)]:
        for g in build().unit_groups():
            w = g.inp.weight.detach().reshape(g.size, -1)
            v = g.out.weight.detach().transpose(0, 1).reshape(g.size, -1)
            torch.testing.assert_close(pnorms(g), w.norm(dim=1) * v.norm(dim=1), rtol=0, atol=0)
            wb = torch.cat([w, g.inp.bias.detach()[:, None]], dim=1)
            torch.testing.assert_close(pnorms(g, include_bias=True), wb.norm(dim=1) * v.norm(dim=1), rtol=0, atol=0)


def test_roles_other_than_weight_are_rejected():
    from reglab.errors import ConfigError

    cls = REGULARIZERS.get("pathprox")
    with pytest.raises(ConfigError, match="regularize_bias") as e:
        cls(cls.Options(), roles=["weight", "bias"])
    assert e.value.field == "roles"


def test_options_validation():
    cls = REGULARIZERS.get("pathprox")
    with pytest.raises(pydantic.ValidationError, match="algorithm"):
        cls.Options(algorithm="sgd")
    with pytest.raises(pydantic.ValidationError, match="unknown"):
        cls.Options(unknown=1)
    opts = cls.Options()
    assert (opts.algorithm, opts.regularize_bias, opts.balance, opts.compensate, opts.normalize_at_start) == (
        "prox",
        False,
        True,
        False,
        True,
    )
