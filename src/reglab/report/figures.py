"""The report's figures: matplotlib (Agg) figures rendered to PNG bytes.

Every function takes the `ReportData` (and sometimes a subset of its settings) and returns a
list of `Fig` (name, title, caption, png bytes); an empty list means "nothing to draw". Colors
come from each setting, so a setting has the same color in every figure. At most
`MAX_SETTINGS` settings are drawn in one figure; more are split over several figures.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg", force=False)  # no display needed; a no-op when a backend is already set

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .data import ReportData, Setting, landscape_meta, landscape_pngs, read_csv, read_json, read_jsonl_frame, read_margins, read_npz  # noqa: E402

MAX_SETTINGS = 10
DPI = 120
BAND = "min–max over seeds"

STYLE = {
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


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08, facecolor="white")
    plt.close(fig)
    return buf.getvalue()


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
# curves over training
# ---------------------------------------------------------------------------------------------


def x_axis(evals: pd.DataFrame) -> tuple[str, str]:
    """(column, label): epochs when runs last at least two epochs, else optimizer steps."""
    if "epoch" in evals.columns and pd.to_numeric(evals["epoch"], errors="coerce").max() >= 2:
        return "epoch", "epoch"
    return "step", "optimizer step"


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


def curve_figures(d: ReportData) -> list[Fig]:
    ev = d.evals
    if ev.empty:
        return []
    x, xlabel = x_axis(ev)
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
            for ax, split in zip(axes, cols):
                for s in group:
                    st = seed_stats(ev, s.runs, x, f"{split}_{metric}")
                    if st is not None:
                        _draw_mean_band(ax, st, s.color, scale)
                        drew = True
                ax.set_title(SPLIT_NAMES[split])
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
            if not drew:
                plt.close(fig)
                continue
            fig.tight_layout()
            _legend_below(fig, group)
            what = (
                "mean cross-entropy (or MSE for one-output models) of the data term alone, without the regularizer penalty"
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
            out.append(Fig(_part(f"lambda_{key}", part, nparts), _part_title(f"λ schedule: {key}", part, nparts), cap, to_png(fig), "lambda"))
    return out


MEASUREMENT_DOC = {
    "active_units_pct": "100·#{hidden units j with p_j = ‖w_j‖·‖v_j‖ > 0}/#units (incoming ‖w_j‖, outgoing ‖v_j‖)",
    "active_units_pct_thresh": "the same with p_j above the active threshold",
    "units_zeroed": "units set to zero by the last proximal step",
    "path_norm": "Σ_j ‖w_j‖·‖v_j‖ over the hidden units",
    "objective_path_norm": "path norm + ½ Σ ‖W_o‖² over the other layers",
    "objective_l2": "½ Σ (‖W‖² + ‖V‖²), the weight-decay objective",
    "rho": "ρ = Π_l ‖W_l‖_F, the product of the layers' Frobenius norms",
    "penalty": "the penalty R(w) as trained, before multiplying by λ",
    "total": "sum of the unit path norms",
    "grad_norm": "norm of the penalized gradient",
}


def measurement_columns(d: ReportData) -> list[str]:
    """``<key>.<measurement>`` columns of evals.jsonl for the regularizer keys; breakdowns with a
    further dot (``l2_mul.norm.<layer>``, ``pathprox.path_norm.<group>``) are left out."""
    keys = reg_keys(d)
    cols = []
    for c in d.evals.columns:
        for k in keys:
            if c.startswith(k + ".") and "." not in c[len(k) + 1 :]:
                if pd.api.types.is_numeric_dtype(d.evals[c]) and d.evals[c].notna().any():
                    cols.append(c)
                break
    return cols[:12]


def measurement_figures(d: ReportData) -> list[Fig]:
    ev = d.evals
    cols = measurement_columns(d)
    if not cols:
        return []
    x, xlabel = x_axis(ev)
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
                key, meas = c.split(".", 1)
                ax.set_title(f"{key}: {meas}", fontsize=10)
                ax.set_xlabel(xlabel)
                unit = " (%)" if meas.endswith("_pct") else ""
                ax.set_ylabel(meas + unit)
                vals = pd.to_numeric(ev.loc[ev["run"].isin([r for s in group for r in s.runs]), c], errors="coerce")
                vals = vals[np.isfinite(vals)]
                if meas.endswith("_pct") and len(vals):
                    ax.set_ylim(max(0.0, math.floor(vals.min() - 5)), 101)
                elif positive and len(vals) and vals.min() > 0 and vals.max() / vals.min() > 100:
                    ax.set_yscale("log")
            if not drawn:
                plt.close(fig)
                continue
            fig.tight_layout()
            _legend_below(fig, [s for s in group if s.index in drawn])
            docs = "; ".join(
                f"{c.split('.', 1)[1]}: {MEASUREMENT_DOC[c.split('.', 1)[1]]}" for c in cgroup if c.split(".", 1)[1] in MEASUREMENT_DOC
            )
            cap = (
                "Measurements reported by the regularizers at each evaluation (evals.jsonl columns "
                "<regularizer>.<measurement>), against the "
                f"{xlabel}. Line: mean over seeds; shaded band: {BAND}. A panel spanning more than two "
                "decades uses a log y axis. Per-layer and per-group breakdowns are not drawn (they are in evals.jsonl)."
                + (f" Definitions: {docs}." if docs else "")
            )
            nparts = len(parts) * len(col_groups)
            pno = gi * len(parts) + part
            out.append(Fig(_part("measurements", pno, nparts), _part_title("Regularizer measurements during training", pno, nparts), cap, to_png(fig), "measurements"))
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
                ax.scatter(vals, np.full(len(vals), y) + np.linspace(-0.12, 0.12, len(vals)), color=s.color, s=18, alpha=0.7, zorder=3)
                agg = aggregate_seeds(sub, [metric], by=[]).iloc[0]
                m, h = agg[f"{metric}_mean"] * 100, agg[f"{metric}_ci95"] * 100
                ax.errorbar([m], [y], xerr=None if math.isnan(h) else [[h], [h]], fmt="D", color="black", ms=5, capsize=4, zorder=4)
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
        out.append(Fig(_part(f"final_{metric}", part, nparts), _part_title(f"Final {name}", part, nparts), cap, to_png(fig), "metrics"))
    return out


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
    out: dict[int, dict[str, list]] = {}
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


def _violins(ax, data: list[np.ndarray], positions: list[float], colors: list) -> None:
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
        fig, axes = plt.subplots(1, len(splits), figsize=(3.6 * len(splits) + 0.5, 0.5 * len(group) + 1.4), sharey=True, squeeze=False)
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
        out.append(Fig(_part("margins", part, nparts), _part_title("Margin distributions", part, nparts), cap, to_png(fig), "margins"))
    return out, kind


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
        fig, axes = _panel_grid(len(metrics), max_cols=3, w=max(3.6, 0.55 * len(layers) * max(1, len(group)) ** 0.5 + 1.5), h=3.0)
        width = 0.8 / len(group)
        for ax, m in zip(axes, metrics):
            for j, s in enumerate(group):
                sub = f[f["setting"] == s.index]
                g = sub.groupby("layer")[m]
                mean = g.mean().reindex(layers)
                lo = mean - g.min().reindex(layers)
                hi = g.max().reindex(layers) - mean
                xs = np.arange(len(layers)) - 0.4 + width * (j + 0.5)
                ax.bar(xs, mean, width=width, color=s.color, alpha=0.85, yerr=[lo, hi], error_kw={"elinewidth": 0.8, "capsize": 1.5})
            if "full_rank" in f.columns or {"rows", "cols"} <= set(f.columns):
                if m in ("rank_numerical", "rank_rel", "effective_rank", "stable_rank"):
                    full = f.groupby("layer").apply(
                        lambda g: (g["full_rank"] if "full_rank" in g else np.minimum(g["rows"], g["cols"])).max(), include_groups=False
                    ).reindex(layers)
                    xs = np.arange(len(layers))
                    ax.hlines(full, xs - 0.42, xs + 0.42, colors="0.25", linestyles="--", lw=1.2, zorder=4)
            ax.set_xticks(np.arange(len(layers)))
            ax.set_xticklabels(layers, rotation=30 if len(layers) > 4 else 0, ha="right" if len(layers) > 4 else "center")
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
        out.append(Fig(_part("ranks", part, nparts), _part_title("Rank per layer", part, nparts), cap, to_png(fig), "ranks"))
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
        out.append(Fig(_part("ranks_during", part, nparts), _part_title("Rank during training", part, nparts), cap, to_png(fig), "ranks"))
    return out


def spectrum_figures(d: ReportData, max_layers: int = 6) -> list[Fig]:
    per: dict[int, dict[str, list[np.ndarray]]] = {}
    layers: list[str] = []
    for s in d.settings:
        for r in s.runs:
            if r in s.diverged:
                continue
            z = read_npz(d.run_path(r), "singular_values.npz")
            if not z:
                continue
            for k, v in z.items():
                v = np.sort(np.asarray(v, dtype=float).ravel())[::-1]
                if v.size == 0 or not np.isfinite(v).all():
                    continue
                if k not in layers:
                    layers.append(k)
                per.setdefault(s.index, {}).setdefault(k, []).append(v)
    if not per:
        return []
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
                    ax.fill_between(idx, np.where(a.min(0) > 0, a.min(0), np.nan), a.max(0), color=s.color, alpha=0.18, lw=0)
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
        out.append(Fig(_part("spectra", part, nparts), _part_title("Singular value spectra", part, nparts), cap, to_png(fig), "ranks"))
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
        out.append(Fig(_part("active_units", part, nparts), _part_title("Active units", part, nparts), cap, to_png(fig), "sparsity"))
    return out


# ---------------------------------------------------------------------------------------------
# landscapes (the PNGs the landscape writer made, of one representative run per setting)
# ---------------------------------------------------------------------------------------------


def representative_run(s: Setting) -> str | None:
    ok = [r for r in s.runs if r not in s.diverged]
    return ok[0] if ok else None


def landscape_figures(d: ReportData) -> list[Fig]:
    out = []
    for s in d.settings:
        r = representative_run(s)
        if r is None:
            continue
        path = d.run_path(r)
        pngs = landscape_pngs(path)
        if not pngs:
            continue
        meta = landscape_meta(path)
        desc = []
        for k in ("dims", "directions", "normalization", "split", "examples", "resolution", "range"):
            if k in meta:
                desc.append(f"{k} = {meta[k]}")
        seed = s.seeds[s.runs.index(r)] if s.seeds else "?"
        what = {"contour": "contour plot of the loss", "surface": "surface plot of the loss", "line": "loss along one direction"}
        for name, png in pngs.items():
            cap = (
                f"Loss landscape around the final weights of run {r} (seed {seed}), the representative "
                f"run of setting '{s.label}': {what[name]} at w + α·d1 (+ β·d2) over a grid of α (β), "
                f"as drawn by the landscape writer (analysis/landscape/{name}.png)"
                + (f"; {', '.join(desc)}" if desc else "")
                + "."
            )
            out.append(Fig(f"landscape_s{s.index + 1}_{name}", f"Landscape: {s.label} ({name})", cap, png, "landscape"))
    return out
