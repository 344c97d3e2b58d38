"""`build_report`: a results root (or some of its runs) -> ``out_dir/index.html``.

The page is self-contained (figures embedded as base64 PNG data URIs, inline CSS, no
JavaScript). Next to it the report writes ``figures/<name>.png`` (the same figures, for a paper),
``final_metrics.csv`` (the aggregated table) and ``report.json`` (a manifest: settings and
figures with their captions). Everything is rendered in a temporary directory first and moved
into place file by file with ``index.html`` last, each move an atomic rename: a crash leaves the
previous report (or none), never a half-written file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..aggregate import aggregate_seeds
from ..report_table import format_mean_ci, format_mean_ci_sig
from ..results import provenance_notes
from . import figures as F
from . import html as H
from .data import ReportData, fmt_value, is_missing, load_report_data

SPLITS = (("train", "train"), ("val", "validation"), ("test", "test"))


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------


def _overview(d: ReportData) -> str:
    df = d.runs
    n = len(df)
    seeds = sorted({s for s in df["seed"].tolist()}, key=str) if "seed" in df.columns else []
    per = [len(s.runs) for s in d.settings]
    rng = f"{min(per)}" if min(per) == max(per) else f"{min(per)}–{max(per)}"
    parts = [
        f"<p>{n} finished run{'s' * (n != 1)} from <code>{H.e(d.root)}</code>, grouped into "
        f"{len(d.settings)} setting{'s' * (len(d.settings) != 1)} (runs that differ only in their seed), "
        f"{rng} run{'s' * (max(per) != 1)} per setting; seeds: {H.e(', '.join(map(str, seeds)) or '–')}.</p>"
    ]
    for note in provenance_notes(d.runs):
        parts.append(f'<p class="flag">{H.e(note[0].upper() + note[1:])}.</p>')
    if d.damaged:
        items = "".join(f"<li><code>{H.e(x['path'])}</code>: {H.e(x['why'])}</li>" for x in d.damaged)
        parts.append(
            f'<p class="flag">{len(d.damaged)} damaged run director{"ies" if len(d.damaged) != 1 else "y"} '
            f"left out (their content cannot be trusted):</p><ul>{items}</ul>"
        )
    div = int((df["status"] == "diverged").sum())
    if div:
        parts.append(
            f'<p class="flag">{div} run{"s" * (div != 1)} diverged (non-finite loss); '
            "they are flagged in the tables and left out of the means.</p>"
        )
    if len(d.skipped):
        st = d.skipped["status"].value_counts().to_dict()
        parts.append(
            H.note(
                f"Not included: {len(d.skipped)} unfinished run(s) ({', '.join(f'{v} {k}' for k, v in st.items())})."
            )
        )
    # varying axes
    if d.axes:
        rows = []
        for c in d.axes:
            vals = sorted({fmt_value(v) for v in df[c].tolist()}, key=lambda x: (x == "–", x))
            rows.append([f"<code>{H.e(c)}</code>", H.e(", ".join(vals))])
        parts.append("<h3>What varies</h3>")
        parts.append(H.table(["config field", "values (– = not set)"], rows))
    else:
        parts.append("<p>All runs share one configuration (apart from the seed).</p>")
    # common config, one row per top-level section
    common = [c for c in d.config_columns if c not in d.axes and c != "seed" and c != "regularizers"]
    sections: dict[str, list[str]] = {}
    for c in common:
        v = df[c].iloc[0]
        if is_missing(v) and c.startswith("regularizers."):
            continue
        top, _, rest = c.partition(".")
        key = rest or top
        txt = "null" if is_missing(v) else fmt_value(v)
        sections.setdefault(top if rest else "run", []).append(f'<span class="kv"><b>{H.e(key)}=</b>{H.e(txt)}</span>')
    if "regularizers" in common and not any(c.startswith("regularizers.") for c in d.config_columns):
        sections.setdefault("regularizers", []).append('<span class="kv">none</span>')
    if sections:
        parts.append("<h3>Configuration common to all runs</h3>")
        parts.append(
            H.table(["section", "values"], [[f"<code>{H.e(k)}</code>", " ".join(v)] for k, v in sections.items()])
        )
    return "".join(parts)


def _settings_table(d: ReportData) -> str:
    rows, classes = [], []
    for s in d.settings:
        full = " ".join(
            f'<span class="kv"><b>{H.e(c)}=</b>{H.e(fmt_value(v))}</span>'
            for c, v in s.values.items()
            if not is_missing(v)
        )
        div = len(s.diverged)
        rows.append(
            [
                str(s.index + 1),
                H.setting(s.color, s.label),
                str(len(s.runs)),
                H.e(", ".join(map(str, s.seeds))),
                f'<span class="flag">{div}</span>' if div else "0",
                full or "–",
                " ".join(f"<code>{H.e(r)}</code>" for r in s.runs),
            ]
        )
        classes.append("diverged" if div else "")
    return H.table(
        ["#", "setting", "runs", "seeds", "diverged", "config values", "run hashes"],
        rows,
        num_cols=(0, 2, 4),
        row_classes=classes,
    )


def measurement_final_columns(d: ReportData) -> list[str]:
    keys = F.reg_keys(d)
    cols = []
    for c in d.runs.columns:
        if c.startswith("lam."):
            continue
        if not any(c.startswith(k + ".") and "." not in c[len(k) + 1 :] for k in keys):
            continue
        if pd.api.types.is_numeric_dtype(d.runs[c]) and d.runs[c].notna().any():
            cols.append(c)
    return cols


def final_metrics(d: ReportData) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """One row per setting: n, diverged and the aggregates of every final metric (done runs only).

    Returns the frame and the shown metrics as (column, header, kind: loss|acc|other)."""
    metrics: list[tuple[str, str, str]] = []
    for sp, name in SPLITS:
        if f"{sp}_loss" in d.runs.columns and d.runs[f"{sp}_loss"].notna().any():
            metrics.append((f"{sp}_loss", f"{name} loss", "loss"))
        if f"{sp}_acc" in d.runs.columns and d.runs[f"{sp}_acc"].notna().any():
            metrics.append((f"{sp}_acc", f"{name} acc. (%)", "acc"))
    for c in measurement_final_columns(d):
        metrics.append((c, c, "other"))
    for c in sorted(c for c in d.runs.columns if c.startswith("lam.")):
        if d.runs[c].notna().any():
            metrics.append((c, c.replace("lam.", "final λ "), "other"))
    rows = []
    for s in d.settings:
        sub = d.runs[d.runs["run"].isin(s.runs)]
        ok = sub[sub["status"] == "done"]
        agg = aggregate_seeds(ok, [m for m, _, _ in metrics], by=[]).iloc[0].to_dict() if len(ok) else {}
        row = {"setting": s.label, "runs": len(sub), "n": len(ok), "diverged": len(s.diverged)}
        for c, v in s.values.items():
            row[c] = v
        for m, _, _ in metrics:
            for k in ("mean", "std", "ci95"):
                row[f"{m}_{k}"] = agg.get(f"{m}_{k}", math.nan)
        rows.append(row)
    return pd.DataFrame(rows), metrics


def _metrics_table(d: ReportData, fm: pd.DataFrame, metrics, counts: bool = True) -> str:
    """One row per setting; the diverged column only when some run diverged (the text says so)."""
    with_diverged = counts and bool((fm["diverged"] > 0).any())
    best: dict[str, int] = {}
    for m, _, kind in metrics:
        col = fm[f"{m}_mean"]
        if kind in ("loss", "acc") and col.notna().sum() > 1:
            best[m] = int(col.idxmax() if kind == "acc" else col.idxmin())
    rows, classes = [], []
    for i, (s, r) in enumerate(zip(d.settings, fm.to_dict("records"))):
        div = r["diverged"]
        cells: list[H.Cell] = [H.setting(s.color, s.label)]
        if counts:
            cells.append(str(r["n"]))
        if with_diverged:
            cells.append(f'<span class="flag">⚠ {div}</span>' if div else "0")
        for m, _, kind in metrics:
            mean, half = r[f"{m}_mean"], r[f"{m}_ci95"]
            acc = kind == "acc"
            txt = format_mean_ci(mean, half, scale=100.0, digits=2) if acc else format_mean_ci_sig(mean, half)
            cells.append((H.e(txt), "best") if best.get(m) == i else H.e(txt))
        rows.append(cells)
        classes.append("diverged" if div else "")
    header = ["setting", *(["n"] if counts else []), *(["diverged"] if with_diverged else [])]
    header += [H.e(h) for _, h, _ in metrics]
    return H.table(header, rows, num_cols=range(1, len(header)), row_classes=classes)


def _margin_table(d: ReportData, by: dict, kind: str) -> str:
    rows = []
    for s in d.settings:
        if s.index not in by:
            continue
        for sp, name in SPLITS:
            v = by[s.index].get(f"{sp}/{kind}")
            if v is None or not len(v):
                continue
            q05, q50, q95 = np.quantile(v, [0.05, 0.5, 0.95])
            rows.append(
                [
                    H.setting(s.color, s.label),
                    H.e(name),
                    str(len(v)),
                    f"{q50:.4g}",
                    f"{q05:.4g}",
                    f"{q95:.4g}",
                    f"{100 * np.mean(v < 0):.1f}",
                ]
            )
    if not rows:
        return ""
    return (
        f"<p>Summary of the '{H.e(kind)}' margins pooled over seeds: number of examples, median, 5% and 95% "
        "quantiles, and the percentage of examples with a negative margin (misclassified).</p>"
        + H.table(["setting", "split", "examples", "median", "q05", "q95", "negative (%)"], rows, num_cols=range(2, 7))
    )


def _measurement_table(d: ReportData, fm: pd.DataFrame, metrics) -> str:
    """Long format (setting, quantity, value): stays narrow however many measurements there are."""
    rows = []
    for s, r in zip(d.settings, fm.to_dict("records")):
        first = True
        for m, h, _ in metrics:
            mean, half = r[f"{m}_mean"], r[f"{m}_ci95"]
            if math.isnan(mean):
                continue
            rows.append(
                [
                    H.setting(s.color, s.label) if first else "",
                    f"<code>{H.e(h)}</code>",
                    H.e(format_mean_ci_sig(mean, half)),
                ]
            )
            first = False
    return H.table(["setting", "quantity", "final value"], rows, num_cols=(2,)) if rows else ""


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------


class _Figs:
    def __init__(self):
        self.items: list[F.Fig] = []

    def html(self, figs: list[F.Fig]) -> str:
        out = []
        for f in figs:
            self.items.append(f)
            out.append(H.figure(len(self.items), f.name, f.title, f.caption, f.png))
        return "".join(out)


def _render(d: ReportData, title: str) -> tuple[str, list[F.Fig], pd.DataFrame]:
    figs = _Figs()
    body, nav = [], []

    def add(sec_id: str, name: str, content: str) -> None:
        body.append(H.section(sec_id, name, content))
        nav.append((sec_id, name))

    add("overview", "What was run", _overview(d))
    add(
        "settings",
        "Settings",
        "<p>Runs are grouped into settings by every config field that varies across runs, except the seed. "
        "Each setting keeps its color in every figure.</p>" + _settings_table(d),
    )

    fm, metrics = final_metrics(d)
    txt = (
        "<p>Final metrics of each setting, measured at the end of training (on the restored best weights "
        "where early stopping asked for it): mean over the seeds ± the half-width of the 95% confidence interval "
        "of the mean (Student's t with n−1 degrees of freedom; no interval with one run). n counts the runs "
        "that finished without diverging; "
        + ("diverged runs (⚠) are excluded from the means. " if (fm["diverged"] > 0).any() else "no run diverged. ")
        + "Losses are the data term only (no penalty); accuracies are in percent. Best mean per column in "
        "bold.</p>"
    )
    main = [m for m in metrics if m[2] != "other"]
    other = [m for m in metrics if m[2] == "other"]
    tables = _metrics_table(d, fm, main)
    if other:
        tables += (
            "<p>Regularizer measurements of the final evaluation "
            "(evals.jsonl columns &lt;regularizer&gt;.&lt;measurement&gt;) "
            "and the final λ of each regularizer: mean ± 95% CI over the same runs.</p>"
            + _measurement_table(d, fm, other)
        )
    add("metrics", "Final metrics", txt + tables + figs.html(F.final_accuracy_figures(d)))

    curves = F.curve_figures(d)
    add(
        "curves",
        "Training curves",
        figs.html(curves) if curves else H.note("No evaluation logs (evals.jsonl) in these runs."),
    )

    lam = F.lambda_figures(d)
    keys = F.reg_keys(d)
    if lam:
        add("lambda", "λ schedules", figs.html(lam))
    elif keys:
        add(
            "lambda",
            "λ schedules",
            H.note(
                f"λ is constant during training in every run (regularizers: {', '.join(keys)}); "
                "see the final metrics table for its value."
            ),
        )

    meas = F.measurement_figures(d)
    if meas:
        add("measurements", "Regularizer measurements", figs.html(meas))

    missing: list[str] = []
    by = F.margins_by_setting(d)
    margins, kind = F.margin_figures(d, by)
    if margins:
        assert kind is not None  # margin figures exist only for a chosen kind
        add("margins", "Margins", figs.html(margins) + _margin_table(d, by, kind))
    else:
        missing.append("margins (analysis/margins.npz)")

    ranks = F.rank_figures(d) + F.rank_during_figures(d) + F.spectrum_figures(d) + F.spectrum_histogram_figures(d)
    if ranks:
        add("ranks", "Ranks and spectra", figs.html(ranks))
    else:
        missing.append("ranks and spectra (analysis/ranks.csv, ranks_during.jsonl, singular_values.npz)")

    sparse = F.sparsity_figures(d)
    if sparse:
        add("sparsity", "Active units", figs.html(sparse))
    else:
        missing.append("active units (analysis/sparsity.json)")

    land = F.landscape_figures(d)
    if land:
        add(
            "landscape",
            "Loss landscapes",
            "<p>One representative run per setting (its lowest seed that did not diverge).</p>"
            + f'<div class="grid2">{figs.html(land)}</div>',
        )
    else:
        missing.append("loss landscapes (analysis/landscape/*.png)")

    if missing:
        add(
            "missing",
            "Not in this report",
            H.note(
                "These analyses were not found in any of the runs, so their sections are omitted: "
                + "; ".join(missing)
                + ". They are written by the run analysis (config section `analysis`)."
            ),
        )

    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    meta = (
        f"reglab {H.e(__version__)} · generated {H.e(now)} · {len(d.runs)} runs · "
        f"{len(d.settings)} settings · {len(figs.items)} figures"
    )
    return H.page(title, meta, nav, "".join(body)), figs.items, fm


def _default_title(d: ReportData) -> str:
    names = d.runs["name"].dropna().astype(str).unique().tolist() if "name" in d.runs.columns else []
    if len(names) == 1 and names[0] not in ("run", ""):
        return f"reglab report: {names[0]}"
    return "reglab report"


def build_report(
    root: Path,
    out_dir: Path,
    runs: list[str] | None = None,
    title: str | None = None,
    vector_formats: tuple[str, ...] = (),
    width: float | None = None,
) -> Path:
    """Write a self-contained HTML report of the runs under `root` to ``out_dir/index.html``.

    `vector_formats` ("pdf", "svg") also writes every figure as ``figures/<name>.<fmt>``, drawn
    `width` inches wide (a paper's column: about 3.3) when given.

    `runs` restricts the report to these run hashes (unique prefixes and run directory paths work
    too). Returns the path of index.html. Raises `reglab.errors.UserError` when there is nothing
    to report (no runs, an unknown run, no finished run).
    """
    import matplotlib.pyplot as plt

    root, out_dir = Path(root), Path(out_dir)
    d = load_report_data(root, runs)
    title = title or _default_title(d)
    from . import plotting

    plotting.VECTOR_EXPORT.update(formats=tuple(vector_formats), width=width)
    try:
        with plt.rc_context(F.STYLE):
            page, figs, fm = _render(d, title)
    finally:
        plotting.VECTOR_EXPORT.update(formats=(), width=None)
    manifest = {
        "title": title,
        "root": str(root),
        "runs": d.runs["run"].tolist(),
        "settings": [
            {
                "index": s.index + 1,
                "label": s.label,
                "values": {k: fmt_value(v) for k, v in s.values.items()},
                "runs": s.runs,
                "diverged": s.diverged,
            }
            for s in d.settings
        ],
        "figures": [
            {
                "name": f.name,
                "title": f.title,
                "caption": f.caption,
                "section": f.section,
                "file": f"figures/{f.name}.png",
            }
            for f in figs
        ],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".report-tmp-"))
    try:
        (tmp / "figures").mkdir()
        files = {f"{f.name}.png": f.png for f in figs}
        for f in figs:
            files.update({f"{f.name}.{fmt}": data for fmt, data in getattr(f.png, "vectors", {}).items()})
        for name, data in files.items():
            _write(tmp / "figures" / name, data)
        _write(tmp / "final_metrics.csv", fm.to_csv(index=False).encode())
        _write(tmp / "report.json", (json.dumps(manifest, indent=2) + "\n").encode())
        _write(tmp / "index.html", page.encode("utf-8"))
        (out_dir / "figures").mkdir(exist_ok=True)
        old = {p.name for ext in ("png", "pdf", "svg") for p in (out_dir / "figures").glob(f"*.{ext}")}
        for name in files:
            os.replace(tmp / "figures" / name, out_dir / "figures" / name)
        for stale in old - set(files):
            (out_dir / "figures" / stale).unlink(missing_ok=True)
        os.replace(tmp / "final_metrics.csv", out_dir / "final_metrics.csv")
        os.replace(tmp / "report.json", out_dir / "report.json")
        os.replace(tmp / "index.html", out_dir / "index.html")  # last: the report exists from here on
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "index.html"


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
