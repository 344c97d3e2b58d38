"""Run every bench/bench_*.py in turn; each prints its table and merges into bench/results.json."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def main() -> None:
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("bench_*.py"))
    for name in names:
        print(f"=== {name}")
        runpy.run_path(str(HERE / f"{name}.py"), run_name="__main__")
    results = json.loads((HERE / "results.json").read_text())
    failed = [e["name"] for e in results["benchmarks"] if e.get("met") is False]
    print(f"\nwrote {HERE / 'results.json'}: {len(results['benchmarks'])} entries, targets missed: {failed or 'none'}")


if __name__ == "__main__":
    main()
