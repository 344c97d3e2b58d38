"""Reproduction presets: they expand, their claims name real settings, and claims are judged right."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from click.testing import CliRunner

from reglab.aggregate import aggregate_seeds
from reglab.config import canonical_dict
from reglab.report_table import format_mean_ci
from reglab.reproduce import PRESET_DIR, SCALES, STUDIES, check_claim, load_preset, setting_label
from reglab.results import _flatten
from reglab.sweep import expand


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("scale", SCALES)
def test_preset_expands_and_claim_names_existing_settings(study, scale):
    spec, meta = load_preset(PRESET_DIR / f"{study}_{scale}.yaml")
    runs = expand(spec)
    labels = {setting_label(_flatten(canonical_dict(r.config)), meta["setting"]) for r in runs}
    claim = meta["claim"]
    for side in ("a", "b"):
        names = [claim[side]] if isinstance(claim[side], str) else claim[side]
        assert set(names) <= labels, (side, set(names) - labels, sorted(labels))
    # at least 3 seeds per setting
    per_setting = pd.Series(
        [setting_label(_flatten(canonical_dict(r.config)), meta["setting"]) for r in runs]
    ).value_counts()
    assert per_setting.min() >= 3


def test_setting_label_defaults():
    row = {"regularizers.0.name": "l2", "data.per_class": float("nan")}
    assert setting_label(row, "{regularizers.0.name|none} {data.per_class|} x") == "l2  x"
    assert setting_label({}, "{regularizers.0.name|none}") == "none"
    assert setting_label({"optim.lr": 0.001}, "lr={optim.lr}") == "lr=0.001"


def _runs(values_a, values_b):
    rows = [{"setting": "A", "seed": i, "m": v} for i, v in enumerate(values_a)]
    rows += [{"setting": "B", "seed": i, "m": v} for i, v in enumerate(values_b)]
    return pd.DataFrame(rows)


def test_claim_direction_and_paired_noise_check():
    claim = {"text": "A beats B", "metric": "m", "expect": "greater", "a": ["A"], "b": ["B"]}
    # Large seed spread, but A is always exactly 0.1 above B: paired CI excludes 0.
    df = _runs([1.1, 2.1, 3.1], [1.0, 2.0, 3.0])
    agg = aggregate_seeds(df, ["m"], by=["setting"])
    res = check_claim(agg, claim, runs=df)
    assert res.reproduced and res.paired and res.separated
    assert res.diff_mean == pytest.approx(0.1) and res.diff_ci == pytest.approx(0.0, abs=1e-9)
    unpaired = check_claim(agg, claim)
    assert unpaired.reproduced and not unpaired.separated  # the unpaired CIs overlap
    # Opposite direction: not reproduced.
    res = check_claim(agg, {**claim, "expect": "less"}, runs=df)
    assert res.reproduced is False and "NOT REPRODUCED" in res.line()
    # Differences of mixed sign: reproduced on the mean, but within noise.
    df = _runs([1.0, 2.3, 2.9], [1.1, 2.0, 3.0])
    agg = aggregate_seeds(df, ["m"], by=["setting"])
    res = check_claim(agg, claim, runs=df)
    assert res.reproduced and not res.separated and "within seed noise" in res.line()


def test_identical_seeds_have_exactly_zero_spread():
    """0.97 three times: pandas' std leaves ~1e-16 of rounding, which tables printed as
    '97 ± 3.38e-14'; the spread of identical values is exactly 0."""
    df = _runs([0.97, 0.97, 0.97], [0.5, 0.6, 0.7])
    assert float(df[df.setting == "A"]["m"].std(ddof=1)) != 0.0  # the rounding this guards against
    agg = aggregate_seeds(df, ["m"], by=["setting"]).set_index("setting")
    assert agg.loc["A", "m_std"] == 0.0 and agg.loc["A", "m_ci95"] == 0.0
    assert agg.loc["B", "m_std"] == pytest.approx(0.1)
    assert format_mean_ci(agg.loc["A", "m_mean"], agg.loc["A", "m_ci95"], 100) == "97.00 ± 0.00"
    res = check_claim(
        agg.reset_index(),
        {"text": "t", "metric": "m", "expect": "greater", "a": ["A"], "b": ["B"]},
        runs=_runs([0.97, 0.97, 0.97], [0.87, 0.87, 0.87]),
    )
    assert res.diff_ci == 0.0


def test_claim_best_of_several_settings_and_missing_setting():
    df = pd.DataFrame(
        [
            {"setting": s, "seed": i, "m": v}
            for s, vals in {"A": [5, 5, 5], "B1": [1, 1, 1], "B2": [7, 7, 7]}.items()
            for i, v in enumerate(vals)
        ]
    )
    agg = aggregate_seeds(df, ["m"], by=["setting"])
    res = check_claim(agg, {"text": "t", "metric": "m", "expect": "greater", "a": ["A"], "b": ["B1", "B2"]}, runs=df)
    assert res.b == "B2" and res.reproduced is False
    res = check_claim(agg, {"text": "t", "metric": "m", "expect": "greater", "a": ["nope"], "b": ["B1"]})
    assert res.reproduced is None and math.isnan(res.a_mean)


def test_reproduce_energy_end_to_end_on_real_mnist(real_data_dir, tmp_path):
    from reglab.cli import cli

    out = tmp_path / "runs"
    args = [
        "reproduce",
        "energy",
        "-o",
        str(out),
        "-j",
        "1",
        "--data-dir",
        str(real_data_dir),
        "train.iterations=15",
        "data.train_limit=1000",
        "data.test_limit=500",
        "seed=0,1,2",
    ]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "claim: the nuclear-norm penalty" in r.output
    assert "paired by seed (n=3)" in r.output
    summary = (out / "sweeps" / "energy-quick.summary.md").read_text()
    assert "nuclear_norm" in summary and "claim:" in summary
    agg = pd.read_csv(out / "sweeps" / "energy-quick.summary.csv")
    assert set(agg["setting"]) == {
        "none",
        "spectral_energy",
        "nuclear_norm",
        "frobenius",
        "graph_energy",
        "path_energy",
    }
    assert (agg["n"] == 3).all()
