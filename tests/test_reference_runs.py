"""Every reference run (tests/reference_runs.py) retrained and compared with its recording
(tests/data/reference_runs.json): final metrics, summary fields, every logged step and every
evaluation. A refactor that is meant to compute the same thing must pass this unchanged; an
intended change of numbers is re-recorded (`.venv/bin/python tests/reference_runs.py`) and said
in CHANGELOG.md.

Exact or within 1e-6: on the machine that recorded (same torch and numpy builds, same CPU
capability and feature flags, one thread) a run is bit-for-bit repeatable, so every float must
be *equal*: the smallest change of computation (an operation reordered, a float64 sum made in
float32) shows. On another CPU, torch and its BLAS pick other kernels (AVX2 instead of AVX-512,
other blockings, FMA or not), so the last bits of a matmul or a reduction differ and grow over
the steps; there floats are compared within a relative 1e-6, which such differences stay under
on these short float32 runs and a real change of the computation does not. Integers, strings,
booleans and None are compared exactly everywhere, and so are types (an int that became a float
is a change of the files). NaN equals NaN; a missing or extra key is a change (a metric renamed).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

import reference_runs as ref

REL = 1e-6
MAX_REPORTED = 20


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    if not ref.DATA.is_file():
        pytest.fail(f"{ref.DATA} is missing: record it with .venv/bin/python tests/reference_runs.py")
    return json.loads(ref.DATA.read_text())


@pytest.fixture(scope="module")
def exact(recorded) -> bool:
    """True on the machine (and builds) that recorded: then floats must be equal."""
    return recorded["about"]["machine"] == ref.machine()


def differences(want: Any, got: Any, where: str, exact: bool, out: list[str]) -> list[str]:
    """Every way `got` differs from the recorded `want` (at most MAX_REPORTED are kept)."""
    if len(out) >= MAX_REPORTED:
        return out
    if type(want) is not type(got):
        out.append(f"{where}: recorded {want!r} ({type(want).__name__}), got {got!r} ({type(got).__name__})")
    elif isinstance(want, dict):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            out.append(f"{where}: keys missing {missing}, extra {extra}")
        for k in want:
            if k in got:
                differences(want[k], got[k], f"{where}.{k}", exact, out)
    elif isinstance(want, list):
        if len(want) != len(got):
            out.append(f"{where}: {len(want)} items recorded, {len(got)} now")
        for i, (w, g) in enumerate(zip(want, got)):
            differences(w, g, f"{where}[{i}]", exact, out)
    elif isinstance(want, float):
        if not floats_match(want, got, exact):
            out.append(f"{where}: recorded {want!r}, got {got!r}")
    elif want != got:
        out.append(f"{where}: recorded {want!r}, got {got!r}")
    return out


def floats_match(want: float, got: float, exact: bool) -> bool:
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if exact or math.isinf(want) or math.isinf(got):
        return want == got
    return abs(want - got) <= REL * max(abs(want), abs(got))


def assert_same(want: dict, got: dict, name: str, exact: bool) -> None:
    diffs = differences(want, got, name, exact, [])
    mode = "exactly (recording machine)" if exact else f"within rel {REL} (other machine or builds)"
    if diffs:
        pytest.fail(
            f"{name} no longer computes what was recorded, compared {mode}:\n  "
            + "\n  ".join(diffs)
            + "\nIf this change of numbers is intended, state it in CHANGELOG.md and re-record: "
            ".venv/bin/python tests/reference_runs.py",
            pytrace=False,
        )


def test_the_recording_is_of_these_configs(recorded):
    about = recorded["about"]
    assert re.fullmatch(r"[0-9a-f]{40}", about["commit"] or ""), about["commit"]
    assert about["machine"]["torch"]
    stale = "the reference configs changed since they were recorded: re-record (tests/reference_runs.py)"
    assert {k: v["overrides"] for k, v in recorded["runs"].items()} == ref.RUNS, stale
    assert {k: v["overrides"] for k, v in recorded["groups"].items()} == ref.GROUPS, stale


def test_every_regularizer_has_a_reference_run():
    from reglab.regularizers import REGULARIZERS
    from reglab.validation import load_config

    used = {r.name for overrides in ref.RUNS.values() for r in load_config(None, overrides).regularizers}
    missing = {n for n in REGULARIZERS.names() if not n.startswith("_")} - used
    assert not missing, f"no reference run for {sorted(missing)}: add one to tests/reference_runs.py and re-record"


@pytest.mark.parametrize("name", list(ref.RUNS))
def test_reference_run(tmp_path, recorded, exact, name):
    assert name in recorded["runs"], f"{name} was never recorded: re-record"
    assert_same(recorded["runs"][name], ref.train_run(name, tmp_path), f"runs.{name}", exact)


@pytest.mark.parametrize("name", list(ref.GROUPS))
def test_reference_group(tmp_path, recorded, exact, name):
    assert name in recorded["groups"], f"group {name} was never recorded: re-record"
    assert_same(recorded["groups"][name], ref.train_group_runs(name, tmp_path), f"groups.{name}", exact)
