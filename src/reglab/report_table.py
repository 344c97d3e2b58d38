"""Tables printed on the terminal (rich)."""

from __future__ import annotations

import math

import pandas as pd

MAIN_METRICS = ["train_loss", "train_acc", "val_acc", "test_loss", "test_acc"]


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4g}"
    if isinstance(v, tuple):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def print_table(df: pd.DataFrame, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in df.columns:
        table.add_column(str(c), overflow="fold")
    for _, r in df.iterrows():
        table.add_row(*[_fmt(v) for v in r.tolist()])
    Console(width=max(120, 12 * len(df.columns))).print(table)


def print_runs_table(df: pd.DataFrame, all_columns: bool = False) -> None:
    from .results import varying_columns

    if all_columns:
        cols = list(df.columns)
    else:
        cols = ["run", "status", *varying_columns(df), *[m for m in MAIN_METRICS if m in df.columns]]
    print_table(df[cols], title=f"{len(df)} runs")


def format_mean_ci(mean: float, half: float, scale: float = 1.0, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"
