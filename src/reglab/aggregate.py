"""Aggregation over seeds: mean, standard deviation and a 95% confidence interval.

The interval is mean +- t_{0.975, n-1} * std / sqrt(n) (Student's t, sample std with n-1),
the usual interval for the mean of n independent runs. With one run the std and the interval
are NaN: one run says nothing about its spread.
"""

from __future__ import annotations

import math

import pandas as pd

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard table values).
_T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def t975(dof: int) -> float:
    if dof < 1:
        return math.nan
    if dof <= len(_T975):
        return _T975[dof - 1]
    return 1.960 + 2.4 / dof  # close to the exact quantile beyond 30 dof (error < 0.002)


def sample_std(vals: pd.Series) -> float:
    """Sample standard deviation (n - 1); exactly 0 when every value is the same (pandas' two-pass
    formula leaves rounding noise such as 3e-14 there, which tables would print as a spread)."""
    if len(vals) < 2:
        return math.nan
    if vals.nunique() == 1:
        return 0.0
    return float(vals.std(ddof=1))


def aggregate_seeds(df: pd.DataFrame, metrics: list[str], by: list[str] | None = None) -> pd.DataFrame:
    """Group runs that differ only in `seed` and summarize each metric.

    `by` defaults to every config column that varies except the seed. The result has the
    group columns, ``n`` (runs in the group) and for each metric ``<m>_mean``, ``<m>_std``,
    ``<m>_ci95`` (half-width), ``<m>_lo``, ``<m>_hi``.
    """
    from .results import varying_columns

    if by is None:
        by = [c for c in varying_columns(df) if c != "seed"]
    metrics = [m for m in metrics if m in df.columns]
    rows = []
    groups = df.groupby(by, dropna=False, sort=True) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n"] = len(g)
        for m in metrics:
            vals = pd.to_numeric(g[m], errors="coerce").dropna()
            n = len(vals)
            mean = float(vals.mean()) if n else math.nan
            std = sample_std(vals)
            half = t975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
            row.update(
                {f"{m}_mean": mean, f"{m}_std": std, f"{m}_ci95": half, f"{m}_lo": mean - half, f"{m}_hi": mean + half}
            )
        rows.append(row)
    return pd.DataFrame(rows)
