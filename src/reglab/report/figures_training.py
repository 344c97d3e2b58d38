"""Figures of training: loss and accuracy curves during training (`curve_figures`), λ
schedules of the regularizers (`lambda_figures`), the measurements the regularizers log at
each evaluation (`measurement_figures`, with `MEASUREMENT_DOC` for their captions) and the
final accuracy of every run with the mean over seeds and its 95% confidence interval
(`final_accuracy_figures`). All of it comes from runs.csv-style run records and evals.jsonl /
steps.jsonl, not from the analysis files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .data import ReportData
from .plotting import (
    BAND,
    SPLIT_NAMES,
    Fig,
    _draw_mean_band,
    _legend_below,
    _panel_grid,
    _part,
    _part_title,
    chunks,
    seed_stats,
    spans_decades,
    to_png,
    x_axis,
)

# ---------------------------------------------------------------------------------------------
# curves over training
# ---------------------------------------------------------------------------------------------


def curve_figures(d: ReportData) -> list[Fig]:
    ev = d.evals
    if ev.empty:
        return []
    x, xlabel = x_axis(ev, d.runs)
    splits = [s for s in ("train", "val", "test") if f"{s}_loss" in ev.columns and ev[f"{s}_loss"].notna().any()]
    out = []
    parts = list(chunks(d.settings))
    for metric, ylabel, scale in (("loss", "loss", 1.0), ("acc", "accuracy (%)", 100.0)):
        cols = [s for s in splits if f"{s}_{metric}" in ev.columns and ev[f"{s}_{metric}"].notna().any()]
        if not cols:
            continue
        for part, group in parts:
            fig, axes = _panel_grid(len(cols), max_cols=3, w=4.0, h=3.0)
            drew = False
            mine = ev[ev["run"].isin([r for s in group for r in s.runs])]
            # losses fall by decades: a log axis keeps the settings apart after the first evaluations
            log = metric == "loss" and all(spans_decades(mine[f"{c}_loss"]) for c in cols)
            for ax, split in zip(axes, cols):
                for s in group:
                    st = seed_stats(ev, s.runs, x, f"{split}_{metric}")
                    if st is not None:
                        _draw_mean_band(ax, st, s.color, scale)
                        drew = True
                ax.set_title(SPLIT_NAMES[split])
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
                if log:
                    ax.set_yscale("log")
            if not drew:
                plt.close(fig)
                continue
            fig.tight_layout()
            _legend_below(fig, group)
            what = (
                "mean cross-entropy (or MSE for one-output models) of the data term alone, "
                "without the regularizer penalty"
                if metric == "loss"
                else "classification accuracy in percent"
            )
            cap = (
                f"{'Loss' if metric == 'loss' else 'Accuracy'} during training, one panel per split "
                f"({', '.join(SPLIT_NAMES[c] for c in cols)}): {what}, measured at each evaluation "
                f"on the whole split, against the {xlabel}. Line: mean over the seeds of a setting; "
                f"shaded band: {BAND} (where a setting has more than one run)."
            )
            nparts = len(parts)
            out.append(
                Fig(
                    _part(f"curves_{metric}", part, nparts),
                    _part_title("Training curves: " + ("loss" if metric == "loss" else "accuracy"), part, nparts),
                    cap,
                    to_png(fig),
                    "curves",
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# lambda trajectories and regularizer measurements
# ---------------------------------------------------------------------------------------------


def reg_keys(d: ReportData) -> list[str]:
    """Regularizer keys: those with a logged λ (``lam.<key>`` columns of evals.jsonl)."""
    return sorted(c[4:] for c in d.evals.columns if c.startswith("lam."))


def _changing(frame: pd.DataFrame, col: str, runs: Sequence[str]) -> bool:
    if frame.empty or col not in frame.columns:
        return False
    v = pd.to_numeric(frame.loc[frame["run"].isin(runs), col], errors="coerce").dropna()
    if v.empty:
        return False
    return not np.allclose(v.to_numpy(), v.iloc[0], rtol=1e-9, atol=0.0) if len(v) > 1 else False


def lambda_figures(d: ReportData) -> list[Fig]:
    out = []
    for key in reg_keys(d):
        col = f"lam.{key}"
        settings = [s for s in d.settings if _changing(d.evals, col, s.runs)]
        if not settings:
            continue
        steps = d.load_steps([r for s in settings for r in s.runs])
        src = steps if col in steps.columns and "step" in steps.columns else d.evals
        parts = list(chunks(settings))
        for part, group in parts:
            fig, ax = plt.subplots(figsize=(7.0, 3.4))
            nonpos = False
            for s in group:
                for r in s.runs:
                    sub = src[src["run"] == r][["step", col]].dropna()
                    if sub.empty:
                        continue
                    if len(sub) > 3000:
                        sub = sub.iloc[:: math.ceil(len(sub) / 3000)]
                    y = pd.to_numeric(sub[col], errors="coerce").to_numpy(float)
                    nonpos |= bool((y <= 0).any())
                    y = np.where(y > 0, y, np.nan)
                    ax.step(sub["step"], y, where="post", color=s.color, lw=1.2, alpha=0.85)
            ax.set_yscale("log")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(f"λ ({key})")
            ax.set_title(f"λ of regularizer '{key}'")
            fig.tight_layout()
            _legend_below(fig, group)
            cap = (
                f"Regularization strength λ of regularizer '{key}' over training (log scale), as set by its λ "
                f"schedule; one line per run (every seed of a setting, same color), from the per-step log "
                f"(steps.jsonl; the per-evaluation log where the step log lacks it). Only settings whose λ "
                f"changes between evaluations are drawn."
                + (" Steps where λ = 0 are left out (not representable on a log axis)." if nonpos else "")
            )
            nparts = len(parts)
            out.append(
                Fig(
                    _part(f"lambda_{key}", part, nparts),
                    _part_title(f"λ schedule: {key}", part, nparts),
                    cap,
                    to_png(fig),
                    "lambda",
                )
            )
    return out


MEASUREMENT_DOC = {
    "active_units_pct": "100·#{hidden units j with p_j = ‖w_j‖·‖v_j‖ > 0}/#units (incoming ‖w_j‖, outgoing ‖v_j‖)",
    "active_units_pct_thresh": "the same with p_j above the active threshold",
    "units_zeroed": "units set to zero by the last proximal step",
    "path_norm": "Σ_j ‖w_j‖·‖v_j‖ over the hidden units",
    "objective_path_norm": "path norm + ½ Σ ‖W_o‖² over the other layers",
    "objective_l2": "½ Σ (‖W‖² + ‖V‖²), the weight-decay objective",
    "train_objective_path_norm": 'training loss + λ·(path-norm objective), study 4\'s "wd objective"',
    "train_objective_l2": "training loss + λ·½ Σ (‖W‖² + ‖V‖²), the full weight-decay objective",
    "rho": "ρ = Π_l ‖W_l‖_F, the product of the layers' Frobenius norms",
    "energy_epoch": "path energy of the epoch: Σ_t ‖θ_{t+1} − θ_t‖² over its updates (a sum, not per sample)",
    "energy_total": "path energy since the start: Σ_t ‖θ_{t+1} − θ_t‖² over every update",
    "energy_last": "squared length ‖θ_{t+1} − θ_t‖² of the last update",
    "penalty": "the penalty R(w) as trained, before multiplying by λ",
    "total": "sum of the unit path norms",
    "grad_norm": "norm of the penalized gradient",
}


def _candidate_columns(d: ReportData) -> list[str]:
    """``<key>.<measurement>`` columns of evals.jsonl for the regularizer keys, and the monitors
    (``monitor.<name>``, ``monitor.<name>.<item>``); breakdowns with a further dot
    (``l2_mul.norm.<layer>``, ``pathprox.path_norm.<group>``) are left out."""
    keys = reg_keys(d)
    cols = []
    for c in d.evals.columns:
        if not (pd.api.types.is_numeric_dtype(d.evals[c]) and d.evals[c].notna().any()):
            continue
        if c.startswith("monitor.") and c.count(".") <= 2:
            cols.append(c)
            continue
        for k in keys:
            if c.startswith(k + ".") and "." not in c[len(k) + 1 :]:
                cols.append(c)
                break
    return cols


def constant_columns(d: ReportData) -> dict[str, float]:
    """Measurements with one value in every run and evaluation (100 % active units, 0 units
    zeroed): a panel of them shows nothing, so they are named in the caption instead."""
    out = {}
    for c in _candidate_columns(d):
        v = pd.to_numeric(d.evals[c], errors="coerce").dropna()
        if len(v) and v.nunique() == 1:
            out[c] = float(v.iloc[0])
    return out


def measurement_columns(d: ReportData) -> list[str]:
    """The measurements drawn: the candidates that change (at most 12)."""
    constant = constant_columns(d)
    return [c for c in _candidate_columns(d) if c not in constant][:12]


def measurement_figures(d: ReportData) -> list[Fig]:
    ev = d.evals
    cols = measurement_columns(d)
    if not cols:
        return []
    x, xlabel = x_axis(ev, d.runs)
    out = []
    per_fig = 6
    col_groups = [cols[i : i + per_fig] for i in range(0, len(cols), per_fig)]
    parts = list(chunks(d.settings))
    for gi, cgroup in enumerate(col_groups):
        for part, group in parts:
            fig, axes = _panel_grid(len(cgroup), max_cols=3, w=4.0, h=3.0)
            drawn: set[int] = set()
            for ax, c in zip(axes, cgroup):
                positive = True
                for s in group:
                    st = seed_stats(ev, s.runs, x, c)
                    if st is not None:
                        _draw_mean_band(ax, st, s.color)
                        drawn.add(s.index)
                        positive &= bool((st["min"] > 0).all())
                key, meas = c.rsplit(".", 1) if c.startswith("monitor.") and c.count(".") == 2 else c.split(".", 1)
                ax.set_title(f"{key}: {meas}", fontsize=10)
                ax.set_xlabel(xlabel)
                unit = " (%)" if meas.endswith("_pct") else ""
                ax.set_ylabel(meas + unit)
                vals = pd.to_numeric(ev.loc[ev["run"].isin([r for s in group for r in s.runs]), c], errors="coerce")
                vals = vals[np.isfinite(vals)]
                if meas.endswith("_pct") and len(vals):
                    ax.set_ylim(max(0.0, math.floor(vals.min() - 5)), 101)
                elif positive and spans_decades(vals, 1 if ("loss" in meas or "objective" in meas) else 2):
                    ax.set_yscale("log")  # losses and objectives fall by decades; other values need two
            if not drawn:
                plt.close(fig)
                continue
            fig.tight_layout()
            _legend_below(fig, [s for s in group if s.index in drawn])
            docs = "; ".join(
                f"{c.split('.', 1)[1]}: {MEASUREMENT_DOC[c.split('.', 1)[1]]}"
                for c in cgroup
                if c.split(".", 1)[1] in MEASUREMENT_DOC
            )
            constant = constant_columns(d)
            cap = (
                "Measurements reported by the regularizers at each evaluation (evals.jsonl columns "
                "<regularizer>.<measurement>, and monitor.<penalty> for penalties measured without "
                "entering the loss), against the "
                f"{xlabel}. Line: mean over seeds; shaded band: {BAND}. A panel spanning more than two "
                "decades (one for losses and objectives) uses a log y axis. Per-layer and per-group "
                "breakdowns are not drawn (they are in evals.jsonl)."
                + (f" Definitions: {docs}." if docs else "")
                + (
                    " Not drawn, the same in every run and evaluation: "
                    + ", ".join(f"{c} = {v:g}" for c, v in constant.items())
                    + "."
                    if constant and gi == 0
                    else ""
                )
            )
            nparts = len(parts) * len(col_groups)
            pno = gi * len(parts) + part
            out.append(
                Fig(
                    _part("measurements", pno, nparts),
                    _part_title("Regularizer measurements during training", pno, nparts),
                    cap,
                    to_png(fig),
                    "measurements",
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# final metrics
# ---------------------------------------------------------------------------------------------


def final_accuracy_figures(d: ReportData, metric: str = "test_acc") -> list[Fig]:
    from ..aggregate import aggregate_seeds

    if metric not in d.runs.columns or d.runs[metric].notna().sum() == 0:
        return []
    out = []
    parts = list(chunks(d.settings))
    for part, group in parts:
        fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(group) + 1.2))
        for i, s in enumerate(group):
            sub = d.runs[d.runs["run"].isin(s.runs) & (d.runs["status"] == "done")]
            vals = pd.to_numeric(sub[metric], errors="coerce").dropna().to_numpy() * 100
            y = len(group) - 1 - i
            if len(vals):
                ax.scatter(
                    vals,
                    np.full(len(vals), y) + np.linspace(-0.12, 0.12, len(vals)),
                    color=s.color,
                    s=18,
                    alpha=0.7,
                    zorder=3,
                )
                agg = aggregate_seeds(sub, [metric], by=[]).iloc[0]
                m, h = agg[f"{metric}_mean"] * 100, agg[f"{metric}_ci95"] * 100
                ax.errorbar(
                    [m],
                    [y],
                    xerr=None if math.isnan(h) else [[h], [h]],
                    fmt="D",
                    color="black",
                    ms=5,
                    capsize=4,
                    zorder=4,
                )
        ax.set_yticks(range(len(group)))
        ax.set_yticklabels([s.label for s in reversed(group)])
        for t, s in zip(ax.get_yticklabels(), reversed(group)):
            t.set_color(s.color)
        ax.set_ylim(-0.6, len(group) - 0.4)
        name = {"test_acc": "test accuracy", "val_acc": "validation accuracy", "train_acc": "training accuracy"}[metric]
        ax.set_xlabel(f"final {name} (%)")
        ax.grid(axis="y", alpha=0)
        fig.tight_layout()
        cap = (
            f"Final {name} of every run (dots, one per seed) and the mean over seeds with its 95% "
            "confidence interval (black diamond and bars, Student's t; no bar with one run). "
            "Diverged runs are left out."
        )
        nparts = len(parts)
        out.append(
            Fig(
                _part(f"final_{metric}", part, nparts),
                _part_title(f"Final {name}", part, nparts),
                cap,
                to_png(fig),
                "metrics",
            )
        )
    return out
