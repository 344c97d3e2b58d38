"""Shared plotting pieces of the report's figures (they draw nothing themselves).

Selects the matplotlib Agg backend (no display needed) and holds what every figure family
uses: the constants (`MAX_SETTINGS` settings per figure, `DPI`, the `BAND` wording, the
rc `STYLE` the report draws under, `SPLIT_NAMES`), the `Fig` record (name, title, caption,
PNG bytes, section), `to_png`, splitting settings over several figures (`chunks`, `_part`,
`_part_title`), the legend below a figure, a grid of panels, the x axis of training curves
(`x_axis`), statistics over the seeds of a setting (`seed_stats`) and the mean line with its
min–max band (`_draw_mean_band`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg", force=False)  # no display needed; a no-op when a backend is already set

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .data import Setting

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

MAX_SETTINGS = 10
DPI = 120
BAND = "min–max over seeds"

STYLE: dict[RcKeyType, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.family": "DejaVu Sans",
}


@dataclass
class Fig:
    name: str
    """File-name stem (figures/<name>.png) and HTML id."""
    title: str
    caption: str
    png: bytes
    section: str = ""


class Png(bytes):
    """A figure's PNG bytes, with the same figure in vector formats when asked (`vectors`)."""

    vectors: dict[str, bytes]


VECTOR_EXPORT: dict[str, Any] = {"formats": (), "width": None}
"""Set by build_report: vector formats to write beside each PNG ("pdf", "svg") and the width in
inches to draw them at (a paper's column: 3.3; None keeps the report's size)."""

MIN_FONT_PT = 5.0


def _resized(fig, width: float) -> None:
    """Scale the figure to `width` inches, its text with it (not below MIN_FONT_PT), so a
    figure made for the screen keeps its proportions at a column's width."""
    w, h = fig.get_size_inches()
    k = width / w
    fig.set_size_inches(width, h * k)
    for text in fig.findobj(matplotlib.text.Text):
        text.set_fontsize(max(MIN_FONT_PT, text.get_fontsize() * k))
    for line in fig.findobj(Line2D):
        line.set_linewidth(max(0.5, line.get_linewidth() * k))


def to_png(fig) -> Png:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08, facecolor="white")
    out = Png(buf.getvalue())
    out.vectors = {}
    if VECTOR_EXPORT["formats"]:
        if VECTOR_EXPORT["width"]:
            _resized(fig, float(VECTOR_EXPORT["width"]))
        for fmt in VECTOR_EXPORT["formats"]:
            vbuf = io.BytesIO()
            fig.savefig(vbuf, format=fmt, bbox_inches="tight", pad_inches=0.02, facecolor="white")
            out.vectors[fmt] = vbuf.getvalue()
    plt.close(fig)
    return out


def chunks(settings: Sequence[Setting], size: int = MAX_SETTINGS) -> Iterator[tuple[int, list[Setting]]]:
    """(part number from 1, settings) in groups of at most `size`."""
    settings = list(settings)
    for i in range(0, len(settings), size):
        yield i // size + 1, settings[i : i + size]


def _part(name: str, part: int, nparts: int) -> str:
    return name if nparts == 1 else f"{name}_part{part}"


def _part_title(title: str, part: int, nparts: int) -> str:
    return title if nparts == 1 else f"{title} (part {part} of {nparts})"


def _legend_below(fig, settings: Sequence[Setting], extra: Sequence[tuple] = ()) -> None:
    handles = [Line2D([], [], color=s.color, lw=2.2) for s in settings]
    labels = [s.label for s in settings]
    for h, lab in extra:
        handles.append(h)
        labels.append(lab)
    longest = max((len(x) for x in labels), default=10)
    ncol = max(1, min(len(labels), 4 if longest < 22 else 3 if longest < 32 else 2 if longest < 55 else 1))
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False)


def _panel_grid(n: int, max_cols: int = 3, w: float = 4.0, h: float = 3.0):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


# ---------------------------------------------------------------------------------------------
# statistics over seeds, drawn as a mean line with a min–max band
# ---------------------------------------------------------------------------------------------


def x_axis(evals: pd.DataFrame, runs: pd.DataFrame | None = None) -> tuple[str, str]:
    """(column, label): iterations when every run has an iteration budget (`train.iterations`),
    else epochs when runs last at least two epochs, else optimizer steps."""
    budgets = runs["train.iterations"] if runs is not None and "train.iterations" in runs.columns else None
    if budgets is not None and len(budgets) and pd.to_numeric(budgets, errors="coerce").notna().all():
        return "step", "iteration"
    if "epoch" in evals.columns and pd.to_numeric(evals["epoch"], errors="coerce").max() >= 2:
        return "epoch", "epoch"
    return "step", "optimizer step"


def spans_decades(values: pd.Series | np.ndarray, decades: float = 1.0) -> bool:
    """True when every value is positive and max / min exceeds 10^decades (a log axis then shows
    what a linear one squashes near zero)."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
    return bool(len(v)) and bool((v > 0).all()) and float(v.max() / v.min()) > 10**decades


def seed_stats(frame: pd.DataFrame, runs: Sequence[str], x: str, y: str) -> pd.DataFrame | None:
    """Mean, min and max of `y` over the runs at each `x` (non-finite values ignored)."""
    sub = frame[frame["run"].isin(runs)]
    if sub.empty or y not in sub.columns:
        return None
    vals = pd.to_numeric(sub[y], errors="coerce").replace([np.inf, -np.inf], np.nan)
    sub = pd.DataFrame({"run": sub["run"], "x": pd.to_numeric(sub[x], errors="coerce"), "y": vals}).dropna()
    if sub.empty:
        return None
    sub = sub.drop_duplicates(["run", "x"], keep="last")
    g = sub.groupby("x")["y"]
    return pd.DataFrame({"mean": g.mean(), "min": g.min(), "max": g.max(), "n": g.count()}).reset_index()


def _draw_mean_band(ax, st: pd.DataFrame, color, scale: float = 1.0, ls: str = "-") -> None:
    ax.plot(st["x"], st["mean"] * scale, color=color, ls=ls)
    if (st["n"] > 1).any():
        ax.fill_between(st["x"], st["min"] * scale, st["max"] * scale, color=color, alpha=0.18, lw=0)


SPLIT_NAMES = {"train": "training set", "val": "validation set", "test": "test set"}
