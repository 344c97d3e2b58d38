"""Reproduction presets: they expand, their claims name real settings, and claims are judged right."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from reglab.aggregate import aggregate_seeds
from reglab.config import canonical_dict, merge
from reglab.report_table import format_mean_ci
from reglab.reproduce import PRESET_DIR, SCALES, STUDIES, has_preset, load_preset, preset_path, setting_label
from reglab.reproduce_tune import stage_labels
from reglab.results import _flatten
from reglab.sweep import expand
from reglab.verdicts import parse_claims

PRESETS = [(study, scale) for study in STUDIES for scale in SCALES if has_preset(study, scale)]


@pytest.mark.parametrize(("study", "scale"), PRESETS)
def test_preset_expands_and_claim_names_existing_settings(study, scale):
    spec, meta = load_preset(preset_path(study, scale))
    runs = expand(spec)
    labels = {setting_label(_flatten(canonical_dict(r.config)), meta["setting"]) for r in runs}
    labels |= set(stage_labels(meta))  # the settings a tune stage adds (reglab.reproduce_tune)
    for claim in parse_claims(meta):
        named = {*claim.a, *claim.b, *(x for x in (claim.a_minus, claim.b_minus) if x is not None)}
        assert named <= labels, (claim.id, named - labels, sorted(labels))
    # at least 3 seeds per setting; at cpu scale at least 5 (outcome claims need them)
    per_setting = pd.Series(
        [setting_label(_flatten(canonical_dict(r.config)), meta["setting"]) for r in runs]
    ).value_counts()
    assert per_setting.min() >= (5 if scale == "cpu" else 3)


def test_setting_label_defaults():
    row = {"regularizers.0.name": "l2", "data.per_class": float("nan")}
    assert setting_label(row, "{regularizers.0.name|none} {data.per_class|} x") == "l2  x"
    assert setting_label({}, "{regularizers.0.name|none}") == "none"
    assert setting_label({"optim.lr": 0.001}, "lr={optim.lr}") == "lr=0.001"


def _runs(values_a, values_b):
    rows = [{"setting": "A", "seed": i, "m": v} for i, v in enumerate(values_a)]
    rows += [{"setting": "B", "seed": i, "m": v} for i, v in enumerate(values_b)]
    return pd.DataFrame(rows)


def test_identical_seeds_have_exactly_zero_spread():
    """0.97 three times: pandas' std leaves ~1e-16 of rounding, which tables printed as
    '97 ± 3.38e-14'; the spread of identical values is exactly 0."""
    df = _runs([0.97, 0.97, 0.97], [0.5, 0.6, 0.7])
    assert float(df[df.setting == "A"]["m"].std(ddof=1)) != 0.0  # the rounding this guards against
    agg = aggregate_seeds(df, ["m"], by=["setting"]).set_index("setting")
    assert agg.loc["A", "m_std"] == 0.0 and agg.loc["A", "m_ci95"] == 0.0
    assert agg.loc["B", "m_std"] == pytest.approx(0.1)
    assert format_mean_ci(agg.loc["A", "m_mean"], agg.loc["A", "m_ci95"], 100) == "97.00 ± 0.00"
    from reglab.verdicts import Claim, judge

    claim = Claim.from_dict({"id": "c", "text": "t", "metric": "m", "a": "A", "b": "B"}, "claims.0")
    v = judge(claim, _runs([0.97, 0.97, 0.97], [0.87, 0.87, 0.87]))
    assert v.diff_lo == v.diff_hi == pytest.approx(0.1) and v.verdict == "reproduced"


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
        "analysis.spectra_every=1",  # spectral-energy curves for the page
    ]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "claim [nuclear-spectral-energy, mechanism] the nuclear-norm penalty" in r.output
    assert "paired by seed (n=3)" in r.output and "Holm" in r.output
    summary = (out / "sweeps" / "energy-quick.summary.md").read_text()
    assert "nuclear_norm" in summary and "[nuclear-accuracy, outcome]" in summary
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

    # The page: published from the stored runs, again with --no-train (nothing trains, same verdicts).
    pages = tmp_path / "pages"
    before = sorted(p.name for p in out.iterdir())
    r = CliRunner().invoke(cli, [*args, "--publish", str(pages), "--no-train"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == before
    page = (pages / "energy-quick.md").read_text()
    assert "| **nuclear-accuracy**:" in page and "97.30 % vs 96.90 %" in page
    assert "## How this was run" in page and "command: `" in page and "trained on: cpu float32" in page
    assert "| setting | seeds | test_acc (%) |" in page  # the settings table, as Markdown
    for fig in ("test_acc.png", "train_loss.png", "spectral_energy.png"):
        assert (pages / "energy-quick" / fig).stat().st_size > 1000
        assert f"(energy-quick/{fig})" in page
    index = (pages / "README.md").read_text()
    assert "[Study 2: spectral and path-energy penalties" in index and "(energy-quick.md)" in index
    assert "How to read a verdict" in index and "| study | budget | outcome claims | mechanism claims |" in index
    assert "## The preset: what it runs and what differs from the study" in page
    assert "> Study 2" in page  # the preset's header, quoted
    verdicts = json.loads((pages / "energy-quick.json").read_text())["verdicts"]
    assert len(verdicts) == 6 and all(v["verdict"] in page for v in verdicts)


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_runs_with_reglab_sweep(preset, tmp_path):
    """The README says to copy, edit and run a preset with `reglab sweep`: its reproduce: block is
    read by `reglab reproduce` only and left aside by a plain sweep."""
    from reglab.cli import cli

    r = CliRunner().invoke(cli, ["sweep", str(PRESET_DIR / preset), "--dry-run", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("sweep ") and " runs under " in r.output


# Every distinct setting of every paper preset (one seed) trains a few steps on tiny data limits,
# with its end-of-run analysis, so none can crash hours into a GPU run.
PAPER_SMOKE = [
    "train.iterations=2",
    "train.epochs=null",
    "train.batch_size=8",
    "train.eval_batch_size=64",
    "data.train_limit=64",
    "data.test_limit=32",
    "analysis.margin_limit=32",
]


def _paper_settings(study: str, scale: str = "paper") -> list:
    """One config per distinct setting of a paper (or cpu) preset, shrunk to the smoke budget."""
    from reglab.sweep.grid import sweep_overrides

    spec, _ = load_preset(preset_path(study, scale))
    for variant in spec.get("variants", []):  # the smoke budget replaces a variant's own budget
        for key in ("epochs", "iterations"):
            variant.get("train", {}).pop(key, None)
    spec = merge(spec, sweep_overrides(PAPER_SMOKE))
    seen, out = set(), []
    for r in expand(spec):
        d = canonical_dict(r.config)
        d.pop("seed")
        key = json.dumps(d, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        cfg = r.config
        data = cfg.data
        if data.per_class is not None:  # enough examples for the per-class subset (and its validation rest)
            data = data.model_copy(update={"train_limit": 30 * data.per_class})
        elif data.val_size is not None:
            data = data.model_copy(update={"val_size": 16})
        analysis = cfg.analysis
        if analysis.landscape is not None:
            small = analysis.landscape.model_copy(update={"resolution": 3, "examples": 8})
            analysis = analysis.model_copy(update={"landscape": small})
        out.append(cfg.model_copy(update={"device": "cpu", "data": data, "analysis": analysis}))
    assert out
    return out


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize(("study", "scale"), [(s, c) for s, c in PRESETS if c in ("cpu", "paper")])
def test_every_setting_of_the_paper_presets_starts_and_finishes(study, scale, real_data_dir, real_cifar_dir, tmp_path):
    import os

    from reglab.train import run

    if (study, scale) == ("energy", "cpu"):
        pytest.skip("energy's cpu scale is its paper preset")
    data_dir = f"{real_data_dir}{os.pathsep}{real_cifar_dir}"
    settings = _paper_settings(study, scale)
    for cfg in settings:
        res = run(cfg.model_copy(update={"output": str(tmp_path)}), data_dir=data_dir, progress=False)
        assert res.status in ("done", "diverged"), (study, res.path)
        assert res.summary["steps"] == 2


@pytest.mark.parametrize("scale", SCALES)
def test_pathprox_presets_run_the_studys_algorithm_with_the_improvement_beside(scale):
    """Study 4's code normalizes every unit at every step without compensation (seed-studies.md
    §4): the presets' study settings do exactly that; reglab's normalize-at-start is one named
    setting beside them, with plain SGD as in the study's configs."""
    spec, meta = load_preset(PRESET_DIR / f"pathprox_{scale}.yaml")
    for r in expand(spec):
        reg = r.config.regularizers[0]
        label = setting_label(_flatten(canonical_dict(r.config)), meta["setting"])
        assert r.config.optim.name == "sgd" and r.config.optim.momentum == 0.0
        if scale != "quick" and r.config.data.dataset == "mnist":  # the study's MNIST settings (§4.10)
            subset = r.config.data.per_class == 100
            assert reg.lam == 1e-4 and r.config.train.batch_size == 200, label
            assert r.config.optim.lr == (0.3 if subset else 0.1), label
            assert r.config.model.name == ("mlp_factorized" if subset else "mlp"), label
        extra = reg.model_extra or {}
        assert extra.get("compensate", False) is False  # the study never compensates
        if label.endswith("normalized-at-start"):
            assert extra["normalize_at_start"] is True and extra["algorithm"] == "prox"
        else:
            assert extra["normalize_at_start"] is False, label
    ids = [c.id for c in parse_claims(meta)]
    assert ids[0].startswith("subset-sparsity") and "full-mnist-objective" in ids


@pytest.mark.parametrize(
    "mean, half, text",
    [
        (27.7292, 4.456, "27.73 ± 4.5"),
        (1680.0, 160.0, "1680 ± 160"),  # not 1.6e+02
        (12345.6, 1234.0, "12,346 ± 1,200"),
        (28000.0, 0.0, "28,000 ± 0"),
        (0.005198, 0.000173, "0.005198 ± 0.00017"),
        (0.000153, 9.44e-05, "0.000153 ± 0.000094"),  # not 9.44e-05
        (0.005306, 0.00019999, "0.005306 ± 0.00020"),  # two digits also when rounding carries
        (4.998e-05, 4.2e-06, "(4.998 ± 0.42)e-05"),  # below 1e-4: one shared exponent
        (3.0, 0.0004, "3.00000 ± 0.00040"),  # the mean as precise as its interval (two digits)
        (2.031e-08, 4.1e-09, "(2.031 ± 0.41)e-08"),
        (float("nan"), 1.0, "-"),
    ],
)
def test_summary_numbers_use_one_format(mean, half, text):
    from reglab.report_table import format_mean_ci_sig

    assert format_mean_ci_sig(mean, half) == text


def test_summary_rows_come_in_the_reports_order():
    """Labels sort as text ("lam=0.0001" before "lam=1e-05"); the rows follow the config values,
    as the report lists settings (1e-05 before 0.0001, the unregularized run first)."""
    from reglab.reproduce import _in_report_order

    runs = pd.DataFrame(
        [
            {"setting": label, "seed": seed, "regularizers.0.lam": lam, "test_acc": 0.9 + 0.01 * seed}
            for label, lam in (("l2 lam=0.0001", 1e-4), ("l2 lam=1e-05", 1e-5), ("none", float("nan")))
            for seed in (0, 1)
        ]
    )
    agg = aggregate_seeds(runs, ["test_acc"], by=["setting"])
    assert list(agg["setting"]) == ["l2 lam=0.0001", "l2 lam=1e-05", "none"]
    assert list(_in_report_order(agg, runs)["setting"]) == ["none", "l2 lam=1e-05", "l2 lam=0.0001"]


def test_curve_figures_say_the_scale_they_drew(tmp_path):
    """A curve with a zero (path energy before the first step) cannot be drawn on a log axis; its
    caption must not claim one. Dotted measurement names stay as logged."""
    from reglab.publish import _curves_figure, _readable

    runs = pd.DataFrame({"run": ["a", "b"], "setting": ["x", "y"]})
    for run, values in (("a", [0.0, 5.0, 2.0]), ("b", [1.0, 0.5, 0.01])):
        (tmp_path / run).mkdir()
        rows = [
            {"epoch": e, "monitor.path_energy.energy_epoch": v, "train_loss": v + 1.0} for e, v in enumerate(values)
        ]
        (tmp_path / run / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _curves_figure(tmp_path, runs, "monitor.path_energy.energy_epoch", tmp_path / "m.png") == "linear"
    assert _curves_figure(tmp_path, runs, "train_loss", tmp_path / "l.png") == "log"
    assert _curves_figure(tmp_path, runs, "never_logged", tmp_path / "n.png") is None
    assert (tmp_path / "m.png").stat().st_size > 0
    assert _readable("monitor.path_energy.energy_epoch") == "monitor.path_energy.energy_epoch"
    assert _readable("test_acc") == "test acc"
