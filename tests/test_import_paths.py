"""A config names the user's own model, dataset and regularizer by import path,
"module.path:attribute": they train like registered ones, bad paths stop with exit status 2 and a
message naming the field, and spawned sweep workers import the same module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from reglab.cli import cli
from reglab.regularizers import REGULARIZERS

# The three kinds, each following its registry's calling convention (README: "Your own models,
# datasets and regularizers"). The penalty, scale * sum |W| over the Linear weights, is easy to
# recompute from the saved weights.
USER_MODULE = """
import torch
from torch import nn

from reglab.data import DatasetSpec, RawSplits
from reglab.regularizers import Options, Regularizer


def make_net(cfg, input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 8), nn.ReLU(), nn.Linear(8, num_outputs))


def _read(where, cfg):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] > 0).long()
    return RawSplits(x[:64], y[:64], x[64:], y[64:], ["neg", "pos"], "generated")


my_task = DatasetSpec(
    name="my_task",
    description="5 Gaussian features, labelled by the sign of the first",
    mean=(0.0,),
    std=(1.0,),
    is_image=False,
    find=lambda data_dir: (None, "generated"),
    read=_read,
    needs_files=False,
)


class AbsSum(Regularizer):
    name = "abs_sum"

    class Options(Options):
        scale: float = 1.0

    def penalty(self, model, ctx):
        return self.options.scale * sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.Linear))

    @torch.no_grad()
    def report(self, model):
        return {"value": float(self.penalty(model, None))}
"""

MODULE = "userparts_import_paths"  # a name no installed package has
OWN = [
    f"data.dataset={MODULE}:my_task",
    f"model.name={MODULE}:make_net",
    f"regularizers=[{{name: '{MODULE}:AbsSum', lam: 0.01, scale: 2.0}}]",
    "train.batch_size=32",
    "train.epochs=2",
    "train.progress=false",
]


def write_module(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE}.py").write_text(USER_MODULE)
    (folder / "broken_at_import.py").write_text("x = 1 / 0\n")
    (folder / "needs_missing_dep.py").write_text("import no_such_dependency_reglab\n")
    return folder


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_module(tmp_path / "user")))
    yield
    for name in (MODULE, "broken_at_import", "needs_missing_dep"):
        sys.modules.pop(name, None)  # the next test imports its own copy


def penalty_by_hand(run_dir: Path, scale: float) -> float:
    state = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]
    return scale * sum(float(w.abs().sum()) for k, w in state.items() if k.endswith("weight"))


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "summary.json").is_file())


def test_own_model_dataset_and_regularizer_train_end_to_end(tmp_path, user_module):
    out = tmp_path / "runs"
    r = CliRunner().invoke(cli, ["train", *OWN, f"output={out}"])
    assert r.exit_code == 0, r.output
    (run,) = run_dirs(out)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["dataset"] == "my_task" and summary["data"]["num_train"] == 64
    assert summary["final"][f"{MODULE}:AbsSum.value"] == pytest.approx(penalty_by_hand(run, 2.0), rel=1e-5)


def test_an_import_path_resolves_to_the_object_without_registering_it(user_module):
    import userparts_import_paths as mod  # type: ignore[import-not-found]

    assert REGULARIZERS.get(f"{MODULE}:AbsSum") is mod.AbsSum
    assert f"{MODULE}:AbsSum" not in REGULARIZERS


@pytest.mark.parametrize(
    ("override", "field", "needle"),
    [
        ("model.name=no_such_module_reglab:make", "model.name", "cannot import module 'no_such_module_reglab'"),
        ("model.name=needs_missing_dep:make", "model.name", "No module named 'no_such_dependency_reglab'"),
        ("model.name=broken_at_import:make", "model.name", "ZeroDivisionError: division by zero (at "),
        (f"model.name={MODULE}:make_nett", "model.name", "has no attribute 'make_nett'"),
        ("model.name=:make_net", "model.name", "not an import path"),
        (f"model.name={MODULE}:AbsSum", "model.name", "not a model builder"),
        (f"data.dataset={MODULE}:make_net", "data.dataset", "not a reglab.data.DatasetSpec"),
        (
            f"regularizers=[{{name: '{MODULE}:make_net', lam: 0.1}}]",
            "regularizers.0.name",
            "not a subclass of reglab.regularizers.Regularizer",
        ),
        (f"regularizers=[{{name: '{MODULE}:AbsSum', lam: 0.1, scal: 2}}]", "regularizers.0.scal", "unknown option"),
        ("model.name=mlpp", "model.name", "module.path:attribute"),
    ],
)
def test_a_bad_import_path_is_refused_with_exit_status_2(tmp_path, user_module, override, field, needle):
    out = tmp_path / "runs"
    r = CliRunner().invoke(cli, ["train", *OWN, override, f"output={out}"])
    assert r.exit_code == 2, r.output
    (line,) = r.output.strip().splitlines()  # one line, naming the field
    assert line.startswith(f"error: {field}: ") and needle in line
    assert not out.exists() or not any(out.iterdir())


def test_a_sweep_dry_run_checks_import_paths_before_any_run(tmp_path, user_module):
    out = tmp_path / "runs"
    ok = CliRunner().invoke(cli, ["sweep", *OWN, "seed=0,1", "--dry-run", "--output", str(out)])
    assert ok.exit_code == 0 and "2 runs" in ok.output, ok.output
    bad = CliRunner().invoke(
        cli, ["sweep", *OWN, f"model.name={MODULE}:make_net,{MODULE}:nope", "--dry-run", "--output", str(out)]
    )
    assert bad.exit_code == 2 and "model.name" in bad.output and "'nope'" in bad.output
    assert not out.exists()


def test_two_spawned_workers_import_a_module_from_the_working_directory(tmp_path):
    """The console script makes its working directory importable (as `python -m` does), and
    spawned pool workers inherit that: the module is on no other path."""
    exe = Path(sys.executable).parent / "reglab"
    if not exe.exists():
        pytest.skip("console script not installed (pip install -e .)")
    work = write_module(tmp_path / "work")
    args = ["sweep", *OWN, "seed=0,1", "--jobs", "2", "--executor", "process", "--vectorize", "off"]
    p = subprocess.run(
        [str(exe), *args, "--output", "runs"], cwd=work, env=dict(os.environ), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout + p.stderr
    runs = run_dirs(work / "runs")
    assert len(runs) == 2
    for run in runs:
        final = json.loads((run / "summary.json").read_text())["final"]
        assert final[f"{MODULE}:AbsSum.value"] == pytest.approx(penalty_by_hand(run, 2.0), rel=1e-5)
