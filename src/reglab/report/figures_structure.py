"""Figures of the final network's structure: the rank of each weight layer (analysis/ranks.csv,
`rank_figures`), its rank during training (analysis/ranks_during.jsonl, `rank_during_figures`),
the normalized singular value spectra (analysis/singular_values.npz, `spectrum_figures`) and the
percentage of active hidden units (analysis/sparsity.json, `sparsity_figures`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .data import ReportData, read_csv, read_json, read_jsonl_frame, read_npz
from .plotting import (
    BAND,
    Fig,
    _draw_mean_band,
    _legend_below,
    _panel_grid,
    _part,
    _part_title,
    chunks,
    seed_stats,
    to_png,
)

# ---------------------------------------------------------------------------------------------
# ranks and spectra
# ---------------------------------------------------------------------------------------------

RANK_DOC = {
    "effective_rank": "effective rank exp(H(p)), p_i = σ_i/Σσ_j (Roy & Vetterli 2007)",
    "stable_rank": "stable rank ‖W‖_F²/‖W‖_2²",
    "rank_numerical": "numerical rank #{σ_i > σ_1·max(rows, cols)·eps}",
    "rank_rel": "relative rank #{σ_i/σ_1 > 0.01}",
}


def _ranks_frame(d: ReportData, name: str, reader) -> pd.DataFrame | None:
    frames = []
    for s in d.settings:
        for r in s.runs:
            if r in s.diverged:
                continue
            f = reader(d.run_path(r), name)
            if f is not None and not f.empty and "layer" in f.columns:
                f = f.copy()
                f["run"] = r
                f["setting"] = s.index
                frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else None


def _layer_order(f: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(f["layer"].astype(str)))


def rank_figures(d: ReportData) -> list[Fig]:
    f = _ranks_frame(d, "ranks.csv", read_csv)
    if f is None:
        return []
    f["layer"] = f["layer"].astype(str)
    metrics = [m for m in ("effective_rank", "stable_rank", "rank_numerical", "rank_rel") if m in f.columns][:3]
    if not metrics:
        return []
    layers = _layer_order(f)
    settings = [s for s in d.settings if s.index in set(f["setting"])]
    out = []
    parts = list(chunks(settings))
    for part, group in parts:
        fig, axes = _panel_grid(
            len(metrics), max_cols=3, w=max(3.6, 0.55 * len(layers) * max(1, len(group)) ** 0.5 + 1.5), h=3.0
        )
        width = 0.8 / len(group)
        for ax, m in zip(axes, metrics):
            for j, s in enumerate(group):
                sub = f[f["setting"] == s.index]
                g = sub.groupby("layer")[m]
                mean = g.mean().reindex(layers)
                lo = mean - g.min().reindex(layers)
                hi = g.max().reindex(layers) - mean
                xs = np.arange(len(layers)) - 0.4 + width * (j + 0.5)
                ax.bar(
                    xs,
                    mean,
                    width=width,
                    color=s.color,
                    alpha=0.85,
                    yerr=[lo, hi],
                    error_kw={"elinewidth": 0.8, "capsize": 1.5},
                )
            has_dims = "full_rank" in f.columns or {"rows", "cols"} <= set(f.columns)
            if has_dims and m in ("rank_numerical", "rank_rel", "effective_rank", "stable_rank"):
                full = (
                    f.groupby("layer")
                    .apply(
                        lambda g: (g["full_rank"] if "full_rank" in g else np.minimum(g["rows"], g["cols"])).max(),
                        include_groups=False,
                    )
                    .reindex(layers)
                )
                ticks = np.arange(len(layers))
                ax.hlines(full, ticks - 0.42, ticks + 0.42, colors="0.25", linestyles="--", lw=1.2, zorder=4)
            ax.set_xticks(np.arange(len(layers)))
            ax.set_xticklabels(
                layers, rotation=30 if len(layers) > 4 else 0, ha="right" if len(layers) > 4 else "center"
            )
            ax.set_xlabel("weight layer")
            ax.set_ylabel(m.replace("_", " "))
            ax.set_title(m.replace("_", " "))
            ax.grid(axis="x", alpha=0)
        fig.tight_layout()
        extra = [(Line2D([], [], color="0.25", ls="--", lw=1.2), "full rank min(rows, cols)")]
        _legend_below(fig, group, extra)
        cap = (
            "Rank of each weight layer of the final network (analysis/ranks.csv; W read as a matrix "
            "of shape out × in, convolution kernels flattened): "
            + "; ".join(RANK_DOC[m] for m in metrics)
            + f". Bar: mean over seeds; error bar: {BAND}; dashed line: the largest possible rank min(rows, cols)."
        )
        nparts = len(parts)
        out.append(
            Fig(_part("ranks", part, nparts), _part_title("Rank per layer", part, nparts), cap, to_png(fig), "ranks")
        )
    return out


def rank_during_figures(d: ReportData, metric: str = "effective_rank", max_layers: int = 9) -> list[Fig]:
    f = _ranks_frame(d, "ranks_during.jsonl", read_jsonl_frame)
    if f is None or metric not in f.columns or "step" not in f.columns:
        return []
    f["layer"] = f["layer"].astype(str)
    layers = _layer_order(f)[:max_layers]
    settings = [s for s in d.settings if s.index in set(f["setting"])]
    out = []
    parts = list(chunks(settings))
    for part, group in parts:
        fig, axes = _panel_grid(len(layers), max_cols=3, w=3.8, h=2.8)
        for ax, layer in zip(axes, layers):
            sub = f[f["layer"] == layer]
            for s in group:
                st = seed_stats(sub[sub["setting"] == s.index], s.runs, "step", metric)
                if st is not None:
                    _draw_mean_band(ax, st, s.color)
            ax.set_title(str(layer), fontsize=10)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(metric.replace("_", " "))
        fig.tight_layout()
        _legend_below(fig, group)
        cap = (
            f"{RANK_DOC[metric][0].upper() + RANK_DOC[metric][1:]} of each weight layer during training "
            f"(analysis/ranks_during.jsonl), one panel per layer"
            + (f" (first {max_layers} layers)" if len(_layer_order(f)) > max_layers else "")
            + f". Line: mean over seeds; shaded band: {BAND}."
        )
        nparts = len(parts)
        out.append(
            Fig(
                _part("ranks_during", part, nparts),
                _part_title("Rank during training", part, nparts),
                cap,
                to_png(fig),
                "ranks",
            )
        )
    return out


def per_layer_arrays(
    d: ReportData, read: Callable[[Path], dict[str, np.ndarray]]
) -> tuple[list[str], dict[int, dict[str, list[np.ndarray]]]]:
    """Layers in first-seen order and {setting index: {layer: [one array per finished run]}},
    from `read(run_path)` -> {layer: values}; diverged runs and non-finite arrays left out."""
    per: dict[int, dict[str, list[np.ndarray]]] = {}
    layers: list[str] = []
    for s in d.settings:
        for r in s.runs:
            if r in s.diverged:
                continue
            for layer, v in read(d.run_path(r)).items():
                v = np.asarray(v, dtype=float).ravel()
                if v.size == 0 or not np.isfinite(v).all():
                    continue
                if layer not in layers:
                    layers.append(layer)
                per.setdefault(s.index, {}).setdefault(layer, []).append(v)
    return layers, per


def singular_values(run_path: Path) -> dict[str, np.ndarray]:
    """{layer: singular values} of the final network (analysis/singular_values.npz)."""
    return read_npz(run_path, "singular_values.npz") or {}


def spectrum_figures(d: ReportData, max_layers: int = 6) -> list[Fig]:
    layers, per = per_layer_arrays(d, singular_values)
    if not per:
        return []
    per = {i: {k: [np.sort(v)[::-1] for v in vs] for k, vs in by.items()} for i, by in per.items()}
    layers = layers[:max_layers]
    settings = [s for s in d.settings if s.index in per]
    out = []
    parts = list(chunks(settings))
    for part, group in parts:
        fig, axes = _panel_grid(len(layers), max_cols=3, w=3.8, h=2.8)
        for ax, layer in zip(axes, layers):
            for s in group:
                arrs = per.get(s.index, {}).get(layer)
                if not arrs:
                    continue
                n = min(len(a) for a in arrs)
                a = np.stack([x[:n] for x in arrs])
                a = a / np.where(a[:, :1] > 0, a[:, :1], 1.0)
                m = a.mean(0)
                idx = np.arange(1, n + 1)
                ax.plot(idx, np.where(m > 0, m, np.nan), color=s.color)
                if len(a) > 1:
                    ax.fill_between(
                        idx, np.where(a.min(0) > 0, a.min(0), np.nan), a.max(0), color=s.color, alpha=0.18, lw=0
                    )
            ax.set_yscale("log")
            ax.set_title(str(layer), fontsize=10)
            ax.set_xlabel("index i")
            ax.set_ylabel("σ_i / σ_1")
        fig.tight_layout()
        _legend_below(fig, group)
        cap = (
            "Singular value spectrum of each weight layer of the final network "
            "(analysis/singular_values.npz), normalized by the largest singular value σ_1, in "
            f"decreasing order (log scale). Line: mean over seeds; shaded band: {BAND}."
        )
        nparts = len(parts)
        out.append(
            Fig(
                _part("spectra", part, nparts),
                _part_title("Singular value spectra", part, nparts),
                cap,
                to_png(fig),
                "ranks",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# sparsity
# ---------------------------------------------------------------------------------------------


def sparsity_values(d: ReportData, key: str = "active_units_pct") -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for s in d.settings:
        for r in s.runs:
            if r in s.diverged:
                continue
            j = read_json(d.run_path(r), "sparsity.json")
            if j and isinstance(j.get(key), (int, float)):
                out.setdefault(s.index, []).append(float(j[key]))
    return out


def sparsity_figures(d: ReportData) -> list[Fig]:
    vals = sparsity_values(d)
    if not vals:
        return []
    settings = [s for s in d.settings if s.index in vals]
    out = []
    parts = list(chunks(settings))
    for part, group in parts:
        fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(group) + 1.2))
        for i, s in enumerate(group):
            v = np.asarray(vals[s.index])
            y = len(group) - 1 - i
            ax.barh(y, v.mean(), color=s.color, alpha=0.8, height=0.6)
            ax.scatter(v, np.full(len(v), y) + np.linspace(-0.12, 0.12, len(v)), color="black", s=12, zorder=3)
        ax.set_yticks(range(len(group)))
        ax.set_yticklabels([s.label for s in reversed(group)])
        ax.set_xlim(0, 105)
        ax.set_xlabel("active hidden units (%)")
        ax.grid(axis="y", alpha=0)
        fig.tight_layout()
        cap = (
            "Active hidden units of the final network (analysis/sparsity.json, active_units_pct): the "
            "percentage of hidden units j whose path norm p_j = ‖w_j‖·‖v_j‖ (incoming times outgoing "
            "weight norm) is positive; a unit pruned to zero is inactive. "
            "Bar: mean over seeds; dots: individual seeds."
        )
        nparts = len(parts)
        out.append(
            Fig(
                _part("active_units", part, nparts),
                _part_title("Active units", part, nparts),
                cap,
                to_png(fig),
                "sparsity",
            )
        )
    return out
