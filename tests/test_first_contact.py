"""What a researcher meets first: exit statuses a script can tell apart, tables that refuse what
cannot mean anything, landscapes that read the trained weights."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import SMALL, _Fault
from reglab.cli import DIVERGED_EXIT, cli
from reglab.errors import UserError
from reglab.landscape.grid import GridResult
from reglab.landscape.run_landscape import _center
from reglab.results import load_evals, load_runs
from reglab.train import run
from reglab.validation import load_config


def test_a_diverged_run_says_so_and_exits_3(tmp_path):
    _Fault.nan_at = 3
    try:
        r = CliRunner().invoke(
            cli, ["train", *SMALL, "regularizers=[{name: _test_fault, lam: 1.0}]", "--output", str(tmp_path)]
        )
    finally:
        _Fault.nan_at = None
    assert r.exit_code == DIVERGED_EXIT == 3
    assert "diverged" in r.output and "at step 3" in r.output
    assert "train_loss=" not in r.output  # no giant non-finite numbers printed as results


def test_tables_refuse_a_missing_root_and_read_one_run_directory(tmp_path):
    with pytest.raises(UserError, match="root"):
        load_runs(tmp_path / "nonexistent")
    res = run(load_config(None, [*SMALL, f"output={tmp_path}"]))
    assert list(load_runs(res.path)["run"]) == [res.path.name]
    ev = load_evals(res.path)
    assert len(ev) > 0 and set(ev["run"]) == {res.path.name}
    r = CliRunner().invoke(cli, ["runs", "--root", str(tmp_path / "nonexistent")])
    assert r.exit_code == 2 and "nonexistent" in r.output


def _grid(alphas, betas=None):
    shape = (len(alphas),) if betas is None else (len(betas), len(alphas))
    loss = np.arange(np.prod(shape), dtype=float).reshape(shape)
    return GridResult(
        np.asarray(alphas), None if betas is None else np.asarray(betas), loss, loss, 0, 0, "", 0.0, 1, False
    )


def test_the_landscape_center_is_the_trained_weights_or_nothing():
    odd = np.linspace(-1, 1, 5)
    assert _center(_grid(odd)) == 2.0
    assert _center(_grid(odd, np.linspace(-1, 1, 3))) == 1 * 5 + 2
    even = np.linspace(-1, 1, 4)  # steps over 0: no grid point is the trained weights
    assert _center(_grid(even)) is None
    assert _center(_grid(np.linspace(0, 2, 4))) == 0.0  # an asymmetric range that starts at 0


def test_no_landscape_around_a_diverged_run(tmp_path):
    _Fault.nan_at = 3
    try:
        res = run(load_config(None, [*SMALL, f"output={tmp_path}", "regularizers=[{name: _test_fault, lam: 1.0}]"]))
    finally:
        _Fault.nan_at = None
    assert res.status == "diverged"
    r = CliRunner().invoke(cli, ["landscape", str(res.path), "resolution=3"])
    assert r.exit_code == 2 and "diverged" in r.output and not (res.path / "analysis" / "landscape").exists()


@pytest.mark.parametrize(
    ("override", "field", "needle"),
    [
        ("data.binary_pair=[3,11]", "data.binary_pair", "class index 11 does not exist"),
        ("data.binary_pair=[3,3]", "data.binary_pair", "two different"),
        ("regularizers=[{name: l2, lam: 0.1, schedule: {name: autol2, factor: 0.5}}]", "factor", "must be"),
        ("regularizers=[{name: pathprox, lam: 0.1, algorithm: sgd}]", "regularizers.0.algorithm", "must be"),
        ("train.early_stopping.patience=0", "train.early_stopping.patience", "must be"),
        ("analysis.landscape={resolution: 100000}", "analysis.landscape.resolution", "GiB"),
    ],
)
def test_messages_speak_reglab_not_pydantic(tmp_path, override, field, needle):
    r = CliRunner().invoke(cli, ["train", "data.dataset=digits", override, "--output", str(tmp_path)])
    assert r.exit_code == 2
    line = r.output.strip()
    assert line.startswith(f"error: {field}") or field in line.split(":")[1], line
    assert needle in line and "Value error" not in line and "Input should be" not in line


def test_one_budget_rule_for_yaml_and_the_command_line(tmp_path):
    spec = tmp_path / "both.yaml"
    spec.write_text("train: {epochs: 3, iterations: 5}\n")
    yaml_error = CliRunner().invoke(cli, ["train", str(spec), "--output", str(tmp_path / "a")])
    cli_error = CliRunner().invoke(
        cli, ["train", "train.epochs=3", "train.iterations=5", "--output", str(tmp_path / "b")]
    )
    for r in (yaml_error, cli_error):
        assert r.exit_code == 2 and "give train.epochs or train.iterations, not both" in r.output
    # a later source replaces an earlier one's budget: the file says epochs, the command line iterations
    spec.write_text("train: {epochs: 3}\n")
    cfg = load_config(str(spec), ["train.iterations=5"])
    assert cfg.train.iterations == 5 and cfg.train.epochs is None


def test_command_line_overrides_win_over_every_variant(tmp_path):
    """A preset's variants set their own budgets; `train.iterations=3` on the command line must
    shorten all of them (it used to lose silently to each variant's own value)."""
    from reglab.reproduce import load_preset, preset_path
    from reglab.sweep import expand
    from reglab.sweep.grid import build_spec, with_overrides

    spec, _ = load_preset(preset_path("pathprox", "cpu"))
    runs = expand(with_overrides(spec, ["train.iterations=3", "seed=0"]))
    assert len(runs) == 4 and {r.config.train.iterations for r in runs} == {3}
    # a plain sweep file with variants, through the CLI's reader
    f = tmp_path / "s.yaml"
    f.write_text(
        "data: {dataset: synthetic}\nmodel: {name: mlp}\n"
        "variants:\n  - {optim: {lr: 0.1}, train: {epochs: 5}}\n  - {optim: {lr: 0.2}, train: {iterations: 50}}\n"
    )
    runs = expand(build_spec(str(f), ["train.epochs=1"]))
    assert sorted((r.config.optim.lr, r.config.train.epochs, r.config.train.iterations) for r in runs) == [
        (0.1, 1, None),
        (0.2, 1, None),
    ]
    # an axis on the command line is an axis in every variant
    runs = expand(build_spec(str(f), ["train.epochs=1", "optim.lr=0.3,0.4"]))
    assert sorted(r.config.optim.lr for r in runs) == [0.3, 0.4]  # the two variants now coincide


def test_a_reader_that_leaves_the_pipe_ends_reglab_quietly(tmp_path):
    import subprocess
    import sys

    seeds = ",".join(map(str, range(3000)))
    cmd = [sys.executable, "-m", "reglab.cli", "sweep", "--dry-run", "data.dataset=synthetic", f"seed={seeds}"]
    p = subprocess.Popen([*cmd, f"output={tmp_path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline().startswith(b"sweep sweep: 3000 runs")
    p.stdout.close()  # as `| head -1` does
    err = p.stderr.read()
    assert p.wait() == 141 and err == b"", err


def test_a_dry_run_shows_what_tells_variants_apart(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(
        "data: {dataset: synthetic}\nmodel: {name: mlp}\nseed: [0, 1]\n"
        "variants:\n  - {optim: {name: sgd}}\n  - {optim: {name: adam}}\n"
    )
    res = CliRunner().invoke(cli, ["sweep", str(f), "--dry-run", f"output={tmp_path / 'runs'}"])
    assert res.exit_code == 0, res.output
    lines = [line.split(None, 1)[1] for line in res.output.splitlines()[1:]]
    assert len(lines) == 4 and len(set(lines)) == 4, lines
    assert "seed=0  optim.name=sgd" in lines[0]


def test_an_inert_setting_is_said_once(tmp_path):
    """model.wn_g0 without weight_norm changes nothing it computes: a warning, not silence (not
    refused: such runs have their own hash since 0.1.0, and sweeps cross wn_g0 with weight_norm)."""
    out = tmp_path / "runs"
    r = CliRunner().invoke(cli, ["train", *SMALL, "model.wn_g0=1.5", "train.epochs=1", f"output={out}"])
    assert r.exit_code == 0 and r.stderr.count("model.wn_g0 has no effect without model.weight_norm") == 1
    r = CliRunner().invoke(
        cli, ["sweep", *SMALL, "model.wn_g0=1.5", "model.weight_norm=true,false", "--dry-run", f"output={out}"]
    )
    assert r.exit_code == 0 and "wn_g0" not in r.stderr  # crossed with weight_norm: meaningful
