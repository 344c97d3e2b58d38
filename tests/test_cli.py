"""The command line: training end to end, listings, and user errors (exit 2, nothing written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import SMALL
from reglab.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_train_then_runs_table_and_export(tmp_path):
    out = tmp_path / "runs"
    r = invoke("train", *SMALL, "--output", str(out), "optim.lr=0.05")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("done: ")
    [run_dir] = [p for p in out.iterdir() if p.is_dir()]
    assert (run_dir / "DONE").exists()
    r = invoke("runs", "--root", str(out), "--export", str(tmp_path / "t.csv"))
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "t.csv")
    assert df.loc[0, "optim.lr"] == 0.05 and df.loc[0, "run"] == run_dir.name


def test_yaml_config_with_nested_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: mlp\n  widths: [20, 16, 4]\ntrain:\n  epochs: 1\n")
    out = tmp_path / "runs"
    r = invoke("train", str(cfg), *SMALL[:5], "model.widths=[20,8,4]", "train.progress=false", "--output", str(out))
    assert r.exit_code == 0, r.output
    import json

    [run_dir] = list(out.iterdir())
    conf = json.loads((run_dir / "config.json").read_text())["config"]
    assert conf["model"]["widths"] == [20, 8, 4] and conf["train"]["epochs"] == 1


@pytest.mark.parametrize(
    "override, field, allowed",
    [
        ("optim.lr=-1", "optim.lr", "greater than 0"),
        ("optim.lrr=0.1", "optim.lrr", "lr"),
        ("model.name=resnet", "model.name", "mlp"),
        ("data.dataset=imagenet", "data.dataset", "mnist"),
        ("optim.name=lbfgs", "optim.name", "sgd"),
        ("regularizers=[{name: l3, lam: 1}]", "regularizers.0.name", "l2_mul"),
        ("regularizers=[{name: l2_mul, lam: 1, bogus: 2}]", "regularizers.0.bogus", "depth_normalization"),
        ("model.widths=[21,32,4]", "model.widths", "20"),
        ("train.batch_size=abc", "train.batch_size", "integer"),
        ("regularizers=[{name: jacobian_nuclear, lam: 1, split: 99}]", "regularizers.0.split", "1 <= split"),
        ("regularizers=[{name: l2_sum, lam: 1, roles: [bias]}]", "regularizers.0.roles", "weight"),
        ("regularizers=[{name: l2, lam: 1, schedule: {name: autol2, max_lam: 0.1}}]", "regularizers.0.lam", "[0, 0.1]"),
        (
            "regularizers=[{name: l2, lam: 0.001, schedule: {name: advance_l2, min_lam: 0.01}}]",
            "regularizers.0.lam",
            "[0.01, inf]",
        ),
    ],
)
def test_bad_input_one_message_exit_2_nothing_written(tmp_path, override, field, allowed):
    out = tmp_path / "runs"
    r = CliRunner().invoke(cli, ["train", *SMALL, "--output", str(out), override])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}"), r.output
    assert allowed in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_list_names():
    r = invoke("list", "models")
    assert r.exit_code == 0 and {"mlp", "hardernet", "vgg19", "autol2_convnet"} <= set(r.output.split())
    r = invoke("list", "datasets")
    assert {"mnist", "fashion_mnist", "cifar10", "digits", "synthetic"} <= set(r.output.split())
    r = invoke("list", "regularizers")
    assert {"l2", "l2_sum", "l2_mul", "pathprox", "nuclear_norm"} <= set(r.output.split())
    r = invoke("list", "schedules")
    assert {"constant", "autol2", "advance_l2"} <= set(r.output.split())


def test_data_command_lists_found_and_missing(tmp_path):
    r = invoke("data", "--data-dir", str(tmp_path))
    assert r.exit_code == 0
    assert "digits" in r.output and "found" in r.output and "missing" in r.output


def test_console_script_exit_status(tmp_path):
    exe = Path(sys.executable).parent / "reglab"
    if not exe.exists():
        pytest.skip("console script not installed (pip install -e .)")
    p = subprocess.run([str(exe), "train", "optim.lr=zero", "--output", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2 and "optim.lr" in p.stderr


def test_runs_by_setting_aggregates_seeds_sorts_and_names_the_best(tmp_path):
    """Two learning rates x three seeds: one row per rate, mean ± CI of test accuracy computed
    here from the runs' own final metrics, best first, and the best named."""
    import math

    from scipy import stats

    from reglab.results import load_runs

    out = tmp_path / "runs"
    r = CliRunner().invoke(cli, ["sweep", *SMALL, "optim.lr=0.01,0.3", "seed=0,1,2", f"output={out}", "-j", "1"])
    assert r.exit_code == 0, r.output
    df = load_runs(out)
    acc = {lr: df[df["optim.lr"] == lr]["test_acc"].to_numpy() for lr in (0.01, 0.3)}
    mean = {lr: v.mean() for lr, v in acc.items()}
    half = {lr: stats.t.ppf(0.975, 2) * v.std(ddof=1) / math.sqrt(3) for lr, v in acc.items()}
    top = max(mean, key=mean.get)
    args = ["runs", "--root", str(out), "--by-setting", "--sort", "test_acc", "--best", "test_acc"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "2 settings, mean ± 95% CI over seeds" in r.output
    body = [line for line in r.output.splitlines() if "│" in line and ("0.01" in line or "0.3" in line)]
    assert str(top) in body[0]  # best first
    assert f"{100 * mean[top]:.2f} ± {100 * half[top]:.2f}" in body[0]
    named = f"best by test_acc (highest): optim.lr={top}: {100 * mean[top]:.2f} ± {100 * half[top]:.2f} (n=3)"
    assert named in r.output
    # without --sort, settings come in the report's order
    from reglab.report.data import load_report_data

    report_order = [s.values["optim.lr"] for s in load_report_data(out).settings]
    r = CliRunner().invoke(cli, ["runs", "--root", str(out), "--by-setting"])
    rows = [line for line in r.output.splitlines() if "│" in line and ("0.01" in line or "0.3" in line)]
    assert [0.01 if "0.01" in row else 0.3 for row in rows] == report_order
    # the per-run table sorts too, with an explicit direction (lowest accuracy first here)
    r = CliRunner().invoke(cli, ["runs", "--root", str(out), "--sort", "test_acc:min"])
    assert r.exit_code == 0, r.output
    worst = df.loc[df["test_acc"].idxmin(), "optim.lr"]  # the run with the lowest accuracy
    first = next(line for line in r.output.splitlines() if "│" in line and ("0.01" in line or "0.3" in line))
    assert str(worst) in first
    # a metric with no obvious direction must say it; an unknown one is named
    r = CliRunner().invoke(cli, ["runs", "--root", str(out), "--best", "train_acc_gap"])
    assert r.exit_code == 2 and "--best: no finished run has 'train_acc_gap'" in r.output
    r = CliRunner().invoke(cli, ["runs", "--root", str(out), "--best", "epochs"])
    assert r.exit_code == 2 and "epochs:max or epochs:min" in r.output
