"""Trackers (reglab.tracking): what TensorBoard, W&B and MLflow hold for a run, read back with
each tracker's own reader, is the run's own logs, every step once, also across a kill and a
resume; a missing tracker package stops the command with exit status 2 and nothing written.

Nothing reaches the network: W&B runs offline, MLflow into a SQLite file under tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import SMALL, small_config
from reglab.config import config_hash
from reglab.errors import ConfigError
from reglab.observers import RunObserver, StopTraining
from reglab.store import RunDir
from reglab.tracking import switch_overrides
from reglab.tracking.base import scalars
from reglab.train import run
from reglab.validation import validate

TESTS = Path(__file__).resolve().parent
ALL = ["logging.tensorboard=true", "logging.wandb={}", "logging.mlflow={}"]
LONGER = ["train.epochs=4"]
"""8 steps an epoch: evaluations at steps 0, 8, 16, 24 and 32, a checkpoint at each."""


def _needs(*packages: str) -> None:
    for p in packages:
        pytest.importorskip(p, reason=f"{p} is in the test extra; install .[test]")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """W&B offline with every folder it writes under tmp_path; no MLflow server."""
    wb = tmp_path / "wandb-home"
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(wb))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ------------------------------------------------------------------ what each tracker holds
# Each reader returns {(kind, key, step): [values]}: kind "step" or "eval", key as in the run's
# logs. A value listed twice at one step is a step logged twice.


def expected(run_path: Path) -> dict[tuple[str, str, int], list[float]]:
    rd, out = RunDir(run_path), defaultdict(list)
    for kind, rows in (("step", rd.steps()), ("eval", rd.evals())):
        for row in rows:
            for key, value in scalars(row, kind).items():
                out[(kind, key.partition("/")[2], row["step"])].append(value)
    return dict(out)


def tensorboard_points(run_path: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    out = defaultdict(list)
    for tag in acc.Tags()["scalars"]:
        kind, _, key = tag.partition("/")
        if kind in ("step", "eval"):
            for e in acc.Scalars(tag):
                out[(kind, key, e.step)].append(e.value)
    return dict(out)


def wandb_points(run_path: Path) -> dict:
    from reglab.tracking.wandb_files import segments

    out = defaultdict(list)
    for seg in segments(run_path, run_path.name):
        for row in seg.history:
            for name, value in row.items():
                kind, _, key = name.partition("/")
                if kind in ("step", "eval"):
                    out[(kind, key, row["reglab/step"])].append(value)
    return dict(out)


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def mlflow_run(run_path: Path):
    client = mlflow_client(f"sqlite:///{run_path.parent.resolve()}/mlflow.db")  # the default store
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, filter_string=f"tags.`reglab.run_hash` = '{run_path.name}'")
    assert len(found) == 1, "one MLflow run per reglab run"
    return client, found[0]


def mlflow_points(run_path: Path) -> dict:
    client, r = mlflow_run(run_path)
    out = defaultdict(list)
    for name in r.data.metrics:
        kind, _, key = name.partition("/")
        if kind in ("step", "eval"):
            for m in client.get_metric_history(r.info.run_id, name):
                out[(kind, key, m.step)].append(m.value)
    return dict(out)


READERS = {"tensorboard": tensorboard_points, "wandb": wandb_points, "mlflow": mlflow_points}


def assert_holds_the_logs(points: dict, run_path: Path, float32: bool = False, skip: tuple[str, ...] = ()) -> None:
    """Every (kind, key, step) of the run's logs is held exactly once, with the log's value
    (TensorBoard stores float32), and nothing else is held."""
    want = expected(run_path)
    assert set(points) == set(want)
    twice = {k: v for k, v in points.items() if len(v) != 1}
    assert not twice, f"logged more than once: {sorted(twice)[:5]}"
    for k, (value,) in points.items():
        if k[1] in skip:
            continue
        if float32:
            assert value == pytest.approx(want[k][0], rel=1e-6, abs=1e-30), k
        else:
            assert value == want[k][0], k


# ------------------------------------------------------------------ config and switches


def test_logging_is_not_part_of_a_runs_identity(tmp_path):
    plain = small_config(tmp_path)
    tracked = small_config(tmp_path, *ALL, "logging.wandb.project=elsewhere")
    assert tracked.logging.tensorboard and tracked.logging.wandb and tracked.logging.wandb.project == "elsewhere"
    assert config_hash(tracked) == config_hash(plain)


def test_an_unknown_logging_key_names_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError) as e:
        small_config(tmp_path, "logging.wandb.projct=x")
    assert e.value.field == "logging.wandb.projct"
    assert "project" in (e.value.allowed or [])


def test_switches_set_single_keys_and_keep_a_configs_own_settings(tmp_path):
    base = small_config(tmp_path, "logging.mlflow.experiment=mine", "logging.mlflow.enabled=false").model_dump(
        mode="json"
    )
    from reglab.config import merge, parse_overrides

    cfg = validate(merge(base, parse_overrides(switch_overrides(True, "2024", True, "sqlite:////x/y.db"))))
    assert cfg.logging.tensorboard
    assert cfg.logging.wandb is not None and cfg.logging.wandb.project == "2024"  # a name, not a number
    m = cfg.logging.mlflow
    assert m is not None and m.enabled and m.experiment == "mine" and m.tracking_uri == "sqlite:////x/y.db"


# ------------------------------------------------------------------ one run, read back


def test_tensorboard_holds_the_runs_logs_config_and_final_metrics(tmp_path):
    _needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    res = run(small_config(tmp_path, "logging.tensorboard=true"))
    assert_holds_the_logs(tensorboard_points(res.path), res.path, float32=True)
    acc = EventAccumulator(str(res.path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    final = acc.Scalars("final/test_acc")
    assert [(e.step, e.value) for e in final] == [
        (res.summary["steps"], pytest.approx(res.summary["final"]["test_acc"]))
    ]
    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["optim.lr"].number_value == pytest.approx(0.1)
    assert hparams["reglab.run_hash"].string_value == res.hash


def test_wandb_offline_holds_the_runs_logs_config_and_final_metrics(tmp_path):
    _needs("wandb")
    from reglab.tracking.wandb_files import segments

    res = run(small_config(tmp_path, "logging.wandb={}", "name=mysweep"))
    assert_holds_the_logs(wandb_points(res.path), res.path)
    (seg,) = segments(res.path, res.hash)
    assert seg.path.parent.name.startswith("offline-run-") and seg.path.is_relative_to(res.path)
    assert seg.run["run_id"] == res.hash and seg.run["project"] == "reglab" and res.hash in seg.run["tags"]
    assert seg.run["name"].startswith("mysweep-") and seg.run["name"].endswith("-seed0")
    assert seg.run["group"] == seg.run["name"].removesuffix("-seed0")
    assert seg.run["config"]["optim"]["lr"] == 0.1 and seg.run["config"]["reglab"]["run_hash"] == res.hash
    assert seg.summary["status"] == "done" and seg.summary["final/test_acc"] == res.summary["final"]["test_acc"]
    assert seg.exit_code == 0
    assert [row["_step"] for row in seg.history] == list(range(len(seg.history)))


def test_mlflow_holds_the_runs_logs_params_and_final_metrics(tmp_path):
    _needs("mlflow", "sqlalchemy")
    res = run(small_config(tmp_path, "logging.mlflow={}", "name=mysweep"))
    assert_holds_the_logs(mlflow_points(res.path), res.path)
    client, r = mlflow_run(res.path)
    assert client.get_experiment(r.info.experiment_id).name == "mysweep"
    assert r.info.status == "FINISHED" and r.data.tags["reglab.status"] == "done"
    assert r.data.params["optim.lr"] == "0.1" and r.data.params["model.widths"] == "[20, 32, 4]"
    assert r.data.metrics["final/test_acc"] == res.summary["final"]["test_acc"]
    assert r.info.run_name.startswith("mysweep-") and r.data.tags["reglab.setting"] in r.info.run_name


# ------------------------------------------------------------------ resume: every step once


class StopAt(RunObserver):
    """Stops the run at its n-th evaluation (before the trackers see it: they come after)."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def on_evaluation(self, row: dict) -> None:
        self.seen += 1
        if self.seen == self.n:
            raise StopTraining("test")


def test_a_stopped_and_resumed_run_holds_every_step_once_in_each_tracker(tmp_path):
    """Stopped at the evaluation of step 16: the trackers hold step rows 0-15, the checkpoint is
    at step 8, so the resumed run reports steps 8-15 again."""
    _needs("tensorboard", "wandb", "mlflow", "sqlalchemy")
    from reglab.tracking.wandb_files import segments

    cfg = small_config(tmp_path, *ALL, *LONGER)
    assert run(cfg, observers=[StopAt(3)]).status == "stopped"
    held = wandb_points(tmp_path / config_hash(cfg))
    assert max(step for kind, _, step in held if kind == "step") == 15
    res = run(cfg)
    assert res.status == "done"
    for name, read in READERS.items():
        # W&B and MLflow keep the first start's rows 8-15: equal, but for their wall-clock time
        assert_holds_the_logs(read(res.path), res.path, float32=name == "tensorboard", skip=("time",))
    segs = segments(res.path, res.hash)
    assert [s.exit_code for s in segs] == [1, 0]  # the stopped start, then the finished one
    steps = [row["_step"] for s in segs for row in s.history]
    assert steps == list(range(len(steps)))  # W&B's own axis goes on across starts
    assert mlflow_run(res.path)[1].info.status == "FINISHED"


def test_trackers_switched_on_for_a_resumed_run_get_its_earlier_rows(tmp_path):
    _needs("tensorboard", "wandb", "mlflow", "sqlalchemy")
    assert run(small_config(tmp_path, *LONGER), observers=[StopAt(4)]).status == "stopped"
    res = run(small_config(tmp_path, *LONGER, *ALL))
    for name, read in READERS.items():
        assert_holds_the_logs(read(res.path), res.path, float32=name == "tensorboard")


KILLED = """
import os, sys
sys.path.insert(0, {tests!r})
from helpers import small_config
from reglab.observers import RunObserver
from reglab.train import run

class Kill(RunObserver):
    n = 0
    def on_evaluation(self, row):
        self.n += 1
        if self.n == 3:
            os._exit(9)  # no close, no flush: as a killed process

run(small_config({root!r}, *{overrides!r}), observers=[Kill()])
"""


@pytest.mark.slow
def test_a_killed_and_resumed_run_holds_every_step_once_in_each_tracker(tmp_path):
    _needs("tensorboard", "wandb", "mlflow", "sqlalchemy")
    overrides = [*ALL, *LONGER]
    script = textwrap.dedent(KILLED).format(tests=str(TESTS), root=str(tmp_path), overrides=overrides)
    # its own W&B service, as a killed process has: not this process's (WANDB_SERVICE)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 9, done.stderr
    res = run(small_config(tmp_path, *overrides))
    assert res.status == "done"
    for name, read in READERS.items():
        assert_holds_the_logs(read(res.path), res.path, float32=name == "tensorboard", skip=("time",))


def test_the_command_lines_switches_turn_the_trackers_on(tmp_path):
    _needs("tensorboard", "wandb", "mlflow", "sqlalchemy")
    from reglab.cli import cli
    from reglab.tracking.wandb_files import segments

    out, db = tmp_path / "out", tmp_path / "store" / "ml.db"
    switches = ["--tensorboard", "--wandb", "proj", "--mlflow-uri", f"sqlite:///{db}"]
    r = CliRunner().invoke(cli, ["train", *SMALL, f"output={out}", *switches])
    assert r.exit_code == 0, r.output
    (path,) = [p.parent for p in out.glob("*/DONE")]
    assert any((path / "tensorboard").glob("events.out.tfevents.*"))
    assert [s.run["project"] for s in segments(path, path.name)] == ["proj"]
    client = mlflow_client(f"sqlite:///{db}")
    (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert found.data.tags["reglab.run_hash"] == path.name and not (out / "mlflow.db").exists()


# ------------------------------------------------------------------ a missing package


def _without(monkeypatch, package: str) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))


@pytest.mark.parametrize(
    ("command", "switch", "extra"),
    [
        ("train", ["--wandb", "proj"], "wandb"),
        ("train", ["--tensorboard"], "tensorboard"),
        ("sweep", ["--mlflow"], "mlflow"),
    ],
)
def test_a_missing_tracker_package_is_one_error_naming_the_extra_and_nothing_is_written(
    tmp_path, monkeypatch, command, switch, extra
):
    from reglab.cli import cli

    _without(monkeypatch, extra)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, [command, *SMALL, f"output={out}", *switch])
    assert r.exit_code == 2, r.output
    assert f"logging.{extra}: needs the {extra} package" in r.output
    assert f"pip install 'reglab[{extra}]'" in r.output
    assert not out.exists() or not any(out.iterdir())


def test_the_python_api_refuses_a_missing_tracker_before_the_run_directory(tmp_path, monkeypatch):
    _without(monkeypatch, "tensorboard")
    cfg = small_config(tmp_path, "logging.tensorboard=true")
    with pytest.raises(ConfigError, match=r"reglab\[tensorboard\]"):
        run(cfg)
    assert not (tmp_path / config_hash(cfg)).exists()


def test_wandb_files_reader_stops_at_a_torn_record(tmp_path):
    """A killed process leaves a half-written last record: what came before it is read."""
    _needs("wandb")
    from reglab.tracking.wandb_files import read_segment, segments

    res = run(small_config(tmp_path, "logging.wandb={}"))
    (seg,) = segments(res.path, res.hash)
    data = seg.path.read_bytes()
    torn = tmp_path / "torn.wandb"
    torn.write_bytes(data[: len(data) * 2 // 3])
    part = read_segment(torn)
    assert 0 < len(part.history) < len(seg.history)
    assert part.history == seg.history[: len(part.history)]
    assert json.loads(json.dumps(part.run["config"])) == seg.run["config"]


def test_runs_of_a_vectorized_group_each_hold_their_logs_in_each_tracker(tmp_path):
    _needs("tensorboard", "wandb", "mlflow", "sqlalchemy")
    from reglab.sweep.grid import build_spec, expand
    from reglab.sweep.runner import run_sweep

    spec = build_spec(
        None,
        [
            *SMALL,
            "seed=0,1",
            "regularizers=[{name: l2, lam: 0.01}]",
            "logging.tensorboard=true",
            "logging.wandb={}",
            "logging.mlflow={}",
        ],
    )
    runs = expand(spec)
    res = run_sweep("grouped", tmp_path, spec, runs, live=False, vectorize="on")
    assert res.count("done") == 2
    for r in runs:
        path = tmp_path / r.hash
        assert RunDir(path).read_summary()["vectorized"]["group_size"] == 2
        assert_holds_the_logs(tensorboard_points(path), path, float32=True)
        assert_holds_the_logs(wandb_points(path), path)
        assert_holds_the_logs(mlflow_points(path), path)
        _client, found = mlflow_run(path)
        assert found.data.metrics["final/test_acc"] == RunDir(path).read_summary()["final"]["test_acc"]
