"""The reliability contract: what a kill -9, a second process or a hostile file may do to a run.

Each scenario kills a training process at a chosen point (tests/kill_points.py patches the point
in a subprocess and SIGKILLs itself there), reruns the same config, and compares every file of
the run directory with an uninterrupted run's: the logs row for row (wall-clock fields aside), the
analysis, the summary and the set of files. Other scenario tests of the contract live beside the
code they exercise: sweeps killed mid-run and two sweeps on one root (test_sweep.py), interrupted
vectorized groups (test_vectorized.py), hostile pickles and corrupt files (test_data_readers.py,
test_store.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reglab.loop import OneModelStep
from reglab.store import RunDir
from reglab.train import run
from reglab.validation import load_config

HERE = Path(__file__).parent
# digits, batch 16: 94 steps an epoch; 3 epochs = 282 steps; evaluations (and resume checkpoints)
# at steps 94 and 188; per-step rows reach the disk every 50 steps; spectra every evaluation.
CONFIG = [
    "data.dataset=digits",
    "model.widths=[64,24,10]",
    "train.batch_size=16",
    "train.epochs=3",
    "optim.lr=0.05",
    "analysis.spectra_every=1",
    "regularizers=[{name: path_energy, lam: 0.01}]",
]
# Wall-clock fields, and the provenance record: a resumed run has one segment per start.
TIME_FIELDS = {"time", "wall_time", "trained_by"}


def _strip_times(x):
    if isinstance(x, dict):
        return {k: _strip_times(v) for k, v in x.items() if k not in TIME_FIELDS}
    if isinstance(x, list):
        return [_strip_times(v) for v in x]
    return x


def snapshot(run_dir: Path) -> dict[str, object]:
    """Every file of a run directory, comparable across runs: JSON and JSONL parsed with their
    wall-clock fields dropped, npz arrays as lists, other files as bytes; checkpoints by name."""
    out: dict[str, object] = {}
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file() or p.name == ".lock":
            continue
        rel = str(p.relative_to(run_dir))
        if p.suffix == ".pt":
            out[rel] = "checkpoint"
        elif p.suffix == ".jsonl":
            out[rel] = [_strip_times(json.loads(line)) for line in p.read_text().splitlines()]
        elif p.suffix == ".json":
            out[rel] = _strip_times(json.loads(p.read_text()))
            if rel == "config.json":
                out[rel]["config"].pop("output")  # the results root: differs by construction
        elif p.suffix == ".npz":
            with np.load(p) as z:
                out[rel] = {k: z[k].tolist() for k in z.files}
        else:
            out[rel] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("uninterrupted")
    res = run(load_config(None, [*CONFIG, f"output={root}", "train.progress=false"]))
    assert res.status == "done" and res.summary["steps"] == 282
    return snapshot(res.path)


def kill_then_rerun(tmp_path: Path, point: str, n: int, monkeypatch) -> tuple[RunDir, int]:
    """Kill a run at (point, n) in a subprocess, then rerun it here; returns the run directory and
    the number of training steps the rerun took."""
    p = subprocess.run(
        [sys.executable, str(HERE / "kill_points.py"), point, str(n), str(tmp_path), *CONFIG],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == -9, f"not killed at {point} {n}: rc {p.returncode}\n{p.stdout}\n{p.stderr[-2000:]}"
    steps = [0]
    original = OneModelStep.step

    def counting(self, *args):
        steps[0] += 1
        return original(self, *args)

    monkeypatch.setattr(OneModelStep, "step", counting)
    res = run(load_config(None, [*CONFIG, f"output={tmp_path}", "train.progress=false"]))
    assert res.status == "done"
    return RunDir(res.path), steps[0]


@pytest.mark.parametrize(
    ("point", "n", "replayed"),
    [
        ("step", 30, 282),  # before the first flush, before any checkpoint: starts over
        ("step", 120, 282 - 94),  # after the checkpoint at 94, before the next flush
        ("step", 160, 282 - 94),  # after the checkpoint at 94 and a flush of later steps (at 150)
        ("after_flush", 5, 282 - 188),  # rows up to step 237 on disk, checkpoint at 188
        ("in_checkpoint", 2, 282 - 94),  # the checkpoint at 188 half written: resumes from 94
        ("in_analysis", 1, 0),  # training finished: the rerun goes straight to the analysis
        ("before_done", 1, 0),  # everything written but DONE
    ],
    ids=["step30", "step120", "step160-after-flush", "after-flush5", "in-checkpoint2", "in-analysis", "before-done"],
)
def test_kill_then_rerun_gives_the_uninterrupted_files(tmp_path, monkeypatch, reference, point, n, replayed):
    rd, steps = kill_then_rerun(tmp_path, point, n, monkeypatch)
    got = snapshot(rd.path)
    assert sorted(got) == sorted(reference), "a file is missing or left over"
    for name in reference:
        assert got[name] == reference[name], f"{name} differs from the uninterrupted run's"
    assert steps == replayed, f"the rerun trained {steps} steps"


# ----------------------------------------------------------------------------- bad input and hostile files
# Each: one line on stderr naming the field or file and what to do, exit status 2, nothing written.


def cli(*args: str):
    from click.testing import CliRunner

    from reglab.cli import cli as reglab_cli

    return CliRunner().invoke(reglab_cli, list(args), catch_exceptions=False)


def one_line_error(r, *needles: str) -> str:
    assert r.exit_code == 2, r.output
    msg = r.stderr.strip() if hasattr(r, "stderr") else r.output.strip()
    assert msg.startswith("error: ") and "\n" not in msg, msg
    assert "Traceback" not in r.output
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


SMALL_RUN = ["data.dataset=digits", "model.widths=[64,8,10]", "train.epochs=1", "train.progress=false"]


@pytest.mark.parametrize("how", ["option", "config"])
def test_a_sweep_name_cannot_escape_the_results_root(tmp_path, how):
    root = tmp_path / "root"
    victim = tmp_path / "victim.json"
    victim.write_text('{"precious": true}')
    if how == "option":
        r = cli("sweep", *SMALL_RUN, "--name", "../../victim", "-o", str(root), "--dry-run")
    else:
        spec = tmp_path / "s.yaml"
        spec.write_text("name: ../../victim\ndata: {dataset: digits}\n")
        r = cli("sweep", str(spec), "-o", str(root), "--dry-run")
    one_line_error(r, "name", "letters")
    assert victim.read_text() == '{"precious": true}'
    assert files_under(root) == []


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb.append(f"{cur}: &{cur} [{', '.join('*' + prev for _ in range(10))}]")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(bomb) + "\n")
    assert len(p.read_bytes()) < 600  # 10^9 leaves once expanded
    r = subprocess.run(
        [sys.executable, "-m", "reglab.cli", "train", str(p), f"output={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "alias" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.lr=inf", "optim.lr"),
        ("optim.lr=1e400", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("train.epochs=1e400", "train.epochs"),
        ("regularizers=[{name: l2, lam: .inf}]", "regularizers.0.lam"),
        ("regularizers=[{name: pathprox, lam: 0.1, active_threshold: .inf}]", "active_threshold"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path, override, field):
    out = tmp_path / "out"
    r = cli("train", *SMALL_RUN, override, "--output", str(out))
    one_line_error(r, field, "finite")
    assert files_under(out) == []


def test_a_non_finite_sweep_value_is_refused(tmp_path):
    out = tmp_path / "out"
    r = cli("sweep", *SMALL_RUN, "optim.lr=0.1,1e400", "-o", str(out))
    one_line_error(r, "optim.lr", "finite")
    assert files_under(out) == []


def test_an_output_root_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = cli("train", *SMALL_RUN, "--output", str(blocker / "runs"))
    one_line_error(r, str(blocker))


def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path, monkeypatch):
    import errno

    from reglab import store

    real = store.atomic_write_bytes
    calls = [0]

    def full_disk(path, data, sync=True):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, sync)

    monkeypatch.setattr(store, "atomic_write_bytes", full_disk)
    out = tmp_path / "out"
    msg = one_line_error(cli("train", *SMALL_RUN, "--output", str(out)), "No space left on device")
    assert "rerun" in msg
    monkeypatch.setattr(store, "atomic_write_bytes", real)
    r = cli("train", *SMALL_RUN, "--output", str(out))
    assert r.exit_code == 0 and "done:" in r.output


def test_a_checkpoint_holding_a_foreign_pickle_is_refused_by_name(tmp_path):
    import torch

    from reglab.config import config_hash

    out = tmp_path / "out"
    rd = RunDir(out / config_hash(load_config(None, SMALL_RUN)))
    (rd.path / "checkpoints").mkdir(parents=True)
    # A reference to an arbitrary callable: what weights_only refuses, and what must never be loaded.
    torch.save({"step": 3, "model": print}, rd.ckpt("last"))
    msg = one_line_error(cli("train", *SMALL_RUN, "--output", str(out)), str(rd.ckpt("last")))
    assert "weights_only" not in msg


def test_run_files_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        res = run(load_config(None, [*SMALL_RUN, f"output={tmp_path}"]))
    finally:
        os.umask(old)
    for p in files_under(res.path):
        if p.name == ".lock":
            continue
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_landscape_sizes_are_bounded_before_any_allocation(tmp_path):
    out = tmp_path / "out"
    r = cli("train", *SMALL_RUN, "analysis.landscape={resolution: 100000}", "--output", str(out))
    one_line_error(r, "analysis.landscape.resolution", "GiB")
    assert files_under(out) == []


def test_damaged_run_directories_are_reported_and_left_out(tmp_path):
    from reglab.results import load_runs

    good = [run(load_config(None, [*SMALL_RUN, f"output={tmp_path}", f"seed={s}"])) for s in range(3)]
    edited, emptied = good[1].path / "config.json", good[2].path / "config.json"
    record = json.loads(edited.read_text())
    record["config"]["optim"]["lr"] = 0.5  # a hand edit: the run was trained with 0.1
    record["canonical"]["optim"]["lr"] = 0.5
    edited.write_text(json.dumps(record))
    emptied.write_text("")
    with pytest.warns(UserWarning) as caught:
        df = load_runs(tmp_path)
    assert list(df["run"]) == [good[0].path.name]
    said = " ".join(str(w.message) for w in caught)
    assert str(good[1].path) in said and "does not match" in said
    assert str(good[2].path) in said and "config.json" in said
    r = cli("runs", "--root", str(tmp_path))
    assert r.exit_code == 0 and good[0].path.name in r.output
    assert "damaged" in r.output and str(good[2].path) in r.output


def test_reglab_data_reports_a_truncated_file_as_damaged(tmp_path):
    from fixtures_data import make_mnist_arrays, write_mnist_folder

    folder = write_mnist_folder(tmp_path / "mnist", make_mnist_arrays(), gz=True)
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    r = cli("data", "--data-dir", str(tmp_path))
    assert r.exit_code == 0
    line = next(x for x in r.output.splitlines() if "mnist " in x and "fashion" not in x)
    assert "damaged" in line and "found" not in line


# ----------------------------------------------------------------------------- signals


def test_ctrl_c_stops_a_parallel_sweep_at_once_and_a_rerun_finishes_it(tmp_path):
    import os
    import signal
    import time

    root = tmp_path / "root"
    args = [
        sys.executable,
        "-m",
        "reglab.cli",
        "sweep",
        "data.dataset=digits",
        "model.widths=[64,64,10]",
        "train.batch_size=16",
        "train.epochs=15",
        "seed=0,1,2,3,4,5",
        "-j",
        "2",
        "-o",
        str(root),
        "--name",
        "ctrlc",
        "--vectorize",
        "off",
    ]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any(root.glob("*/steps.jsonl")):  # a run is training
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        time.sleep(0.5)
        signalled = time.time()
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Rerun the same command" in err
    assert "Traceback" not in err and "leaked" not in err, err
    finished_after = [d for d in root.glob("*/DONE") if d.stat().st_mtime > signalled]
    assert finished_after == [], "a run was started or finished after Ctrl-C"
    assert len([d for d in root.glob("*/DONE")]) < 6
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(root.glob("*/DONE"))) == 6
    for d in root.glob("*/steps.jsonl"):
        steps = [json.loads(line)["step"] for line in d.read_text().splitlines()]
        assert steps == list(range(len(steps))), f"{d}: a step row lost or doubled"


# ----------------------------------------------------------------------------- stale results and provenance


def test_runs_computed_by_an_older_reglab_are_flagged_and_rerun_on_request(tmp_path, monkeypatch):
    from reglab import provenance

    args = ["sweep", *SMALL_RUN, "seed=0,1", "-o", str(tmp_path), "--name", "s", "--vectorize", "off", "-j", "1"]
    assert cli(*args).exit_code == 0
    monkeypatch.setattr(provenance, "COMPUTE_VERSION", provenance.COMPUTE_VERSION + 1)  # a later reglab
    r = cli("runs", "--root", str(tmp_path))
    assert "older reglab" in r.output and "--rerun-stale" in r.output
    r = cli(*args)
    assert r.exit_code == 0 and "reused" in r.output
    r = cli(*args, "--rerun-stale")
    assert r.exit_code == 0 and "trained again" in r.output
    assert len(list((tmp_path / "stale").iterdir())) == 2
    r = cli("runs", "--root", str(tmp_path))
    assert r.exit_code == 0 and "older reglab" not in r.output


def test_every_run_records_what_trained_it(tmp_path):
    from reglab.sweep import expand, run_sweep
    from reglab.validation import load_config as lc

    spec = {"data": {"dataset": "digits"}, "model": {"widths": [64, 8, 10]}, "train": {"epochs": 1}, "seed": [0, 1]}
    runs = expand(spec)
    run_sweep("v", tmp_path / "vec", spec, runs, live=False, vectorize="on")
    one = run(lc(None, [*SMALL_RUN, f"output={tmp_path / 'one'}"]))
    for rd in [RunDir(tmp_path / "vec" / r.hash) for r in runs]:
        (seg,) = rd.read_summary()["trained_by"]
        assert seg["path"] == "vectorized" and seg["group_size"] == 2 and seg["from_step"] == 0
    (seg,) = one.summary["trained_by"]
    assert seg["path"] == "one-by-one" and seg["group_size"] == 1
    assert seg["device"] == "cpu" and seg["dtype"] == "float32" and seg["torch"] and seg["reglab"]
    assert seg["threads"] == torch.get_num_threads()


def test_any_run_of_a_sweep_can_be_reproduced_exactly(tmp_path):
    """One-by-one runs: `reglab train --from RUN_DIR -o NEW`; vectorized runs: the same sweep in a
    new root (the plan, hence each group, is the same). Both give identical files."""
    sweep = ["sweep", *SMALL_RUN, "optim.momentum=0.9", "seed=0,1,2", "--name", "s", "-j", "1"]
    assert cli(*sweep, "-o", str(tmp_path / "a"), "--vectorize", "on").exit_code == 0
    assert cli(*sweep, "-o", str(tmp_path / "b"), "--vectorize", "on").exit_code == 0
    runs = [p.parent for p in (tmp_path / "a").glob("*/DONE")]
    assert len(runs) == 3
    for a in runs:
        assert snapshot(a) == snapshot(tmp_path / "b" / a.name)
        assert RunDir(a).read_summary()["trained_by"][0]["path"] == "vectorized"
    one = run(load_config(None, [*SMALL_RUN, f"output={tmp_path / 'one'}", "optim.momentum=0.9"]))
    r = cli("train", "--from", str(one.path), "--output", str(tmp_path / "again"))
    assert r.exit_code == 0, r.output
    assert snapshot(one.path) == snapshot(tmp_path / "again" / one.path.name)


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("model.widths=[64,1000000000,10]", ("model", "parameters", "GiB")),
        ("data.synthetic.n_train=100000000000", ("data.synthetic.n_train", "GiB")),
    ],
)
def test_sizes_that_cannot_fit_are_refused_before_allocation(tmp_path, override, needles):
    out = tmp_path / "out"
    dataset = "data.dataset=synthetic" if "synthetic" in override else "data.dataset=digits"
    r = cli("train", dataset, override, "--output", str(out))
    one_line_error(r, *needles)
    assert files_under(out) == []
