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
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(map(str, v)) + "]"
    if v is None:
        return "-"
    return str(v)


def print_table(df: pd.DataFrame, title: str | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for c in df.columns:
        table.add_column(escape(str(c)), overflow="fold", no_wrap=str(c) in ("run", "setting"))
    for _, r in df.iterrows():
        # escape: values such as [weight] would otherwise be read as rich markup and vanish
        table.add_row(*[escape(_fmt(v)) for v in r.tolist()])
    Console(width=max(120, 12 * len(df.columns))).print(table)


def print_runs_table(df: pd.DataFrame, all_columns: bool = False) -> None:
    from .results import varying_columns

    if all_columns:
        cols = list(df.columns)
    else:
        cols = ["run", "status", *varying_columns(df), *[m for m in MAIN_METRICS if m in df.columns]]
    shown = df[cols].rename(columns=lambda c: c.replace("regularizers.", "reg.").replace(".schedule.", ".sched."))
    print_table(shown, title=f"{len(df)} runs")


def format_mean_ci(mean: float, half: float, scale: float = 1.0, digits: int = 2) -> str:
    """mean ± half-width with `digits` decimals; values too small for that (|x| < 10^-digits)
    switch to 3 significant digits, so a margin of 2e-6 does not print as 0.0000."""
    if math.isnan(mean):
        return "-"
    m, h = mean * scale, half * scale
    small = 0 < abs(m) < 10**-digits or (not math.isnan(h) and 0 < abs(h) < 10**-digits)
    fmt = (lambda v: f"{v:.3g}") if small else (lambda v: f"{v:.{digits}f}")
    if math.isnan(h):
        return fmt(m)
    return f"{fmt(m)} ± {fmt(h)}"
