"""Shared benchmark helpers: timing, the results table and bench/results.json.

Every entry compares a measured value with a baseline measured in the same run:
    {"name", "value", "baseline", "baseline_name", "ratio" (value / baseline), "unit",
     "target" (text), "met" (bool or null)}
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results.json"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


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


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def write_results(entries: list[dict], group: str) -> None:
    """Merge this benchmark's entries into bench/results.json (other groups are kept)."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"benchmarks": []}
    data["benchmarks"] = [e for e in data["benchmarks"] if e.get("group") != group] + [
        {**e, "group": group} for e in entries
    ]
    data["machine"] = machine()
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, RESULTS)


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
