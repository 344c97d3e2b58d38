"""Tables printed on the terminal (rich)."""

from __future__ import annotations

import math

import numpy as np
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


def metric_direction(spec: str, where: str) -> str:
    """ "max" or "min" for a metric spec NAME[:max|min]: accuracies are best high, losses low; any
    other metric needs its direction spelled out."""
    name, _, direction = spec.partition(":")
    if direction:
        if direction not in ("max", "min"):
            from .errors import ConfigError

            raise ConfigError(where, f"unknown direction {direction!r}", ["max", "min"])
        return direction
    if name.endswith("acc"):
        return "max"
    if name.endswith("loss"):
        return "min"
    from .errors import ConfigError

    raise ConfigError(where, f"say whether {name} is best high or low: {name}:max or {name}:min")


def print_settings_table(df: pd.DataFrame, sort_by: str | None, best: str | None, show: bool = True) -> pd.DataFrame:
    """One row per setting (runs differing only in the seed, finished ones): n and mean ± 95% CI
    of the main metrics and of the sort/best metrics; optionally sorted best first, and a line
    naming the best setting. Returns the aggregated frame."""
    from .aggregate import aggregate_seeds
    from .errors import ConfigError
    from .results import varying_columns

    finished = df[df["status"] == "done"]
    if finished.empty:
        raise ConfigError("--by-setting", "no finished run to aggregate")
    wanted = [m.partition(":")[0] for m in (sort_by, best) if m]
    for m, flag in zip(wanted, [f for f, v in (("--sort", sort_by), ("--best", best)) if v]):
        if m not in finished.columns:
            raise ConfigError(flag, f"no finished run has {m!r}")
    metrics = list(dict.fromkeys([*(m for m in MAIN_METRICS if m in finished.columns), *wanted]))
    by = [c for c in varying_columns(df) if c != "seed"]
    agg = aggregate_seeds(finished, metrics, by=by)
    if sort_by:
        name = sort_by.partition(":")[0]
        agg = agg.sort_values(
            f"{name}_mean", ascending=metric_direction(sort_by, "--sort") == "min", na_position="last"
        )
    if show:
        table = agg[by].rename(columns=lambda c: c.replace("regularizers.", "reg.").replace(".schedule.", ".sched."))
        table.insert(len(by), "n", agg["n"].to_numpy())
        for m in metrics:
            scale = 100.0 if m.endswith("acc") else 1.0
            cells = [
                format_mean_ci(a, c, scale, 2 if scale == 100 else 4)
                for a, c in zip(agg[f"{m}_mean"], agg[f"{m}_ci95"])
            ]
            table[f"{m} (%)" if scale == 100 else m] = cells
        print_table(table, title=f"{len(agg)} settings, mean ± 95% CI over seeds")
    if best:
        name = best.partition(":")[0]
        pick_max = metric_direction(best, "--best") == "max"
        means = agg[f"{name}_mean"]
        if means.notna().any():
            i = means.idxmax() if pick_max else means.idxmin()
            row = agg.loc[i]
            label = ", ".join(f"{c}={row[c]}" for c in by) or "the only setting"
            scale = 100.0 if name.endswith("acc") else 1.0
            value = format_mean_ci(row[f"{name}_mean"], row[f"{name}_ci95"], scale, 2 if scale == 100 else 4)
            print(f"best by {name} ({'highest' if pick_max else 'lowest'}): {label}: {value} (n={int(row['n'])})")
    return agg


def _positional(x: float, digits: int, keep_zeros: bool = False) -> str:
    """x to `digits` significant digits, never in exponent notation (0.000094, not 9.4e-05);
    10 000 and more written out with thousands separators (20,000 steps, not 2e+04). Trailing
    zeros are dropped unless `keep_zeros` (a half-width of 0.010 keeps its two digits)."""
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 10_000:
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    rounded = float(f"{x:.{digits}g}")  # round first: numpy drops a digit when rounding carries (0.00019999)
    text = np.format_float_positional(rounded, precision=digits, unique=False, fractional=False, trim="k")
    return text.rstrip(".") if keep_zeros else text.rstrip("0").rstrip(".") if "." in text else text


def number(x: float) -> str:
    """4 significant digits, in positional notation down to 1e-4 (below: exponent notation);
    10 000 and more written out with thousands separators."""
    if math.isfinite(x) and 0 < abs(x) < 1e-4:
        return f"{x:.4g}"
    return _positional(x, 4)


def format_mean_ci_sig(mean: float, half: float) -> str:
    """mean to 4 significant digits ± half-width to 2, both positional (0.000153 ± 0.000094;
    1680 ± 160, whole numbers of 10 000 and more in full): one rule for every metric of a table,
    so no column mixes 1680 ± 1.6e+02 styles. Values below 1e-4 share one exponent:
    (4.998 ± 0.42)e-05."""
    if math.isnan(mean):
        return "-"
    if math.isnan(half):
        return number(mean)
    largest = max(abs(mean), abs(half))
    if 0 < largest < 1e-4:
        exponent = math.floor(math.log10(largest))
        scale = 10.0**-exponent
        return f"({_positional(mean * scale, 4)} ± {_positional(half * scale, 2, keep_zeros=True)})e{exponent:03d}"
    if half == 0:
        return f"{number(mean)} ± 0"
    h, m = _positional(half, 2, keep_zeros=True), number(mean)
    if abs(mean) >= 10_000 and abs(half) >= 1_000:
        h = f"{float(h):,.0f}"
    decimals = len(h.partition(".")[2])
    if decimals > len(m.partition(".")[2]) and abs(mean) < 10_000:
        m = f"{mean:.{decimals}f}"  # the mean as precise as its interval: 3.0000 ± 0.0004
    return f"{m} ± {h}"


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
