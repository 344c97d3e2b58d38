"""Run the benchmarks under bench/, each in its own process, and say which failed.

    python bench/run_all.py                             # every bench/bench_*.py, in name order
    python bench/run_all.py penalties loop              # just those ("bench_" and ".py" optional)
    python bench/run_all.py vectorized -- --threads 1   # arguments after -- go to the one named

Each benchmark runs as `python bench/bench_X.py` in a subprocess: its exit status or a crash
ends only itself, the others still run, and it sees only the arguments given after `--`. Each
writes its entries to the results file (see common.py); a benchmark that exits 0 without writing
an entry of this run counts as failed, and one that exits with common.SKIPPED_STATUS (nothing to
measure on this machine: bench_gpu.py without CUDA) as skipped. Before each benchmark (not in tiny mode, not with
--no-settle) the runner waits, at most SETTLE_MAX_S seconds, for the 1-minute load average to
fall to SETTLE_LOAD: the previous benchmark's own threads keep it above common.BUSY_LOAD for a
minute or two, and an entry that starts above it claims no target.

Exit status: 0 when every benchmark exited 0 and wrote entries or was skipped, 1 otherwise (after running all
of them), 2 for a usage error such as an unknown benchmark name.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import common

# Below common.BUSY_LOAD, leaving room for the benchmark's own start-up (imports) before it
# reads the load average.
SETTLE_LOAD = common.BUSY_LOAD - 0.1
SETTLE_MAX_S = 300


def parse(argv: list[str]) -> argparse.Namespace:
    forwarded: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, forwarded = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. penalties or bench_penalties")
    p.add_argument("--dir", type=Path, default=common.BENCH_DIR, help="folder of the bench_*.py scripts")
    p.add_argument("--no-settle", action="store_true", help="do not wait for the load average to fall")
    args = p.parse_args(argv)
    args.forwarded = forwarded
    available = sorted(q.stem for q in args.dir.glob("bench_*.py"))
    chosen = []
    for name in args.names:
        stem = name.removesuffix(".py")
        stem = stem if stem.startswith("bench_") else f"bench_{stem}"
        if stem not in available:
            p.error(f"unknown benchmark {name!r}; available: {', '.join(available) or 'none'} (in {args.dir})")
        chosen.append(stem)
    if forwarded and len(chosen) != 1:
        p.error("arguments after -- need exactly one named benchmark")
    args.benchmarks = list(dict.fromkeys(chosen)) or available
    return args


def settle() -> None:
    load = common.load1()
    if load <= SETTLE_LOAD:
        return
    print(f"waiting for the load average to fall to {SETTLE_LOAD:.2f} (now {load:.2f}, at most {SETTLE_MAX_S} s)")
    deadline = time.monotonic() + SETTLE_MAX_S
    while load > SETTLE_LOAD and time.monotonic() < deadline:
        time.sleep(5)
        load = common.load1()
    print(f"load average {load:.2f}", flush=True)


def fresh_entries(path: Path, run_id: str, benchmark: str) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [
        e
        for slot in data.get("machines", {}).values()
        for e in slot.get("benchmarks", [])
        if e.get("run_id") == run_id and e.get("benchmark") == benchmark
    ]


def main(argv: list[str]) -> int:
    args = parse(argv)
    run_id = os.environ.get(common.RUN_ID_ENV) or uuid.uuid4().hex[:12]
    path = common.results_path()
    env = {**os.environ, common.RUN_ID_ENV: run_id}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(common.BENCH_DIR), env.get("PYTHONPATH")) if p)
    print(f"run {run_id}: {', '.join(args.benchmarks)}; results in {path}" + (" (tiny mode)" if common.tiny() else ""))
    outcomes = []
    skipped: list[str] = []
    for name in args.benchmarks:
        if not (common.tiny() or args.no_settle):
            settle()
        print(f"\n=== {name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, str(args.dir / f"{name}.py"), *args.forwarded], env=env).returncode
        entries = fresh_entries(path, run_id, name)
        if rc == common.SKIPPED_STATUS and not entries:
            problem = None
            skipped.append(name)
        else:
            problem = f"exit status {rc}" if rc != 0 else ("wrote no entry" if not entries else None)
        outcomes.append((name, problem, time.perf_counter() - t0, entries))

    print(f"\n=== summary of run {run_id} ({path})")
    for name, problem, seconds, entries in outcomes:
        status = "FAILED: " + problem if problem else ("skipped (not for this machine)" if name in skipped else "ok")
        print(f"  {name:<24} {status:<30} {seconds:7.1f} s  {len(entries)} entries")
    written = [e for *_, es in outcomes for e in es]
    missed = [e["name"] for e in written if e.get("met") is False]
    unclaimed = [e for e in written if e.get("met") is None and (e.get("busy") or e.get("tiny"))]
    print(f"targets missed: {'; '.join(missed) or 'none'}")
    if unclaimed:
        print(f"{len(unclaimed)} entries claim no target (busy machine or tiny mode)")
    failed = [f"{name} ({problem})" for name, problem, *_ in outcomes if problem]
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
