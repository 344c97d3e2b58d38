"""Penalty registry and option validation: registered names, unknown/bad options, roles checks and prefixed config
errors."""

from __future__ import annotations

import pytest

from penalty_helpers import make
from reglab.config import RegularizerConfig
from reglab.errors import ConfigError
from reglab.regularizers import REGULARIZERS, build_regularizer

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


ROLE_CHECKED = [
    "l2_sum",
    "l2_mul",
    "frobenius",
    "nuclear_norm",
    "spectral_energy",
    "graph_energy",
    "path_energy",
    "path_norm",
    "pathprox",
]


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
    assert (moved.field, str(moved), moved.allowed) == (
        "regularizers.2.roles",
        "regularizers.2.roles: bad roles (allowed: [weight])",
        ["[weight]"],
    )
    plain = prefixed(ConfigError("split", "too large"), "regularizers.0")
    assert (plain.field, str(plain), plain.allowed) == ("regularizers.0.split", "regularizers.0.split: too large", None)


def test_bad_roles_are_caught_at_config_validation():
    from reglab.regularizers import check_regularizer_options
    from reglab.validation import load_config

    with pytest.raises(ConfigError) as e:
        check_regularizer_options(RegularizerConfig(name="graph_energy", roles=["weight", "norm"]), "regularizers.0")
    assert e.value.field == "regularizers.0.roles"
    # ... and so by load_config, before any data, model or run exists
    with pytest.raises(ConfigError) as e:
        load_config(None, ["regularizers=[{name: l2, lam: 1}, {name: path_norm, lam: 1, roles: [bias]}]"])
    assert e.value.field == "regularizers.1.roles"
    cfg = load_config(None, ["regularizers=[{name: l2, lam: 1, roles: [weight, bias, norm]}]"])  # l2 selects by role
    assert cfg.regularizers[0].roles == ["weight", "bias", "norm"]
