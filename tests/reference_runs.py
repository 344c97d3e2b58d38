"""Reference runs: small trainings whose every number is pinned in tests/data/reference_runs.json.

A change of the training code that is meant to compute the same thing (a refactor of the step,
of the vectorized trainer, of the logging) must leave these numbers as they are;
tests/test_reference_runs.py retrains every run and compares. When a change of numbers *is*
intended, say so in the CHANGELOG and re-record from a committed state:

    .venv/bin/python tests/reference_runs.py

This module is not collected by pytest (no test_ prefix); the test imports it.

What is covered: one run per registered regularizer (its row in tests/regularizer_cases.py),
both lambda schedules (autol2, advance_l2), learning-rate schedules (cosine by iteration,
multistep by epoch), an iteration budget with evaluations by iteration, and
vectorized groups (train_group: three runs differing in seed, lr and lambda) for a few
regularizers that vectorize. Each run records the final metrics (summary.json `final`), a few
summary fields, every row of steps.jsonl and every row of evals.jsonl (wall-clock `time`
left out). Floats are written as JSON keeps them: repr, so exactly.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regularizer_cases import REGULARIZER_CASES

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "reference_runs.json"

# The base of every run: synthetic data, a 3-layer MLP, 8 steps an epoch. Written out rather than
# taken from helpers.SMALL: the recorded numbers must not move when other tests' config does.
# Every config states its budget itself (train.epochs or train.iterations: one source may not
# give both).
BASE = [
    "data.dataset=synthetic",
    "data.synthetic.n_train=256",
    "data.synthetic.n_test=128",
    "data.synthetic.dim=20",
    "data.synthetic.classes=4",
    "model.name=mlp",
    "model.widths=[20,32,16,4]",
    "optim.lr=0.1",
    "train.batch_size=32",
    "train.progress=false",
    "device=cpu",
]
TWO_EPOCHS = "train.epochs=2"
# Analysis of the final network (margins, spectra, sparsity) is on in the one-by-one runs: its
# numbers join `final`. The groups leave it out (it is the same code as one by one).
NO_ANALYSIS = ["analysis.margins=false", "analysis.spectra=false", "analysis.sparsity=false"]


def _one(*extra: str) -> list[str]:
    return [*BASE, *extra]


# name -> the overrides of one run, trained by reglab.train.run.
RUNS: dict[str, list[str]] = {
    "none": _one(TWO_EPOCHS, "optim.momentum=0.9"),
    # every registered regularizer, as its row in tests/regularizer_cases.py says
    **{
        name: _one(
            TWO_EPOCHS,
            *case.overrides,
            *([f"optim.lr={case.lr!r}"] if case.lr != 0.1 else []),  # BASE's lr is 0.1
            f"regularizers=[{case.with_lam(case.lam)}]",
        )
        for name, case in REGULARIZER_CASES.items()
    },
    "pathprox_weight_decay": _one(
        TWO_EPOCHS, "optim.momentum=0.9", "regularizers=[{name: pathprox, lam: 0.05, algorithm: weight_decay}]"
    ),
    # a square layer (32 x 32): its term is the symmetric part's |eigenvalues|, not singular values
    "spectral_energy": _one(
        TWO_EPOCHS, "model.widths=[20,32,32,4]", "regularizers=[{name: spectral_energy, lam: 0.01}]"
    ),
    # lambda schedules: lambda must move within the run (record() checks that it does); here
    # AutoL2 lowers lambda down to its bound, AdvanceL2 lowers and raises it
    "autol2": _one(
        "train.epochs=4",
        *NO_ANALYSIS,
        "regularizers=[{name: l2, lam: 0.01, schedule: {name: autol2, every: 2, delay: 0.0, min_lam: 1.0e-5}}]",
    ),
    "advance_l2": _one(
        "train.epochs=4",
        *NO_ANALYSIS,
        "regularizers=[{name: l2, lam: 0.01, schedule: {name: advance_l2, every: 2, delay: 0.0}}]",
    ),
    # learning-rate schedules; two regularizers in one run
    "lr_cosine_iteration": _one(
        "train.epochs=3",
        *NO_ANALYSIS,
        "lr_schedule.name=cosine",
        "lr_schedule.unit=iteration",
        "regularizers=[{name: l2, lam: 0.001}, {name: decoupled_weight_decay, lam: 0.01}]",
    ),
    "lr_multistep_epoch": _one(
        "train.epochs=4",
        *NO_ANALYSIS,
        "optim.momentum=0.9",
        "lr_schedule.name=multistep",
        "lr_schedule.milestones=[1,3]",
        "lr_schedule.gamma=0.2",
    ),
    # an iteration budget that ends mid-epoch, evaluated by iteration
    "iterations": _one(
        "train.iterations=20",
        *NO_ANALYSIS,
        "train.eval_unit=iteration",
        "train.eval_every=6",
        "regularizers=[{name: frobenius, lam: 0.01}]",
    ),
}

# (seed, lr factor, lam) of the three runs of every group: lambda 0 included.
GROUP_VARIANTS = [(0, 1.0, 3e-3), (1, 0.5, 3e-2), (2, 1.0, 0.0)]

# name -> (base lr, overrides) of a group whose three runs (GROUP_VARIANTS; LAM stands for the
# variant's lambda) train together by reglab.vectorized.train_group; the test checks that
# plan_groups makes them one group. SGD, SGD with momentum and Adam are spread over them.
GROUP_COMMON: dict[str, tuple[float, list[str]]] = {
    "l2": (0.1, ["regularizers=[{name: l2, lam: LAM}]"]),
    "l2_mul": (0.01, ["optim.name=adam", "regularizers=[{name: l2_mul, lam: LAM}]"]),
    "nuclear_norm": (0.1, ["optim.momentum=0.9", "regularizers=[{name: nuclear_norm, lam: LAM}]"]),
    "path_energy": (0.1, ["optim.momentum=0.9", "regularizers=[{name: path_energy, lam: LAM}]"]),
    "pathprox": (0.1, ["regularizers=[{name: pathprox, lam: LAM}]"]),
}


def _group(lr: float, common: list[str]) -> list[list[str]]:
    return [
        [
            *BASE,
            TWO_EPOCHS,
            *NO_ANALYSIS,
            f"seed={seed}",
            f"optim.lr={lr * factor!r}",
            *[c.replace("LAM", repr(lam)) for c in common],
        ]
        for seed, factor, lam in GROUP_VARIANTS
    ]


GROUPS: dict[str, list[list[str]]] = {name: _group(lr, common) for name, (lr, common) in GROUP_COMMON.items()}

# Runs that must see lambda change (otherwise they would not test their schedule).
LAMBDA_MUST_MOVE = ("autol2", "advance_l2")

# summary.json fields recorded besides `final` (wall time, device and versions are left out).
SUMMARY_FIELDS = (
    "status",
    "steps",
    "epochs",
    "steps_per_epoch",
    "diverged_step",
    "stopped_early",
    "stop_reason",
    "restored_best",
    "best_step",
    "best_metric",
    "best_value",
    "num_params",
)
UNTIMED = ("time",)  # wall-clock fields of the logs, never compared
THREADS = 1  # recorded and retrained on one thread: a thread count can change reduction order


# ----------------------------------------------------------------------------- machine


def cpu_flags_digest() -> str | None:
    """A short digest of the CPU's feature flags (/proc/cpuinfo), None where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return hashlib.sha256(" ".join(sorted(value.split())).encode()).hexdigest()[:16]
    return None


def machine() -> dict[str, Any]:
    """What decides whether the same code gives bit-identical floats here and where recorded."""
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags_sha256_16": cpu_flags_digest(),
        "platform_machine": platform.machine(),
        "threads": THREADS,
    }


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    return out.stdout if out.returncode == 0 else ""


def provenance() -> dict[str, Any]:
    """The commit of the reglab that was imported (it may not be this file's checkout: recording
    from a clean clone puts its src/ first on PYTHONPATH), and its uncommitted changes to src/."""
    import reglab

    repo = Path(reglab.__file__).resolve().parents[2]
    return {
        "commit": _git(repo, "rev-parse", "HEAD").strip() or None,
        "src_modified": _git(repo, "status", "--porcelain", "--", "src").splitlines(),
        "reglab_version": reglab.__version__,
        "python": platform.python_version(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@contextmanager
def pinned_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ----------------------------------------------------------------------------- training


def _planned(overrides: list[str]):
    from reglab.config import config_hash
    from reglab.sweep.grid import PlannedRun
    from reglab.validation import load_config

    cfg = load_config(None, overrides)
    return PlannedRun(cfg, config_hash(cfg))


def _rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in UNTIMED} for r in rows]


def _outcome(path: Path) -> dict[str, Any]:
    from reglab.store import RunDir

    rd = RunDir(path)
    summary = rd.read_summary()
    return {
        "final": summary["final"],
        "summary": {k: summary.get(k) for k in SUMMARY_FIELDS},
        "steps": _rows(rd.steps()),
        "evals": _rows(rd.evals()),
    }


def train_run(name: str, root: Path) -> dict[str, Any]:
    """Train reference run `name` into root and return what is recorded of it."""
    from reglab.train import run

    with pinned_threads():
        res = run(_planned(RUNS[name]).config, root=root, progress=False)
    return {"overrides": RUNS[name], **_outcome(res.path)}


def check_one_group(runs: list) -> None:
    """The runs must form one vectorized group, or the group would silently train one by one."""
    from reglab.vectorized import plan_groups

    groups, singles = plan_groups(runs)
    if not (len(groups) == 1 and len(groups[0]) == len(runs) and not singles):
        raise AssertionError(f"not one vectorized group: {[w for _, w in singles]}")


def train_group_runs(name: str, root: Path) -> dict[str, Any]:
    """Train reference group `name` together into root and return what is recorded of it."""
    from reglab.vectorized import train_group

    runs = [_planned(o) for o in GROUPS[name]]
    check_one_group(runs)
    with pinned_threads():
        res = train_group(runs, root)
    bad = [r for r in res if r["status"] != "done"]
    if bad:
        raise AssertionError(f"group {name}: {bad}")
    return {"overrides": GROUPS[name], "runs": [_outcome(root / r.hash) for r in runs]}


def _check_lambda_moves(name: str, rec: dict[str, Any]) -> None:
    lams = {v for row in rec["steps"] for k, v in row.items() if k.startswith("lam.")}
    if len(lams) < 2:
        raise AssertionError(f"{name}: lambda never changed; the run would not test its schedule")


def record(path: Path = DATA) -> dict[str, Any]:
    """Train every reference run and group and write what they computed to `path`."""
    out: dict[str, Any] = {
        "about": {
            **provenance(),
            "machine": machine(),
            "written_by": "tests/reference_runs.py (re-record only for a change of numbers stated in CHANGELOG.md)",
        },
        "runs": {},
        "groups": {},
    }
    with tempfile.TemporaryDirectory(prefix="reglab-reference-") as tmp:
        for name in RUNS:
            t = time.process_time()
            out["runs"][name] = train_run(name, Path(tmp) / "runs")
            print(f"run {name}: {time.process_time() - t:.1f} s cpu", flush=True)
        for name in GROUPS:
            t = time.process_time()
            out["groups"][name] = train_group_runs(name, Path(tmp) / "groups" / name)
            print(f"group {name}: {time.process_time() - t:.1f} s cpu", flush=True)
    for name in LAMBDA_MUST_MOVE:
        _check_lambda_moves(name, out["runs"][name])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, sort_keys=True, indent=1) + "\n")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
    about = record(target)["about"]
    print(f"wrote {target} (commit {about['commit']}, torch {about['machine']['torch']})")
    if about["src_modified"]:
        print(f"note: recorded with uncommitted changes to src/: {about['src_modified']}")
