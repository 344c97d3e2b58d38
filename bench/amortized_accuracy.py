"""Does the amortized route (refresh_every 32) train as the exact one does? Study 2's settings
(bench/amortized_accuracy.yaml: MNIST, MLP 784-128-128-10, 10 epochs, mu 1e-4, 5 seeds), each
spectral penalty exact and amortized, compared seed by seed on what the energy study reports:
final test accuracy and spectral energy (2 x the sum of the layers' nuclear norms).

    python bench/amortized_accuracy.py -o RESULTS_ROOT [--data-dir DIR] [-j 2]

Trains what is missing under RESULTS_ROOT (a finished run is never trained again), then prints a
Markdown table: per penalty and metric, the mean of each route, the paired difference
(amortized - exact) with its 95 % t interval over seeds, and the spread between seeds of the
exact route (the seed noise the difference is judged against). Not a timing benchmark: run it
whenever, and paste the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import yaml
from scipy import stats

from common import REPO
from reglab.results import load_runs
from reglab.sweep.grid import expand
from reglab.sweep.runner import run_sweep

SPEC = Path(__file__).with_name("amortized_accuracy.yaml")
METRICS = {"test_acc": ("final test accuracy", 100.0, "pts"), "nuclear_norm_sum": ("spectral energy", 2.0, "")}


def paired_rows(df) -> list[str]:
    df = df.assign(
        penalty=df["regularizers.0.name"],
        route=df.get("regularizers.0.refresh_every").fillna(1).map(lambda k: "exact" if k == 1 else f"k={int(k)}"),
    )
    rows = []
    for penalty, runs in df.groupby("penalty", sort=True):
        wide = runs.pivot_table(index="seed", columns="route", values=list(METRICS))
        amortized = next(c for c in runs["route"].unique() if c != "exact")
        for metric, (label, scale, unit) in METRICS.items():
            exact, amort = wide[(metric, "exact")] * scale, wide[(metric, amortized)] * scale
            d = (amort - exact).dropna()
            n = len(d)
            half = stats.t.ppf(0.975, n - 1) * statistics.stdev(d) / math.sqrt(n) if n > 1 else float("nan")
            rows.append(
                f"| {penalty} ({amortized}) | {label} | {exact.mean():.3f} | {amort.mean():.3f} | "
                f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] {unit} | "
                f"{statistics.stdev(exact):.3f} | {n} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="results root (outside the repository)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    root = Path(args.output)
    if root.resolve().is_relative_to(REPO):
        raise SystemExit("-o: keep run directories outside the repository")
    spec = yaml.safe_load(SPEC.read_text())
    run_sweep(
        spec["name"],
        root,
        spec,
        expand(spec),
        executor="process",
        jobs=args.jobs,
        data_dir=args.data_dir,
        live=False,
        vectorize="auto",
    )
    df = load_runs(root)
    head = ["penalty (route)", "metric", "exact", "amortized", "amortized - exact, 95 % CI", "sd (exact)", "seeds"]
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(paired_rows(df)))


if __name__ == "__main__":
    main()
