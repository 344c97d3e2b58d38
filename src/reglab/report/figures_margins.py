"""Margin figures: violin plots of the per-example margins of the final network
(analysis/margins.npz), pooled over the seeds of each setting, one panel per split. Holds the
margin kinds in order of preference (`MARGIN_KIND_ORDER`), their definitions for captions
(`MARGIN_DOC`), the pooling (`margins_by_setting`) and the choice of the kind to draw
(`choose_margin_kind`).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .data import ReportData, read_margins
from .plotting import SPLIT_NAMES, Fig, _part, _part_title, chunks, to_png

# ---------------------------------------------------------------------------------------------
# margins
# ---------------------------------------------------------------------------------------------

MARGIN_KIND_ORDER = ("norm_one", "spectral_complexity", "spectral", "frobenius", "output_std", "raw")
MARGIN_DOC = {
    "raw": "raw margin f_y(x) − max_{j≠y} f_j(x), or y·f(x) for one-output models",
    "output_std": "raw margin divided by the population standard deviation of the raw outputs over the same examples",
    "norm_one": "raw margin of the norm-one network, in which every weight layer is scaled to Frobenius norm 1 "
    "(biases by the cumulative factor); for ReLU networks this is f(x)/Π_l ‖W_l‖_F",
    "spectral": "raw margin divided by Π_l ‖W_l‖_2, the product of the layers' spectral norms",
    "frobenius": "raw margin divided by Π_l ‖W_l‖_F, the product of the layers' Frobenius norms",
    "spectral_complexity": "raw margin divided by the spectral complexity R_A of Bartlett, Foster & Telgarsky (2017), "
    "without their ‖X‖_F/n factor",
}


def margins_by_setting(d: ReportData) -> dict[int, dict[str, np.ndarray]]:
    """{setting index: {"split/kind": pooled margins over the setting's runs}}."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for s in d.settings:
        pooled: dict[str, list] = {}
        for r in s.runs:
            if r in s.diverged:
                continue
            m = read_margins(d.run_path(r))
            if not m:
                continue
            for k, v in m.items():
                pooled.setdefault(k, []).append(v[np.isfinite(v)])
        if pooled:
            out[s.index] = {k: np.concatenate(v) for k, v in pooled.items()}
    return out


def choose_margin_kind(keys: set[str]) -> str | None:
    kinds = {k.split("/", 1)[1] for k in keys if "/" in k}
    for k in MARGIN_KIND_ORDER:
        if k in kinds:
            return k
    return sorted(kinds)[0] if kinds else None


def _violins(ax, data: list[np.ndarray], positions: Sequence[float], colors: list) -> None:
    kw = {"positions": positions, "showmedians": True, "showextrema": False, "widths": 0.8}
    try:
        parts = ax.violinplot(data, orientation="horizontal", **kw)
    except TypeError:  # matplotlib < 3.10
        parts = ax.violinplot(data, vert=False, **kw)
    for body, c in zip(parts["bodies"], colors):
        body.set_facecolor(c)
        body.set_edgecolor(c)
        body.set_alpha(0.45)
    parts["cmedians"].set_color("black")
    parts["cmedians"].set_linewidth(1.2)


def margin_figures(d: ReportData, by: dict[int, dict[str, np.ndarray]] | None = None) -> tuple[list[Fig], str | None]:
    by = margins_by_setting(d) if by is None else by
    if not by:
        return [], None
    keys = set().union(*[set(v) for v in by.values()])
    kind = choose_margin_kind(keys)
    if kind is None:
        return [], None
    splits = [sp for sp in ("train", "val", "test") if f"{sp}/{kind}" in keys]
    settings = [s for s in d.settings if s.index in by]
    out = []
    parts = list(chunks(settings))
    for part, group in parts:
        fig, axes = plt.subplots(
            1, len(splits), figsize=(3.6 * len(splits) + 0.5, 0.5 * len(group) + 1.4), sharey=True, squeeze=False
        )
        for ax, sp in zip(axes[0], splits):
            data, pos, cols = [], [], []
            for i, s in enumerate(group):
                v = by[s.index].get(f"{sp}/{kind}")
                if v is not None and len(v):
                    data.append(v)
                    pos.append(len(group) - 1 - i)
                    cols.append(s.color)
            if data:
                _violins(ax, data, pos, cols)
            ax.axvline(0.0, color="0.4", lw=0.8, ls="--")
            ax.set_title(SPLIT_NAMES[sp])
            ax.set_xlabel(f"margin ({kind})")
            ax.grid(axis="y", alpha=0)
        ax0 = axes[0][0]
        ax0.set_yticks(range(len(group)))
        ax0.set_yticklabels([s.label for s in reversed(group)])
        for t, s in zip(ax0.get_yticklabels(), reversed(group)):
            t.set_color(s.color)
        ax0.set_ylim(-0.6, len(group) - 0.4)
        fig.tight_layout()
        cap = (
            f"Distribution of per-example margins of kind '{kind}' ({MARGIN_DOC.get(kind, kind)}), "
            f"one panel per split, from analysis/margins.npz of the final network, pooled over the "
            f"seeds of each setting (violin: kernel density; black tick: median). The dashed line "
            f"marks margin 0: examples left of it are misclassified."
        )
        nparts = len(parts)
        out.append(
            Fig(
                _part("margins", part, nparts),
                _part_title("Margin distributions", part, nparts),
                cap,
                to_png(fig),
                "margins",
            )
        )
    return out, kind
