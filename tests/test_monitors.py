"""analysis.monitors: penalties measured at every evaluation without entering the loss.

Checked against independent computations: a monitored nuclear norm against torch's singular
values of the logged run's own final weights, a monitored path energy against a plain loop that
sums the squared length of every update of the same run, monitors leave training untouched, they
survive an interrupted run, and bad monitors are refused naming the field."""

from __future__ import annotations

import itertools

import pytest
import torch
from click.testing import CliRunner

from helpers import _Fault, small_config
from reglab.cli import cli
from reglab.config import config_hash
from reglab.errors import ConfigError
from reglab.store import RunDir
from reglab.train import run

MONITORS = "analysis.monitors=[nuclear_norm, path_energy, {name: l2_mul, depth_normalization: geometric}]"


def _weights(path, which="final"):
    ck = torch.load(RunDir(path).ckpt(which), weights_only=True)
    return [v.double() for k, v in ck["model"].items() if k.endswith("weight")]


def test_monitors_record_the_penalties_of_a_baseline_run_and_change_nothing(tmp_path):
    plain = run(small_config(tmp_path / "plain"))
    mon = run(small_config(tmp_path / "mon", MONITORS))
    assert mon.hash != plain.hash  # what a run records is part of what it is
    # training is untouched: same losses step by step, same final metrics
    assert [r["loss"] for r in RunDir(mon.path).steps()] == [r["loss"] for r in RunDir(plain.path).steps()]
    evals = RunDir(mon.path).evals()
    assert [r["test_acc"] for r in evals] == [r["test_acc"] for r in RunDir(plain.path).evals()]
    last = evals[-1]
    ws = _weights(mon.path)
    nuclear = sum(float(torch.linalg.svdvals(w).sum()) for w in ws)
    assert last["monitor.nuclear_norm"] == pytest.approx(nuclear, rel=1e-5)
    sq = [float((w**2).sum()) for w in ws]
    assert last["monitor.l2_mul"] == pytest.approx((sq[0] * sq[1]) ** 0.5, rel=1e-5)  # geometric mean, 2 layers
    assert {"monitor.path_energy.energy_total", "monitor.path_energy.energy_epoch"} <= set(last)
    assert not any(k.startswith(("penalty.", "lam.")) for k in RunDir(mon.path).steps()[0])  # not in the loss


def test_a_path_energy_monitor_sums_every_update_of_the_run(tmp_path):
    # snapshots at every evaluation (= every step here) give the weights after each update
    cfg = small_config(
        tmp_path,
        "train.iterations=12",
        "train.eval_unit=iteration",
        "train.eval_every=1",
        "train.snapshot_every=1",
        "analysis.monitors=[path_energy]",
        "analysis.margins=false",
    )
    res = run(cfg)
    rd = RunDir(res.path)
    snaps = [_weights(res.path, f"snap_{s:08d}") for s in range(13)]
    updates = [sum(float(((b - a) ** 2).sum()) for a, b in zip(s0, s1)) for s0, s1 in itertools.pairwise(snaps)]
    totals = [r["monitor.path_energy.energy_total"] for r in rd.evals()]
    assert totals[0] == 0.0
    for k in range(1, 13):
        assert totals[k] == pytest.approx(sum(updates[:k]), rel=1e-5), k


def test_monitors_survive_an_interrupted_run(tmp_path):
    over = ["train.epochs=3", "regularizers=[{name: _test_fault, lam: 1.0}]", "analysis.monitors=[path_energy]"]
    ref = run(small_config(tmp_path / "ref", *over))
    _Fault.raise_at = 19  # after the checkpoint at the end of epoch 2
    cfg = small_config(tmp_path / "int", *over)
    try:
        with pytest.raises(RuntimeError, match="injected crash"):
            run(cfg)
    finally:
        _Fault.raise_at = None
    res = run(cfg)
    key = "monitor.path_energy.energy_total"
    assert [r[key] for r in RunDir(res.path).evals()] == [r[key] for r in RunDir(ref.path).evals()]


def test_no_monitors_keeps_the_hash_of_runs_made_before_monitors_existed(tmp_path):
    assert config_hash(small_config(tmp_path, "analysis.monitors=[]")) == config_hash(small_config(tmp_path))


@pytest.mark.parametrize(
    "value, message",
    [
        ("[gradient_norm]", "analysis.monitors.0.name: gradient_norm cannot be measured without a training batch"),
        ("[nuclear, l2]", "analysis.monitors.0.name: unknown regularizer 'nuclear'"),
        ("[l2, l2]", "analysis.monitors.1.name: l2 is monitored twice"),
        ("[{name: l2_mul, depth_normalization: cubic}]", "analysis.monitors.0.depth_normalization"),
    ],
)
def test_bad_monitors_are_refused_with_exit_status_2(tmp_path, value, message):
    out = tmp_path / "runs"
    args = ["train", "data.dataset=synthetic", "model.name=mlp", "train.epochs=1", f"analysis.monitors={value}"]
    res = CliRunner().invoke(cli, [*args, f"output={out}"])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_check_names_refuses_before_any_run(tmp_path):
    from reglab.validation import check_names

    with pytest.raises(ConfigError, match=r"analysis\.monitors\.0\.name"):
        check_names(small_config(tmp_path, "analysis.monitors=[jacobian_nuclear]"))
