"""Shared benchmark helpers: timing, tiny mode, the results table and the results file.

Every entry compares a measured value with a baseline measured in the same run:
    {"name", "value", "baseline", "baseline_name", "ratio" (value / baseline), "unit",
     "target" (text), "met" (bool, or null when no target is claimed)}
and `Session.write` stamps it with where and how it was measured (see `Session.stamp`).

The results file (bench/results.json; $REGLAB_BENCH_RESULTS overrides it, and tiny mode writes
to a temporary file unless that variable is set) is keyed by machine, so a run on one machine
never erases another machine's entries, and a benchmark replaces only its own group's entries
under its own machine key:
    {"schema": 2,
     "machines": {"<machine key>": {"machine": {...machine_info()}, "benchmarks": [entries]}}}

Tiny mode ($REGLAB_BENCH_TINY=1) shrinks every benchmark to a few seconds of its real code path:
a smoke test of the harness, whose entries say `tiny: true` and claim no target.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from functools import cache
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "src"))

from reglab.runtime import cpu_model

COMMITTED_RESULTS = BENCH_DIR / "results.json"
SCHEMA = 2
RESULTS_ENV = "REGLAB_BENCH_RESULTS"
TINY_ENV = "REGLAB_BENCH_TINY"
RUN_ID_ENV = "REGLAB_BENCH_RUN_ID"
# 1-minute load average above which the machine counts as busy when a benchmark starts: its
# entries then claim no target (other processes on a small machine distort the timings by
# several times, see README "Benchmarks").
BUSY_LOAD = 0.5
# Exit status of a benchmark that has nothing to measure on this machine (bench_gpu.py without
# CUDA): run_all.py reports it as skipped, not failed, and it writes no entry. 77 is automake's
# status for a skipped test; no benchmark exits with it otherwise.
SKIPPED_STATUS = 77


# Overrides that leave a run only its training to time: no evaluation at step 0, training metrics
# on one example, no progress bar, no end-of-run analysis (bench_loop, bench_vectorized, bench_gpu).
TIMING_ONLY = [
    "train.eval_at_start=false",
    "train.eval_train_limit=1",
    "train.progress=false",
    "analysis.margins=false",
    "analysis.spectra=false",
    "analysis.sparsity=false",
]


def tiny() -> bool:
    return os.environ.get(TINY_ENV, "") not in ("", "0")


def results_path() -> Path:
    """$REGLAB_BENCH_RESULTS, else bench/results.json (a temporary file in tiny mode)."""
    override = os.environ.get(RESULTS_ENV)
    if override:
        return Path(override)
    if tiny():
        return Path(tempfile.gettempdir()) / "reglab-bench-tiny-results.json"
    return COMMITTED_RESULTS


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def mnist_data_dir() -> str | None:
    """$REGLAB_DATA when it holds MNIST, else None."""
    from reglab.data import resolve_data_dir

    d = os.environ.get("REGLAB_DATA")
    return d if d and (resolve_data_dir(d) / "mnist").exists() else None


def timeit(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeat` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def entry(
    name: str, value: float, baseline: float, baseline_name: str, unit: str, target: str, met: bool | None, **extra
) -> dict:
    return {
        "name": name,
        "value": value,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": value / baseline if baseline else None,
        "unit": unit,
        "target": target,
        "met": met,
        **extra,
    }


def machine_key(info: dict) -> str:
    """The hardware: CPU model and logical cores, and the CUDA device when there is one."""
    key = f"{info['cpu']} x{info['cpus']}"
    return f"{info['cuda']} + {key}" if info.get("cuda") else key


@cache
def machine_info() -> dict:
    import torch

    info = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    return {"key": machine_key(info), **info}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@cache
def commit() -> tuple[str | None, bool | None]:
    """(HEAD, whether src/ or bench/ differ from it); results.json itself does not count."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no", "--", "src", "bench", ":!bench/results.json")
    return head, bool(status) if status is not None else None


def read_results(path: Path) -> dict:
    if not path.exists():
        return {"schema": SCHEMA, "machines": {}}
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA:
        raise SystemExit(f"{path}: schema {data.get('schema')!r}, expected {SCHEMA}; convert it or remove it")
    return data


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class Session:
    """One benchmark process: records the load average when created (create it first thing)."""

    def __init__(self, benchmark: str | None = None):
        self.benchmark = benchmark or Path(sys.argv[0]).stem
        self.loadavg_start = load1()
        self.run_id = os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex[:12]
        self.tiny = tiny()
        self.busy = self.loadavg_start > BUSY_LOAD

    def stamp(self, e: dict, group: str) -> dict:
        import torch

        head, dirty = commit()
        e = {**e, "group": group, "benchmark": self.benchmark}
        e.setdefault("threads", torch.get_num_threads())
        e.update(
            measured_at=now_iso(),
            run_id=self.run_id,
            commit=head,
            dirty=dirty,
            machine=machine_info()["key"],
            loadavg_start=self.loadavg_start,
            loadavg_end=load1(),
            busy=self.busy,
            tiny=self.tiny,
        )
        notes = []
        if self.tiny:
            notes.append(f"tiny mode ({TINY_ENV}=1, sizes shrunk to a smoke test)")
        if self.busy:
            notes.append(f"machine busy (load average {self.loadavg_start:.2f} at start > {BUSY_LOAD})")
        if notes:
            e["met"] = None
            e["note"] = "; ".join(notes) + ": no target claimed"
        return e

    def write(self, entries: list[dict], group: str, subset: bool = False) -> list[dict]:
        """Replace `group`'s entries under this machine's key (other groups and machines are kept;
        with `subset`, only the group's entries of the same names); returns the entries as written."""
        path = results_path()
        stamped = [self.stamp(e, group) for e in entries]
        names = {e["name"] for e in stamped}
        info = machine_info()
        data = read_results(path)
        slot = data["machines"].setdefault(info["key"], {"machine": info, "benchmarks": []})
        slot["machine"] = info
        kept = [e for e in slot["benchmarks"] if e.get("group") != group or (subset and e["name"] not in names)]
        slot["benchmarks"] = kept + stamped
        data["machines"] = dict(sorted(data["machines"].items()))
        write_json(path, data)
        claim = "no target claimed" if self.tiny or self.busy else "targets claimed"
        print(f"wrote {len(stamped)} '{group}' entries for {info['key']} to {path} ({claim})")
        return stamped


def print_table(entries: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'benchmark':<44} {'value':>10} {'baseline':>10} {'ratio':>8} {'unit':>5}  target  met")
    for e in entries:
        ratio = f"{e['ratio']:.3f}" if e["ratio"] is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[e["met"]]
        print(
            f"{e['name']:<44} {e['value']:>10.4g} {e['baseline']:>10.4g} {ratio:>8} {e['unit']:>5}  "
            f"{e['target']}  {met}"
        )
    for note in dict.fromkeys(e["note"] for e in entries if e.get("note")):
        print(f"  ({note})")
