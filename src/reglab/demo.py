"""`reglab demo`: a few regularizers on a small digits MLP, three seeds each, one table."""

from __future__ import annotations

import time
from pathlib import Path

from .aggregate import aggregate_seeds
from .report_table import format_mean_ci, print_table
from .results import load_runs
from .train import run
from .validation import load_config

PRESET = Path(__file__).parent / "presets" / "demo.yaml"
SEEDS = (0, 1, 2)

# label -> overrides of the preset
SETTINGS: dict[str, list[str]] = {
    "none": [],
    "l2 (lam=1e-3)": ["regularizers=[{name: l2, lam: 1.0e-3}]"],
    "l2_mul (lam=1e-4)": ["regularizers=[{name: l2_mul, lam: 1.0e-4}]"],
    "pathprox (lam=1e-3)": ["regularizers=[{name: pathprox, lam: 1.0e-3}]"],
}


def run_demo(output: Path) -> None:
    t0 = time.perf_counter()
    label_of = {}
    for label, overrides in SETTINGS.items():
        for seed in SEEDS:
            cfg = load_config(PRESET, [*overrides, f"seed={seed}", f"output={output}"])
            res = run(cfg, progress=False)
            label_of[res.hash] = label
            print(
                f"  {label:<22} seed {seed}: {res.status}  "
                f"test_acc={res.summary['final'].get('test_acc', float('nan')):.4f}"
            )
    df = load_runs(output)
    df = df[df["run"].isin(label_of)].copy()
    df["setting"] = df["run"].map(label_of)
    agg = aggregate_seeds(df, ["train_acc", "val_acc", "test_acc", "train_loss"], by=["setting"])
    agg = agg.set_index("setting").loc[list(SETTINGS)].reset_index()
    table = agg[["setting", "n"]].copy()
    for m in ("train_acc", "val_acc", "test_acc"):
        table[f"{m} % (mean ± 95% CI)"] = [
            format_mean_ci(a, b, 100) for a, b in zip(agg[f"{m}_mean"], agg[f"{m}_ci95"])
        ]
    print_table(table, title=f"digits MLP 64-64-64-10, {len(SEEDS)} seeds each ({time.perf_counter() - t0:.1f} s)")
    from .report import build_report

    page = build_report(
        output, output / "report", runs=list(label_of), title="reglab demo: regularizers on a digits MLP"
    )
    print(f"runs are in {output}/ (reglab runs --root {output})")
    print(f"report: {page}")
