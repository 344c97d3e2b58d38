"""reglab's public API for your own loops: the README's blocks run as written, terms by name,
their combination against hand computations, unit groups for plain modules, loading a run."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import reglab
from reglab.cli import cli

REPO = Path(__file__).resolve().parents[1]


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use reglab in your own code", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_loop_runs_as_written_and_autol2_moves_lam(tmp_path):
    loop, custom = readme_blocks()
    assert len([line for line in loop.splitlines() if line.strip()]) <= 26  # short enough to read
    probe = loop + "\nprint('LAMS', reg.lams, 'HISTORY', len(reg.terms[1].sched.history))\n"
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lams = re.search(r"LAMS \(([^,]+), ([^)]+)\) HISTORY (\d+)", r.stdout)
    assert lams and float(lams.group(1)) == 1e-4  # constant
    assert int(lams.group(3)) > 1  # AutoL2 measured (and logged) every 5 steps
    assert "pathprox.active_units_pct" in r.stdout and "l2_mul.rho" in r.stdout
    # the custom regularizer block registers a regularizer that then works in a config
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            custom + "\nfrom reglab.cli import cli\ncli(['train', 'data.dataset=synthetic', 'model.name=mlp',"
            " 'model.widths=[20,8,4]', 'train.epochs=1', 'train.progress=false',"
            " 'regularizers=[{name: abs_sum, lam: 0.01, scale: 2}]', 'output=runs'])",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/summary.json")]
    assert summary["status"] == "done" and "lam.abs_sum" in summary["final"]


def test_terms_by_name_combine_as_the_sum_of_lam_times_r():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    reg = reglab.Regularization.of(
        reglab.term("l2_mul", lam=0.3),
        reglab.term("l2", lam=0.2, roles=["weight", "bias"]),
        reglab.term("l2", lam=0.0),  # measured, never in the objective
    )
    assert [t.key for t in reg.terms] == ["l2_mul", "l2.1", "l2.2"]
    reg.setup(model)
    w1, b1, w2, b2 = (p.detach() for p in model.parameters())
    r_mul = w1.pow(2).sum() * w2.pow(2).sum()
    r_l2 = sum(p.pow(2).sum() for p in (w1, b1, w2, b2))
    torch.testing.assert_close(reg.penalty(model).detach(), 0.3 * r_mul + 0.2 * r_l2)
    values, weighted = reg.penalties(model, None)
    assert len(values) == 3 and len(weighted) == 2


def test_a_bad_name_or_option_names_the_argument():
    with pytest.raises(reglab.ConfigError) as e:
        reglab.term("l2_mull", lam=0.1)
    assert "l2_mull" in str(e.value) and "l2_mul" in str(e.value)
    with pytest.raises(reglab.ConfigError) as e:
        reglab.term("l2_mul", lam=0.1, depth_normalisation="geometric")
    assert "depth_normalisation" in str(e.value)
    with pytest.raises(reglab.ConfigError) as e:
        reglab.term("l2", lam=-1.0)
    assert e.value.field == "lam"


def test_declared_unit_groups_on_a_plain_sequential_and_on_any_module():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    reglab.declare_unit_groups(seq)
    from reglab.models import unit_groups

    (g,) = unit_groups(seq)
    assert g.inp is seq[1] and g.out is seq[3] and g.size == 5

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.fc2(self.fc1(x).relu())

    net = reglab.declare_unit_groups(Net(), pairs=[("fc1", "fc2")])
    import copy

    (g,) = unit_groups(copy.deepcopy(net))  # names survive a copy
    assert g.inp.weight.shape == (5, 6)
    # PathProx acts: with a huge threshold every unit's output weights v_j are thresholded to 0
    term = reglab.term("pathprox", lam=1e3)
    term.reg.setup(net)
    term.reg.prox(net, 1e3, 1.0)
    assert float(net.fc2.weight.detach().abs().sum()) == 0
    assert term.reg.report(net)["active_units_pct"] == 0
    with pytest.raises(ValueError, match="positively"):
        reglab.declare_unit_groups(nn.Sequential(nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 2)))
    with pytest.raises(ValueError, match="pairs"):
        reglab.declare_unit_groups(Net())


def test_load_run_gives_back_the_trained_model_and_its_metrics(tmp_path):
    over = ["data.dataset=synthetic", "model.name=mlp", "model.widths=[20,8,4]", "train.epochs=2"]
    r = CliRunner().invoke(cli, ["train", *over, "train.progress=false", f"output={tmp_path}"])
    assert r.exit_code == 0, r.output
    (run_dir,) = [p.parent for p in tmp_path.glob("*/DONE")]
    run = reglab.load_run(run_dir)
    assert not run.model.training and run.config.model.widths == [20, 8, 4]
    # independent check: the loaded weights reproduce the run's final test accuracy
    from reglab.data import build_task
    from reglab.evaluation import correct

    data = build_task(run.config.data, run_seed=run.config.seed, device=torch.device("cpu"), data_dir=None)
    with torch.no_grad():
        acc = float(correct(run.model(data.x_test), data.y_test, data.task)) / len(data.y_test)
    assert acc == pytest.approx(run.final["test_acc"], abs=1e-6)
    assert len(run.evals()) >= 2 and math.isfinite(run.steps()["loss"].iloc[-1])
    with pytest.raises(reglab.ConfigError.__mro__[1], match="no 'snapshot' checkpoint"):
        reglab.load_run(run_dir, checkpoint="snapshot")
    with pytest.raises(reglab.ConfigError.__mro__[1], match="not a run directory"):
        reglab.load_run(tmp_path)
