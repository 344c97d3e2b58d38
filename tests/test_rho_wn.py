"""Rho-WN (study 1): unit-norm weight layers and one global output scale rho = g0^L.

Checked against hand-built networks: a plain ReLU MLP whose weights are divided by their
Frobenius norms and whose output is multiplied by rho."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from reglab.analysis.margins import norm_one_network, product_of_frobenius_norms, product_of_spectral_norms
from reglab.cli import cli
from reglab.config import ModelConfig, RegularizerConfig, RunConfig
from reglab.errors import ConfigError
from reglab.models import build_model
from reglab.models.structure import weight_layers
from reglab.models.weightnorm import global_scale, is_unit_normalized
from reglab.regularizers import build_regularizer as _build
from reglab.validation import check_names


def build_regularizer(entry: dict):
    return _build(RegularizerConfig.model_validate(entry))


WIDTHS = [6, 5, 4, 1]


def rho_mlp(g0: float | None = 1.5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name="mlp", widths=WIDTHS, weight_norm="rho", wn_g0=g0), (6,), 1)


def rho_of(model: torch.nn.Module) -> float:
    return float(global_scale(model).detach())


def by_hand(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """rho * f(x) with every weight V / ||V||_F, from the stored free tensors, in float64."""
    layers = [layer for _, layer in weight_layers(model)]
    h = x.double()
    for i, layer in enumerate(layers):
        v = layer.parametrizations.weight.original.detach().double()
        h = h @ (v / v.norm()).T + layer.bias.detach().double()
        if i < len(layers) - 1:
            h = h.relu()
    return rho_of(model) * h.reshape(-1)


def test_rho_starts_at_g0_to_the_depth_and_every_layer_has_norm_one():
    model = rho_mlp(g0=1.5)
    assert rho_of(model) == pytest.approx(1.5**3)
    for _, layer in weight_layers(model):
        assert is_unit_normalized(layer)
        assert float(layer.weight.detach().norm()) == pytest.approx(1.0, rel=1e-6)
    x = torch.randn(7, 6)
    torch.testing.assert_close(model(x).double(), by_hand(model, x), rtol=1e-5, atol=1e-6)


def test_rho_without_g0_keeps_the_function_when_biases_are_zero():
    """rho = prod ||W_l||_F: a bias-free ReLU network is positively homogeneous layer by layer,
    so moving every layer's norm into rho leaves the function unchanged."""
    torch.manual_seed(3)
    cfg = ModelConfig(name="mlp", widths=WIDTHS, bias=False)
    plain = build_model(cfg, (6,), 1)
    torch.manual_seed(3)
    rho = build_model(cfg.model_copy(update={"weight_norm": "rho"}), (6,), 1)
    product = math.prod(float(layer.weight.detach().norm()) for _, layer in weight_layers(plain))
    assert rho_of(rho) == pytest.approx(product, rel=1e-6)
    x = torch.randn(9, 6)
    torch.testing.assert_close(rho(x), plain(x), rtol=1e-4, atol=1e-6)


def test_an_optimizer_step_moves_rho_and_keeps_the_layers_unit_norm():
    model = rho_mlp()
    before = rho_of(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    (model(torch.randn(16, 6)) - torch.randn(16)).pow(2).mean().backward()
    assert global_scale(model).grad is not None
    opt.step()
    assert rho_of(model) != before
    for _, layer in weight_layers(model):
        assert float(layer.weight.detach().norm()) == pytest.approx(1.0, rel=1e-6)


def test_l2_mul_is_rho_squared_with_its_gradient_and_report():
    model = rho_mlp(g0=1.2)
    reg = build_regularizer({"name": "l2_mul"})
    reg.setup(model)
    value = reg.penalty(model, None)
    rho = rho_of(model)
    assert float(value.detach()) == pytest.approx(rho**2, rel=1e-6)
    value.backward()
    assert float(global_scale(model).grad.detach()) == pytest.approx(2 * rho, rel=1e-6)
    geometric = build_regularizer({"name": "l2_mul", "depth_normalization": "geometric"})
    assert float(geometric.penalty(model, None).detach()) == pytest.approx((rho**2) ** (1 / 3), rel=1e-5)
    report = reg.report(model)
    assert report["rho"] == pytest.approx(abs(rho), rel=1e-6)
    assert all(report[f"norm.{name}"] == pytest.approx(1.0) for name, _ in weight_layers(model))


def test_l2_sum_is_refused_under_rho_as_a_penalty_a_monitor_and_in_library_code():
    base = {"model": {"name": "mlp", "widths": WIDTHS, "weight_norm": "rho"}, "data": {"dataset": "synthetic"}}
    for extra, field in (
        ({"regularizers": [{"name": "l2_mul", "lam": 0.1}, {"name": "l2_sum", "lam": 0.1}]}, "regularizers.1.name"),
        ({"analysis": {"monitors": ["l2_sum"]}}, "analysis.monitors.0.name"),
    ):
        with pytest.raises(ConfigError) as info:
            check_names(RunConfig.model_validate({**base, **extra}))
        assert info.value.field == field and "l2_mul" in str(info.value)
    with pytest.raises(ConfigError):
        build_regularizer({"name": "l2_sum"}).setup(rho_mlp())


def test_margins_divide_by_rho():
    """norm_one: f(x)/|rho| exactly; the norm products carry |rho| as a factor."""
    model = rho_mlp(g0=-1.1)  # an odd depth makes rho negative: |rho| is what divides
    rho = rho_of(model)
    assert rho < 0
    x = torch.randn(5, 6)
    normed = norm_one_network(model)
    torch.testing.assert_close(normed(x).double(), by_hand(model, x) / abs(rho), rtol=1e-5, atol=1e-6)
    assert rho_of(model) == rho  # the original is untouched
    assert product_of_frobenius_norms(model) == pytest.approx(abs(rho), rel=1e-6)
    spectral = math.prod(
        float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) for _, layer in weight_layers(model)
    )
    assert product_of_spectral_norms(model) == pytest.approx(spectral * abs(rho), rel=1e-5)


def test_a_rho_run_trains_from_the_command_line_and_reports_rho(tmp_path):
    """(Resuming a Rho-WN run exactly is tested with the other resumes in test_train.py.)"""
    over = [
        "data.dataset=synthetic", "model.name=mlp", "model.widths=[20,6,4]", "model.weight_norm=rho",
        "model.wn_g0=1.5", "train.epochs=2", "train.progress=false", f"output={tmp_path}",
    ]  # fmt: skip
    r = CliRunner().invoke(cli, ["train", *over, "regularizers=[{name: l2_mul, lam: 0.01}]"])
    assert r.exit_code == 0, r.output
    (summary,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")]
    final = summary["final"]
    assert final["l2_mul.rho"] ** 2 == pytest.approx(final["l2_mul.penalty"], rel=1e-5)
    assert final["l2_mul.rho"] != pytest.approx(1.5**2)  # rho was trained
    r = CliRunner().invoke(cli, ["train", *over, "regularizers=[{name: l2_sum, lam: 0.01}]"])
    assert r.exit_code == 2 and "regularizers.0.name" in r.output and "l2_mul" in r.output
