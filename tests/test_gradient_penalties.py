"""gradient_norm and jacobian_nuclear: values against hand/autograd references, gradients against
finite differences on tiny float64 models."""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict

import pytest
import torch
from torch import nn

from reglab.config import RegularizerConfig
from reglab.errors import ConfigError
from reglab.loop import backward_with_known_data_grads
from reglab.regularizers import REGULARIZERS, StepContext, build_regularizer
from reglab.regularizers.gradient_penalties import frobenius_sq_estimate, frobenius_sq_exact, jacobian_nuclear_bound

DT = torch.float64


def make(name: str, roles=("weight",), **opts):
    return build_regularizer(RegularizerConfig(name=name, lam=1.0, roles=list(roles), **opts))


def tanh_mlp(seed: int = 0, sizes=(3, 5, 4, 2)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = OrderedDict()
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers[f"fc{i}"] = nn.Linear(a, b)
        if i < len(sizes) - 2:
            layers[f"act{i}"] = nn.Tanh()
    return nn.Sequential(layers).to(DT)


def batch(seed: int = 1, n: int = 6, dim: int = 3, classes: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=DT), torch.randint(0, classes, (n,), generator=g)


LOSS = nn.CrossEntropyLoss()


def context(model, x, y) -> StepContext:
    out = model(x)
    return StepContext(0, x, y, out, LOSS(out, y), LOSS)


def flat_grad(value: torch.Tensor, model: nn.Module) -> torch.Tensor:
    grads = torch.autograd.grad(value, list(model.parameters()), allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, model.parameters())])


def numeric_grad(fn, model: nn.Module, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of the scalar fn() w.r.t. every parameter entry."""
    out = []
    for p in model.parameters():
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = float(fn())
            flat[i] = old - eps
            down = float(fn())
            flat[i] = old
            out.append((up - down) / (2 * eps))
    return torch.tensor(out, dtype=DT)


def true_grad_norm(model, x, y, roles=("weight",)) -> torch.Tensor:
    """||dL/dW|| over the weights, from plain autograd (no double backprop)."""
    weights = (
        [p for n, p in model.named_parameters() if n.endswith("weight")]
        if roles == ("weight",)
        else list(model.parameters())
    )
    loss = LOSS(model(x), y)
    grads = torch.autograd.grad(loss, weights)
    return torch.sqrt(sum((g**2).sum() for g in grads))


# ------------------------------------------------------------------------------ registry, options


def test_registered():
    assert "gradient_norm" in REGULARIZERS and "jacobian_nuclear" in REGULARIZERS


@pytest.mark.parametrize(
    "name,opts",
    [
        ("gradient_norm", {"method": "nope"}),
        ("gradient_norm", {"r": 0.0}),
        ("gradient_norm", {"bogus": 1}),
        ("jacobian_nuclear", {}),  # split is required
        ("jacobian_nuclear", {"split": 0}),
        ("jacobian_nuclear", {"split": 1, "sigma": 0.0}),
        ("jacobian_nuclear", {"split": 1, "samples": 0}),
        ("jacobian_nuclear", {"split": 1, "method": "nope"}),
    ],
)
def test_invalid_options(name, opts):
    with pytest.raises(ConfigError):
        make(name, **opts)


# ------------------------------------------------------------------------------ gradient_norm


def test_gradient_norm_value_equals_autograd_norm():
    model = tanh_mlp()
    x, y = batch()
    reg = make("gradient_norm")
    reg.setup(model)
    value = reg.penalty(model, context(model, x, y))
    expected = true_grad_norm(model, x, y)
    torch.testing.assert_close(value, expected)
    sq = make("gradient_norm", squared=True).penalty(model, context(model, x, y))
    torch.testing.assert_close(sq, expected**2)
    assert reg.report(model)["grad_norm"] == pytest.approx(float(expected))


def test_gradient_norm_roles_select_the_gradient():
    model = tanh_mlp()
    x, y = batch()
    reg = make("gradient_norm", roles=("weight", "bias"))
    value = reg.penalty(model, context(model, x, y))
    torch.testing.assert_close(value, true_grad_norm(model, x, y, roles=("weight", "bias")))
    assert value > make("gradient_norm").penalty(model, context(model, x, y))


@pytest.mark.parametrize("squared", [False, True])
def test_gradient_norm_exact_gradient_matches_finite_differences(squared):
    model = tanh_mlp()
    x, y = batch()
    reg = make("gradient_norm", squared=squared)
    analytic = flat_grad(reg.penalty(model, context(model, x, y)), model)

    def value():
        n = true_grad_norm(model, x, y)
        return n**2 if squared else n

    numeric = numeric_grad(value, model)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert analytic.abs().sum() > 0


@pytest.mark.parametrize("squared", [False, True])
def test_finite_difference_method_approximates_exact_gradient(squared):
    model = tanh_mlp()
    x, y = batch()
    exact = flat_grad(make("gradient_norm", squared=squared).penalty(model, context(model, x, y)), model)
    reg = make("gradient_norm", method="finite_difference", r=1e-4, squared=squared)
    ctx = context(model, x, y)
    value = reg.penalty(model, ctx)
    approx = flat_grad(value, model)
    cos = torch.nn.functional.cosine_similarity(exact, approx, dim=0)
    assert cos > 0.99
    torch.testing.assert_close(approx, exact, rtol=1e-2, atol=1e-3 * exact.abs().max().item())
    # the value is the true norm (not the surrogate <h, theta>)
    expected = true_grad_norm(model, x, y)
    torch.testing.assert_close(value.detach(), expected**2 if squared else expected)
    torch.testing.assert_close(ctx.extra["grad_norm"], expected)


def test_finite_difference_hands_the_data_gradient_to_the_trainer():
    """The trainer adds the data gradient the penalty computed instead of backpropagating the data
    loss again: same gradients as (data_loss + lam * R).backward(), one pass fewer through the
    batch's graph (counted at the model output)."""
    model = tanh_mlp()
    x, y = batch()
    reg = make("gradient_norm", method="finite_difference")
    passes = []

    def step(use_known: bool) -> list[torch.Tensor]:
        out = model(x)
        out.register_hook(lambda g: passes.append(use_known))
        ctx = StepContext(0, x, y, out, LOSS(out, y), LOSS)
        value = reg.penalty(model, ctx)
        model.zero_grad(set_to_none=True)
        if use_known:
            assert ctx.data_grads is not None and len(ctx.data_grads) == len(list(model.parameters()))
            backward_with_known_data_grads([0.3 * value], ctx.data_grads)
        else:
            (ctx.data_loss + 0.3 * value).backward()
        return [p.grad.clone() for p in model.parameters()]

    reference, known = step(False), step(True)
    for a, b in zip(reference, known, strict=True):
        torch.testing.assert_close(b, a)
    assert passes.count(False) == 2 and passes.count(True) == 1


def test_finite_difference_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    x, y = batch()
    ctx = context(model, x, y)  # the one forward that updates the running stats
    before = [b.clone() for b in model.buffers()]
    reg = make("gradient_norm", method="finite_difference")
    flat_grad(reg.penalty(model, ctx), model)
    for b0, b1 in zip(before, model.buffers()):
        torch.testing.assert_close(b0, b1)


def test_gradient_norm_backward_keeps_data_loss_graph():
    # the trainer backpropagates data_loss + lam * R after the penalty used the same graph
    model = tanh_mlp()
    x, y = batch()
    for method in ("exact", "finite_difference"):
        ctx = context(model, x, y)
        total = ctx.data_loss + 0.1 * make("gradient_norm", method=method).penalty(model, ctx)
        model.zero_grad()
        total.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_gradient_norm_zero_gradient_gives_zero_not_nan():
    model = nn.Sequential(nn.Linear(2, 1, bias=False)).to(DT)
    with torch.no_grad():
        model[0].weight.zero_()
    x = torch.zeros(4, 2, dtype=DT)
    y = torch.zeros(4, 1, dtype=DT)
    mse = nn.MSELoss()
    for method in ("exact", "finite_difference"):
        out = model(x)
        ctx = StepContext(0, x, y, out, mse(out, y), mse)
        value = make("gradient_norm", method=method).penalty(model, ctx)
        assert value.item() == 0.0
        assert torch.isfinite(flat_grad(value, model)).all()


def test_gradient_norm_empty_selection_is_config_error():
    model = nn.Sequential(nn.Linear(2, 2)).to(DT)
    model[0].weight.requires_grad_(False)
    with pytest.raises(ConfigError, match="roles"):
        make("gradient_norm").setup(model)


# ------------------------------------------------------------------------------ jacobian_nuclear


def linear_seq(A: torch.Tensor, B: torch.Tensor) -> nn.Sequential:
    """f(x) = B A x as Sequential(h: x -> A x, g: z -> B z)."""
    h = nn.Linear(A.shape[1], A.shape[0], bias=False).to(DT)
    g = nn.Linear(B.shape[1], B.shape[0], bias=False).to(DT)
    with torch.no_grad():
        h.weight.copy_(A)
        g.weight.copy_(B)
    return nn.Sequential(h, g)


def test_exact_frobenius_of_linear_map_is_frobenius_norm_of_matrix():
    A = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], dtype=DT)  # ||A||_F^2 = 1+4+1+9 = 15
    lin = linear_seq(A, torch.eye(2, dtype=DT))[0]
    x = torch.randn(5, 3, dtype=DT)
    torch.testing.assert_close(frobenius_sq_exact(lin, x), torch.full((5,), 15.0, dtype=DT))


def test_bound_upper_bounds_nuclear_norm_and_is_tight_when_balanced():
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=DT)
    A, B = torch.randn(4, 3, dtype=DT), torch.randn(2, 4, dtype=DT)
    model = linear_seq(A, B)
    reg = make("jacobian_nuclear", split=1, method="exact")
    bound = reg.penalty(model, StepContext(0, x, None, None, None))
    nuc = torch.linalg.matrix_norm(B @ A, ord="nuc")
    torch.testing.assert_close(bound, 0.5 * (A.pow(2).sum() + B.pow(2).sum()))
    assert bound >= nuc
    # balanced: A = B = diag(3, 1, 0.5): 1/2 (||A||_F^2 + ||B||_F^2) = 9 + 1 + 0.25 = ||A^2||_* = 10.25
    D = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=DT))
    tight = make("jacobian_nuclear", split=1, method="exact").penalty(
        linear_seq(D, D), StepContext(0, x, None, None, None)
    )
    torch.testing.assert_close(tight, torch.tensor(10.25, dtype=DT))
    torch.testing.assert_close(tight, torch.linalg.matrix_norm(D @ D, ord="nuc"))


def test_estimate_converges_to_exact():
    model = tanh_mlp(seed=3, sizes=(3, 6, 4, 2))
    x, _ = batch(n=8)
    h, g = model[:2], model[2:]
    torch.manual_seed(0)
    exact, eh, eg = jacobian_nuclear_bound(h, g, x, "exact")
    est, sh, sg = jacobian_nuclear_bound(h, g, x, "estimate", sigma=1e-3, samples=4000)
    # relative standard error ~ sqrt(2 / (samples * batch)) < 1 %; tolerance 5 %
    torch.testing.assert_close(est, exact, rtol=0.05, atol=0)
    torch.testing.assert_close(sh, eh, rtol=0.05, atol=0)
    torch.testing.assert_close(sg, eg, rtol=0.05, atol=0)


def test_estimate_is_exact_in_expectation_for_linear_map():
    A = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=DT)  # ||A||_F^2 = 6
    lin = linear_seq(A, torch.eye(2, dtype=DT))[0]
    torch.manual_seed(0)
    x = torch.randn(16, 2, dtype=DT)
    est = frobenius_sq_estimate(lin, x, lin(x), sigma=0.5, samples=2000).mean()
    assert est.item() == pytest.approx(6.0, rel=0.03)


def test_exact_gradient_matches_finite_differences():
    model = tanh_mlp(seed=2, sizes=(2, 3, 3, 2))
    x, _ = batch(n=3, dim=2)
    reg = make("jacobian_nuclear", split=2, method="exact")
    ctx = StepContext(0, x, None, None, None)
    analytic = flat_grad(reg.penalty(model, ctx), model)
    numeric = numeric_grad(lambda: reg.penalty(model, ctx).detach(), model)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert analytic.abs().sum() > 0


def test_estimate_gradient_flows_and_report():
    model = tanh_mlp()
    x, _ = batch()
    reg = make("jacobian_nuclear", split=2, samples=3)
    value = reg.penalty(model, StepContext(0, x, None, None, None))
    grads = flat_grad(value, model)
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0
    rep = reg.report(model)
    assert set(rep) == {"jac_h_frob_sq", "jac_g_frob_sq"}
    assert value.item() == pytest.approx(0.5 * (rep["jac_h_frob_sq"] + rep["jac_g_frob_sq"]))


@pytest.mark.parametrize("stale", [False, True])
def test_estimate_reuses_the_steps_own_clean_forward(stale):
    """h(x) and g(h(x)) come from the step's forward (hooks); only the noisy inputs run again. Same
    value and gradient as recomputing everything with the same noise. When another forward ran
    after the step's (stale), the clean pass is recomputed instead."""
    model = tanh_mlp(seed=4)
    x, y = batch(n=8)
    reg = make("jacobian_nuclear", split=2, samples=2)
    reg.setup(model)
    runs_of_h = []
    model[0].register_forward_hook(lambda *a: runs_of_h.append(1))
    out = model(x)
    ctx = StepContext(0, x, y, out, LOSS(out, y), LOSS)
    if stale:
        model(x + 1.0)  # e.g. another penalty's forward
    runs_of_h.clear()
    torch.manual_seed(5)
    value = reg.penalty(model, ctx)
    assert len(runs_of_h) == (2 if stale else 1)  # (clean +) one batched noisy pass of h
    torch.manual_seed(5)
    reference, _, _ = jacobian_nuclear_bound(model[:2], model[2:], x, "estimate", 0.01, 2)
    torch.testing.assert_close(value, reference)
    torch.testing.assert_close(flat_grad(value, model), flat_grad(reference, model))


def test_jacobian_nuclear_hooks_survive_a_model_copy():
    model = tanh_mlp()
    make("jacobian_nuclear", split=2).setup(model)
    x, _ = batch()
    copied = copy.deepcopy(model)  # as the margin analysis does
    torch.testing.assert_close(copied(x), model(x))


def test_accepts_module_with_net_attribute():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tanh_mlp()

        def forward(self, x):
            return self.net(x)

    model = Wrapped()
    x, _ = batch()
    reg = make("jacobian_nuclear", split=2, method="exact")
    reg.setup(model)
    direct = make("jacobian_nuclear", split=2, method="exact").penalty(model.net, StepContext(0, x, None, None, None))
    torch.testing.assert_close(reg.penalty(model, StepContext(0, x, None, None, None)), direct)


def test_reglab_network_model_splits():
    from reglab.models.network import Network

    layers = OrderedDict(fc1=nn.Linear(3, 4), act=nn.ReLU(), fc2=nn.Linear(4, 2))
    model = Network(layers, [("fc1", "fc2")]).to(DT)
    x, _ = batch()
    reg = make("jacobian_nuclear", split=2, method="exact")
    reg.setup(model)
    assert torch.isfinite(reg.penalty(model, StepContext(0, x, None, None, None)))


@pytest.mark.parametrize("split", [0, 5])
def test_bad_split_or_model_is_config_error(split):
    model = tanh_mlp()  # 5 top-level layers
    reg = make("jacobian_nuclear", split=max(split, 1))
    reg.options.split = split  # bypass option validation to reach the model check
    with pytest.raises(ConfigError, match="split"):
        reg.setup(model)


def test_non_sequential_model_is_config_error():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    with pytest.raises(ConfigError, match=r"split.*nn\.Sequential"):
        make("jacobian_nuclear", split=1).setup(Plain())


def test_jacobian_nuclear_rejects_roles():
    with pytest.raises(ConfigError, match="roles"):
        make("jacobian_nuclear", roles=("weight", "bias"), split=1)
