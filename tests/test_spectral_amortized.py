"""Amortized spectral penalties (regularizers/amortized.py): refresh_every / refresh_tol of
nuclear_norm, spectral_energy and graph_energy. Between refreshes the penalty is the linear lower
bound <G, theta> with the cached factor G as its gradient; right after a refresh it is exact;
refresh_every 1 is the exact route, bit for bit; the factors survive a resume."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from helpers import _Fault, small_config
from penalty_helpers import make, mlp, small_cnn
from reglab.config import config_hash
from reglab.errors import ConfigError
from reglab.regularizers.base import StepContext
from reglab.regularizers.graph_energy import biadjacency_blocks, biadjacency_transposed, graph_energy, layer_sizes
from reglab.regularizers.nuclear import nuclear_norm_and_factor
from reglab.regularizers.spectral import layerwise_spectral_energy, nuclear_norm
from reglab.store import RunDir
from reglab.train import run
from reglab.validation import load_config
from reglab.vectorized.functional import stateful_attributes, tensor_attributes

CTX = StepContext(step=0, x=torch.zeros(1), y=torch.zeros(1), outputs=torch.zeros(1), data_loss=torch.zeros(()))
"""A training step's context: the penalty of a step (the amortized route applies)."""

# (regularizer, options, model): conv and linear layers, the x2 convention, square layers (the
# symmetric part's energy) and rectangular ones, deep chains, both solvers
CASES = {
    "nuclear_norm conv": ("nuclear_norm", {}, lambda: small_cnn(seed=1)),
    "nuclear_norm x2": ("nuclear_norm", {"graph_energy_convention": True}, lambda: mlp(5, 7, 3, seed=2)),
    "nuclear_norm svdvals": ("nuclear_norm", {"solver": "svdvals"}, lambda: mlp(6, 4, 5, seed=3)),
    "spectral_energy square": ("spectral_energy", {}, lambda: mlp(4, 6, 6, 3, seed=4)),
    "graph_energy deep": ("graph_energy", {}, lambda: mlp(5, 4, 6, 3, seed=5)),
    "graph_energy svdvals": ("graph_energy", {"solver": "svdvals"}, lambda: mlp(3, 5, 4, 2, 6, seed=6)),
}


def built(case: str, **options):
    name, opts, model_fn = CASES[case]
    model = model_fn()
    reg = make(name, **opts, **options)
    reg.setup(model)
    return reg, model


def weights_of(reg, model) -> list[torch.Tensor]:
    return reg.factor_weights(model)


def grads(model: nn.Module, value: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    value.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def move(model: nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, dtype=p.dtype, generator=g))


def exact_value(reg, model) -> float:
    return reg.penalty(model, None).item()


# ---------------------------------------------------------------------------------- the factors


@pytest.mark.parametrize("shape", [(9, 4), (4, 9), (6, 6)])
@pytest.mark.parametrize("solver", ["gram", "svdvals"])
def test_the_nuclear_factor_is_the_polar_factor(shape, solver):
    m = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    value, q = nuclear_norm_and_factor(m, solver)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    torch.testing.assert_close(q, u @ vh, rtol=0, atol=1e-12)
    assert value.item() == pytest.approx(float(s.sum()), rel=1e-13)
    assert float((q * m).sum()) == pytest.approx(float(s.sum()), rel=1e-13)  # tr(Q^T M) = ||M||_*


def test_the_gram_factor_drops_zero_singular_values():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(8, 2, dtype=torch.float64, generator=g) @ torch.randn(2, 5, dtype=torch.float64, generator=g)
    value, q = nuclear_norm_and_factor(m.float())  # rank 2 of 5, float32 rounding in the zero directions
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    torch.testing.assert_close(q, u[:, :2] @ vh[:2], rtol=0, atol=1e-5)  # U_r V_r^T: spectral norm 1
    assert value.item() == pytest.approx(float(s.sum()), rel=1e-6)


@pytest.mark.parametrize("widths", [(3, 4, 2), (4, 2, 6, 3), (3, 6, 2, 5, 4)])
def test_biadjacency_blocks_is_the_adjoint_of_the_placement(widths):
    g = torch.Generator().manual_seed(2)
    weights = [torch.randn(b, a, dtype=torch.float64, generator=g) for a, b in itertools.pairwise(widths)]
    bt = biadjacency_transposed(weights)
    other = torch.randn(bt.shape, dtype=torch.float64, generator=g)
    blocks = biadjacency_blocks(other, layer_sizes(weights))
    assert [b.shape for b in blocks] == [w.shape for w in weights]
    inner = sum(float((b * w).sum()) for b, w in zip(blocks, weights))
    assert inner == pytest.approx(float((other * bt).sum()), rel=1e-13)


# --------------------------------------------------------------------- value and gradient


@pytest.mark.parametrize("case", sorted(CASES))
def test_right_after_a_refresh_the_bound_is_the_exact_value_and_gradient(case):
    reg, model = built(case, refresh_every=3)
    exact = make(CASES[case][0], **CASES[case][1])
    exact.setup(model)
    bound, value = reg.penalty(model, CTX), exact.penalty(model, CTX)
    assert bound.item() == pytest.approx(value.item(), rel=1e-12)
    for a, b in zip(grads(model, bound), grads(model, value), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", sorted(CASES))
def test_between_refreshes_the_gradient_is_the_cached_factor_and_the_value_a_lower_bound(case):
    reg, model = built(case, refresh_every=3)
    factors = [f.clone() for f in reg._factors]
    for step in range(2):  # two steps without a refresh (age 1, 2 < 3)
        move(model, seed=step)
        reg.after_step(model, CTX)
        assert reg._refreshes == 1
        bound = reg.penalty(model, CTX)
        assert bound.item() <= exact_value(reg, model) + 1e-12
        assert bound.item() < exact_value(reg, model) - 1e-6  # the weights moved: strictly below
        weights = weights_of(reg, model)
        model.zero_grad()
        bound.backward()
        for w, f in zip(weights, factors, strict=True):
            assert torch.equal(w.grad, f)  # exactly the stale factor, by autograd
        assert all(p.grad is None for n, p in model.named_parameters() if n.endswith("bias"))
        assert bound.item() == pytest.approx(
            sum(float((f * w.detach()).sum()) for f, w in zip(factors, weights)), rel=1e-12
        )
    move(model, seed=9)
    reg.after_step(model, CTX)  # age 3: refreshed on the weights the next penalty sees
    assert reg._refreshes == 2 and reg._age == 0
    assert reg.penalty(model, CTX).item() == pytest.approx(exact_value(reg, model), rel=1e-12)
    report = reg.report(model)
    assert report["refreshes"] == 2.0 and report["bound_gap"] == pytest.approx(0.0, abs=1e-12)
    assert 0 < report["refresh_gap"] < 1


@pytest.mark.parametrize("case", ["nuclear_norm conv", "spectral_energy square", "graph_energy deep"])
def test_a_penalty_without_a_step_is_exact(case):
    reg, model = built(case, refresh_every=5)
    move(model)
    exact = make(CASES[case][0], **CASES[case][1])
    assert reg.penalty(model, None).item() == exact.penalty(model, None).item()
    assert reg.report(model)["penalty"] == exact.report(model)["penalty"]


def test_scaling_the_weights_keeps_the_bound_exact():
    # Euler: a 1-homogeneous R has R(c theta) = <G(theta), c theta>, so a pure rescaling costs nothing
    reg, model = built("spectral_energy square", refresh_every=10)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.7)
    assert reg.penalty(model, CTX).item() == pytest.approx(exact_value(reg, model), rel=1e-12)


# ------------------------------------------------------------------------------------ cadence


def fresh_steps(reg, model, steps: int, update) -> list[int]:
    """The steps (0-based) whose penalty used a factor computed on exactly its weights."""
    out = []
    for step in range(steps):
        if reg.penalty(model, CTX).item() == pytest.approx(exact_value(reg, model), rel=1e-12):
            out.append(step)
        update(model, step)
        reg.after_step(model, CTX)
    return out


def test_refresh_every_k_steps():
    reg, model = built("nuclear_norm conv", refresh_every=3)
    assert fresh_steps(reg, model, 10, lambda m, s: move(m, 0.05, s)) == [0, 3, 6, 9]
    assert reg._refreshes == 1 + 3  # setup, then after steps 2, 5, 8
    assert reg._age == 1


def test_refresh_tol_refreshes_early_and_refresh_every_still_caps():
    def grow_first_layer(model, step):  # layer 0 grows by 2 % a step; the rest stays
        with torch.no_grad():
            model[0].weight.mul_(1.02)
            model[0].weight.add_(1e-3)  # and turns a little, so the bound is not exact (scaling alone is)

    # relative change after n steps ~ 1.02^n - 1: 0.020, 0.040, 0.061 > 0.05 -> refresh after 3 steps
    reg, model = built("nuclear_norm conv", refresh_every=100, refresh_tol=0.05)
    assert fresh_steps(reg, model, 8, grow_first_layer) == [0, 3, 6]
    reg, model = built("nuclear_norm conv", refresh_every=2, refresh_tol=0.05)
    assert fresh_steps(reg, model, 6, grow_first_layer) == [0, 2, 4]
    # nothing moves: never early
    reg, model = built("nuclear_norm conv", refresh_every=4, refresh_tol=1e-9)
    assert reg.relative_change(model) == 0.0
    assert fresh_steps(reg, model, 5, lambda m, s: None) == [0, 1, 2, 3, 4] and reg._refreshes == 2


def test_options_are_checked():
    with pytest.raises(ConfigError, match=r"regularizers\.0\.refresh_tol.*refresh_every > 1"):
        make("nuclear_norm", refresh_tol=0.1)
    with pytest.raises(ConfigError, match=r"regularizers\.0\.refresh_every.*bipartite"):
        make("graph_energy", method="dense", refresh_every=4)
    with pytest.raises(ConfigError, match=r"regularizers\.0\.refresh_every"):
        make("spectral_energy", refresh_every=0)
    with pytest.raises(ConfigError, match="unknown option"):
        make("frobenius", refresh_every=2)


def test_amortized_state_is_declared_per_model_state():
    reg, model = built("spectral_energy square", refresh_every=2, refresh_tol=0.1)
    move(model)
    reg.penalty(model, CTX)
    reg.after_step(model, CTX)
    assert set(tensor_attributes(reg)) <= set(reg.per_model_state)
    assert stateful_attributes(reg) == ["_factors", "_reference"]
    assert stateful_attributes(built("nuclear_norm conv", refresh_every=2)[0]) == ["_factors"]


# -------------------------------------------------------------- refresh_every 1 is the exact route


@pytest.mark.parametrize("case", sorted(CASES))
def test_refresh_every_one_is_the_existing_route_bit_for_bit(case):
    name, opts, model_fn = CASES[case]
    model = model_fn()
    reg = make(name, **opts, refresh_every=1)
    reg.setup(model)
    solver = opts.get("solver", "gram")
    layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    if name == "graph_energy":
        expected = graph_energy([m.weight for m in layers], "auto", solver)
    elif name == "nuclear_norm":
        c = 2.0 if opts.get("graph_energy_convention") else 1.0
        expected = torch.stack([c * nuclear_norm(m.weight, solver) for m in layers]).sum()
    else:
        expected = torch.stack([layerwise_spectral_energy(m.weight, solver) for m in layers]).sum()
    value = reg.penalty(model, CTX)
    assert torch.equal(value, expected)
    for a, b in zip(grads(model, value), grads(model, expected), strict=True):
        assert torch.equal(a, b)
    reg.after_step(model, CTX)
    assert reg._factors is None and reg.state_dict() == {}
    assert set(reg.report(model)) == {"penalty"} | {k for k in reg.report(model) if k.startswith("layer.")}


NO_ANALYSIS = ["analysis.margins=false", "analysis.spectra=false", "analysis.sparsity=false"]


@pytest.mark.parametrize(
    "term",
    ["{name: nuclear_norm, lam: 0.3}", "{name: graph_energy, lam: 0.3, solver: svdvals}"],
    ids=["nuclear", "graph"],
)
def test_refresh_every_one_trains_exactly_as_without_the_option(tmp_path, term):
    a = run(small_config(tmp_path / "a", f"regularizers=[{term}]", *NO_ANALYSIS))
    b = run(small_config(tmp_path / "b", f"regularizers=[{term[:-1]}, refresh_every: 1}}]", *NO_ANALYSIS))
    strip = [{k: v for k, v in r.items() if k != "time"} for r in RunDir(a.path).steps()]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in RunDir(b.path).steps()]
    wa = torch.load(RunDir(a.path).ckpt("final"), weights_only=True)["model"]
    wb = torch.load(RunDir(b.path).ckpt("final"), weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_run_identity():
    base = load_config(None, ["regularizers=[{name: nuclear_norm, lam: 0.1}]"])
    amortized = load_config(None, ["regularizers=[{name: nuclear_norm, lam: 0.1, refresh_every: 4}]"])
    # an option left out is not filled into the canonical form: every existing run keeps its hash
    from reglab.config import canonical_dict

    assert not any(k.startswith("refresh") for k in canonical_dict(base)["regularizers"][0])
    assert config_hash(amortized) != config_hash(base)


# ------------------------------------------------------------------------------------- resume


@pytest.fixture
def _faults():
    _Fault.nan_at = _Fault.raise_at = None
    yield
    _Fault.nan_at = _Fault.raise_at = None


@pytest.mark.parametrize(
    "term, model",
    [
        ("{name: nuclear_norm, lam: 0.05, refresh_every: 3}", []),
        ("{name: spectral_energy, lam: 0.05, refresh_every: 4, refresh_tol: 0.01}", ["model.widths=[20,32,32,4]"]),
        ("{name: graph_energy, lam: 0.05, refresh_every: 5}", ["model.widths=[20,16,12,4]"]),
    ],
    ids=["nuclear", "spectral_tol", "graph"],
)
def test_an_interrupted_run_resumes_with_the_uninterrupted_factors(tmp_path, _faults, term, model):
    # the checkpoint at step 16 falls between refreshes (nuclear: factor from after step 14,
    # age 1): a resume that recomputed the factor would log different penalties from step 16 on
    over = ["train.epochs=3", f"regularizers=[{{name: _test_fault, lam: 1.0}}, {term}]", *model, *NO_ANALYSIS]
    ref = run(small_config(tmp_path / "ref", *over))
    _Fault.raise_at = 19
    cfg = small_config(tmp_path / "int", *over)
    with pytest.raises(RuntimeError, match="injected crash"):
        run(cfg)
    rd = RunDir(tmp_path / "int" / ref.hash)
    state = torch.load(rd.ckpt("last"), weights_only=True)
    assert state["step"] == 16 and state["terms"][1]["reg"]["factors"] is not None
    _Fault.raise_at = None
    assert run(cfg).status == "done"
    strip = [{k: v for k, v in r.items() if k != "time"} for r in RunDir(ref.path).steps()]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in rd.steps()]
    ea = [{k: v for k, v in r.items() if k != "time"} for r in RunDir(ref.path).evals()]
    assert ea == [{k: v for k, v in r.items() if k != "time"} for r in rd.evals()]
    assert any(k.endswith(".refresh_gap") for k in ea[-1])
