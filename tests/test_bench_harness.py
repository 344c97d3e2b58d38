"""The benchmark harness (bench/run_all.py, bench/common.py, bench/report.py) in tiny mode.

The benchmarks run for real but shrunk ($REGLAB_BENCH_TINY=1) and write to a results file in
tmp_path, never to the committed bench/results.json. Nothing here asserts a time.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import report  # noqa: E402
from bench_penalties import TINY_LABELS  # noqa: E402

BENCHMARKS = sorted(p.stem for p in BENCH.glob("bench_*.py"))


def harness_env(results: Path, run_id: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (common.RESULTS_ENV, common.RUN_ID_ENV, "REGLAB_DATA")}
    env.update({common.TINY_ENV: "1", common.RESULTS_ENV: str(results), common.RUN_ID_ENV: run_id})
    return env


def run_all(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), *args], env=env, capture_output=True, text=True, timeout=300
    )


def entries_of(results: Path) -> dict[str, list[dict]]:
    return {key: slot["benchmarks"] for key, slot in json.loads(results.read_text())["machines"].items()}


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def fresh(entries: list[dict], run_id: str, since: datetime.datetime) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in entries:
        if e.get("run_id") == run_id and datetime.datetime.fromisoformat(e["measured_at"]) >= since:
            out.setdefault(e["benchmark"], []).append(e)
    return out


def old_entry(name: str, group: str, machine: str) -> dict:
    return {"name": name, "group": group, "benchmark": "bench_" + group, "machine": machine, "value": 1.0}


@pytest.mark.slow
def test_make_bench_in_tiny_mode_writes_a_fresh_entry_for_every_benchmark(tmp_path):
    key = common.machine_info()["key"]
    other = "NVIDIA Some GPU + Other CPU x64"
    results = tmp_path / "results.json"
    seeded = {
        "schema": common.SCHEMA,
        "machines": {
            other: {"machine": {"key": other}, "benchmarks": [old_entry("gpu landscape", "landscape", other)]},
            key: {
                "machine": {"key": key},
                "benchmarks": [old_entry("stale", "landscape", key), old_entry("kept", "elsewhere", key)],
            },
        },
    }
    results.write_text(json.dumps(seeded))
    run_id, started = uuid.uuid4().hex, now()

    proc = run_all([], harness_env(results, run_id))

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tiny mode" in proc.stdout
    by_machine = entries_of(results)
    assert by_machine[other] == seeded["machines"][other]["benchmarks"]  # another machine's entries survive
    names = [e["name"] for e in by_machine[key]]
    assert "kept" in names and "stale" not in names  # a benchmark replaces only its own group
    written = fresh(by_machine[key], run_id, started)
    assert sorted(written) == BENCHMARKS
    for e in (e for es in written.values() for e in es):
        assert len(e["commit"]) == 40 and isinstance(e["dirty"], bool), e
        assert e["machine"] == key and isinstance(e["threads"], int) and e["threads"] >= 1
        assert isinstance(e["loadavg_start"], float) and isinstance(e["loadavg_end"], float)
        assert e["busy"] == (e["loadavg_start"] > common.BUSY_LOAD)
        assert e["tiny"] is True and e["met"] is None and "no target claimed" in e["note"]
        assert isinstance(e["value"], float) and e["unit"] in ("s", "ms")


def test_naming_one_benchmark_runs_just_that_one_without_passing_its_name_on(tmp_path):
    results = tmp_path / "results.json"
    run_id, started = uuid.uuid4().hex, now()

    proc = run_all(["penalties"], harness_env(results, run_id))

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = fresh(entries_of(results)[common.machine_info()["key"]], run_id, started)
    assert list(written) == ["bench_penalties"]
    # all of tiny mode's regularizers were measured: "penalties" was not read as a filter
    labels = {e["name"].split(" | ")[0] for e in written["bench_penalties"]}
    assert labels == TINY_LABELS


FAKE = {
    "bench_a_exits_3.py": "raise SystemExit(3)\n",
    "bench_b_crashes.py": "raise RuntimeError('boom')\n",
    "bench_c_writes.py": (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from common import Session, entry\n"
        "Path(os.environ['ARGV_FILE']).write_text(json.dumps(sys.argv[1:]))\n"
        "Session().write([entry('fake', 1.0, 2.0, 'half', 's', 'ratio <= 1', True)], 'fake')\n"
    ),
    "bench_d_writes_nothing.py": "pass\n",
}


def test_a_failing_benchmark_does_not_stop_the_others(tmp_path):
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    for name, text in FAKE.items():
        (bench_dir / name).write_text(text)
    results, argv_file = tmp_path / "results.json", tmp_path / "argv.json"
    env = {**harness_env(results, "run-1"), "ARGV_FILE": str(argv_file)}

    proc = run_all(["--dir", str(bench_dir)], env)

    assert proc.returncode == 1
    summary = proc.stdout.split("=== summary")[1]
    assert "bench_a_exits_3" in summary and "exit status 3" in summary
    assert "bench_b_crashes" in summary and "exit status 1" in summary
    assert "bench_d_writes_nothing" in summary and "wrote no entry" in summary
    assert [e["run_id"] for e in entries_of(results)[common.machine_info()["key"]]] == ["run-1"]  # c ran after a, b
    assert json.loads(argv_file.read_text()) == []

    proc = run_all(["--dir", str(bench_dir), "c_writes", "--", "--threads", "1"], {**env, common.RUN_ID_ENV: "run-2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bench_a_exits_3" not in proc.stdout
    assert json.loads(argv_file.read_text()) == ["--threads", "1"]

    proc = run_all(["--dir", str(bench_dir), "no_such_benchmark"], env)
    assert proc.returncode == 2 and "unknown benchmark 'no_such_benchmark'" in proc.stderr


def test_a_busy_or_tiny_entry_claims_no_target(monkeypatch):
    monkeypatch.delenv(common.TINY_ENV, raising=False)
    session = common.Session("bench_x")
    e = common.entry("x", 1.0, 2.0, "base", "s", "ratio <= 1", True)
    session.busy, session.tiny, session.loadavg_start = False, False, 0.1
    quiet = session.stamp(e, "x")
    assert quiet["met"] is True and "note" not in quiet
    session.busy, session.loadavg_start = True, 2.0
    busy = session.stamp(e, "x")
    assert busy["met"] is None and busy["busy"] is True and "no target claimed" in busy["note"]
    session.busy, session.tiny = False, True
    assert session.stamp(e, "x")["met"] is None


def test_readme_benchmark_table_is_generated_from_results_json():
    results = json.loads(common.COMMITTED_RESULTS.read_text())
    readme = report.README.read_text()
    start, end = report.region(readme)
    assert readme[start:end].strip("\n") == report.render(results), "run python bench/report.py"
    for slot in results["machines"].values():
        for e in slot["benchmarks"]:
            assert {"measured_at", "commit", "threads", "loadavg_start", "loadavg_end", "busy"} <= set(e), e["name"]
            assert e["measured_at"] is not None or e.get("legacy") is True, e["name"]
            assert e["met"] is None or not e["busy"], e["name"]
