"""What a report needs, read from a results root: the runs, their grouping into settings, the
per-run logs and the analysis files (each optional).

A *setting* is a group of runs that differ only in ``seed``: every config column that varies
across the selected runs, except ``seed``, is part of the setting's identity. Each setting gets
a short readable label and a color that stays the same in every figure of the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..results import _flatten, load_runs, value_sort_key, varying_columns
from ..store import RunDir, read_jsonl

FINISHED = ("done", "diverged")
"""Run statuses that a report draws; other runs (incomplete, failed) are only counted."""


@dataclass
class Setting:
    index: int
    label: str
    values: dict[str, object]
    """The setting's value of every varying config column (seed excluded), full dotted names."""
    runs: list[str]
    """Run hashes of the setting (finished runs only), sorted by seed."""
    seeds: list[object]
    color: tuple = (0.0, 0.0, 0.0, 1.0)
    diverged: list[str] = field(default_factory=list)


@dataclass
class ReportData:
    root: Path
    runs: pd.DataFrame
    """load_runs rows of the finished selected runs."""
    skipped: pd.DataFrame
    """Selected runs that are not finished (incomplete, failed)."""
    config_columns: list[str]
    axes: list[str]
    """Varying config columns except seed (the setting identity)."""
    settings: list[Setting]
    evals: pd.DataFrame
    damaged: list[dict[str, str]] = field(default_factory=list)
    """Run directories left out because their content cannot be trusted (path, why)."""

    def load_steps(self, runs: list[str]) -> pd.DataFrame:
        """The per-step logs of these runs (read on demand: they can be long)."""
        return _stack(self.runs[self.runs["run"].isin(runs)], "steps")

    def setting_of(self) -> dict[str, Setting]:
        return {r: s for s in self.settings for r in s.runs}

    def run_path(self, run: str) -> Path:
        return Path(self.runs.loc[self.runs["run"] == run, "path"].iloc[0])


# ---------------------------------------------------------------------------------------------
# values and labels
# ---------------------------------------------------------------------------------------------


def is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_value(v: object) -> str:
    """A config value as a short string: 0.001 -> 0.001, 1e-05 -> 1e-05, (a, b) -> a,b."""
    if is_missing(v):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(fmt_value(x) for x in v) + "]"
    return str(v)


_ABBREV = {"lam": "λ", "schedule.name": "schedule", "learning_rate": "lr"}


def _short_name(col: str, others: list[str]) -> str:
    """The last dotted component of `col`, or more components when that is ambiguous."""
    parts = col.split(".")
    for k in range(1, len(parts) + 1):
        cand = ".".join(parts[-k:])
        clash = [o for o in others if o != col and (o == cand or o.endswith("." + cand))]
        if not clash:
            break
    cand = ".".join(parts[-k:])
    if cand.endswith(".name") and k > 1:
        cand = cand[: -len(".name")]
    return _ABBREV.get(cand, cand)


def _reg_index(col: str) -> int | None:
    parts = col.split(".")
    if len(parts) >= 3 and parts[0] == "regularizers" and parts[1].isdigit():
        return int(parts[1])
    return None


def _pair(name: str, value: object) -> str:
    """`name=value`, and a switch as `name on` / `name off` (shorter than =true/=false)."""
    if isinstance(value, bool | np.bool_):
        return f"{name} {'on' if value else 'off'}"
    return f"{name}={fmt_value(value)}"


def make_labels(values: list[dict[str, object]], axes: list[str]) -> list[str]:
    """Readable labels for settings given as dicts {column: value} over the same `axes`.

    Regularizer columns ``regularizers.<i>.<field>`` are shown as ``<name> λ=<lam>`` plus the
    fields that take more than one value (e.g. ``l2 λ=0.001``), and as ``no regularizer`` where
    the setting has none. Other columns show as ``<short name>=<value>``, with the shortest
    unambiguous tail of the dotted name (``optim.lr`` -> ``lr``, ``schedule.threshold`` ->
    ``threshold``), and switches as ``<name> on|off``.
    """
    if not axes:
        return ["all runs" for _ in values]
    reg_idx = sorted({i for c in axes if (i := _reg_index(c)) is not None})
    other = [c for c in axes if _reg_index(c) is None and c != "regularizers"]
    labels = []
    for vals in values:
        pieces = []
        for i in reg_idx:
            cols = [c for c in axes if _reg_index(c) == i]
            prefix = f"regularizers.{i}."
            present = {c[len(prefix) :]: vals.get(c) for c in cols if not is_missing(vals.get(c))}
            if not present:
                if i == 0:
                    pieces.append("no regularizer")
                continue
            sub = []
            name = present.pop("name", None)
            if name is None:
                # the name is common to all settings: only the varying fields are shown
                pass
            else:
                sub.append(str(name))
            sched = present.pop("schedule.name", None)
            if sched is not None and sched != "constant":
                sub.append(f"({sched})")
            if "lam" in present:
                lam_name = "λ₀" if sched is not None and sched != "constant" else "λ"
                sub.append(f"{lam_name}={fmt_value(present.pop('lam'))}")
            fields = list(present)
            for f, v in present.items():
                distinct = {fmt_value(d.get(prefix + f)) for d in values if not is_missing(d.get(prefix + f))}
                if len(distinct) > 1:
                    short = _ABBREV.get(f) or _short_name(
                        f.removesuffix(".name"), [x.removesuffix(".name") for x in fields]
                    )
                    sub.append(_pair(short, v))
            if sub:
                pieces.append(" ".join(sub))
        for c in other:
            pieces.append(_pair(_short_name(c, other), vals.get(c)))
        labels.append(", ".join(pieces) if pieces else "all runs")
    # labels must tell settings apart: fall back to full names where the short ones collide
    if len(set(labels)) < len(labels):
        labels = [", ".join(f"{c}={fmt_value(v.get(c))}" for c in axes) for v in values]
    return labels


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def _config_columns(df: pd.DataFrame) -> list[str]:
    cols: list[str] = []
    for p in df["path"]:
        rec = RunDir(Path(p)).read_config()
        for k in _flatten(rec["canonical"]):
            if k not in cols:
                cols.append(k)
    return [c for c in cols if c in df.columns]


def _select(df: pd.DataFrame, runs: list[str] | None) -> pd.DataFrame:
    if runs is None:
        return df
    names = df["run"].astype(str)
    keep: list[int] = []
    for r in runs:
        r = Path(str(r)).name  # a run directory path works too
        exact = df.index[names == r].tolist()
        hits = exact or df.index[names.str.startswith(r)].tolist()
        if not hits:
            raise UserError(f"runs: no run {r!r} under the results root")
        if len(hits) > 1:
            raise UserError(f"runs: {r!r} matches {len(hits)} runs; give more of the hash")
        keep += hits
    return df.loc[sorted(set(keep))]


_sort_key = value_sort_key  # the order of settings in every table and report


def load_report_data(root: Path, runs: list[str] | None = None) -> ReportData:
    from matplotlib import colormaps

    root = Path(root)
    all_runs = load_runs(root)
    if all_runs.empty:
        raise UserError(f"no runs under {root} (a run directory holds config.json)")
    sel = _select(all_runs, runs).reset_index(drop=True)
    finished = sel[sel["status"].isin(FINISHED)].reset_index(drop=True)
    skipped = sel[~sel["status"].isin(FINISHED)].reset_index(drop=True)
    if finished.empty:
        raise UserError(f"none of the {len(sel)} selected runs under {root} has finished")
    cfg_cols = _config_columns(finished)
    varying = [c for c in varying_columns(finished) if c in cfg_cols]
    if "regularizers" in cfg_cols and finished["regularizers"].astype(str).nunique(dropna=False) > 1:
        varying.append("regularizers")
    axes = [c for c in varying if c != "seed" and c != "regularizers"]
    # group: string keys so that NaN, tuples and mixed types group reliably
    keys = finished[axes].map(fmt_value).agg("\x1f".join, axis=1) if axes else pd.Series([""] * len(finished))
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    first_vals = {k: {c: finished.at[idx[0], c] for c in axes} for k, idx in groups.items()}
    order = sorted(groups, key=lambda k: tuple(_sort_key(first_vals[k][c]) for c in axes))
    labels = make_labels([first_vals[k] for k in order], axes)
    n = len(order)
    cmap = colormaps["tab10"] if n <= 10 else colormaps["tab20"] if n <= 20 else colormaps["turbo"]
    settings = []
    for j, (k, label) in enumerate(zip(order, labels)):
        sub = finished.loc[groups[k]]
        if "seed" in sub.columns:
            sub = sub.sort_values("seed", key=lambda s: s.map(lambda v: _sort_key(v)))
        color = cmap(j % cmap.N) if n <= 20 else cmap(0.05 + 0.9 * j / max(1, n - 1))
        settings.append(
            Setting(
                index=j,
                label=label,
                values=first_vals[k],
                runs=sub["run"].tolist(),
                seeds=sub["seed"].tolist() if "seed" in sub.columns else [],
                color=tuple(color),
                diverged=sub.loc[sub["status"] == "diverged", "run"].tolist(),
            )
        )
    evals = _stack(finished, "evals")
    return ReportData(root, finished, skipped, cfg_cols, axes, settings, evals, all_runs.attrs.get("damaged", []))


def _stack(df: pd.DataFrame, which: str) -> pd.DataFrame:
    frames = []
    for run, p in zip(df["run"], df["path"]):
        rows = read_jsonl(Path(p) / f"{which}.jsonl")
        if rows:
            f = pd.DataFrame(rows)
            f.insert(0, "run", run)
            frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# analysis files (each optional: produced by reglab.analysis when a run asked for it)
# ---------------------------------------------------------------------------------------------


def analysis_dir(path: Path) -> Path:
    return Path(path) / "analysis"


def read_margins(path: Path) -> dict[str, np.ndarray] | None:
    f = analysis_dir(path) / "margins.npz"
    if not f.exists():
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            return {k: np.asarray(z[k], dtype=float) for k in z.files}
    except Exception:
        return None


def read_csv(path: Path, name: str) -> pd.DataFrame | None:
    f = analysis_dir(path) / name
    if not f.exists():
        return None
    try:
        return pd.read_csv(f)
    except Exception:
        return None


def read_jsonl_frame(path: Path, name: str) -> pd.DataFrame | None:
    rows = read_jsonl(analysis_dir(path) / name)
    return pd.DataFrame(rows) if rows else None


def read_json(path: Path, name: str) -> dict | None:
    f = analysis_dir(path) / name
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except Exception:
        return None


def read_npz(path: Path, name: str) -> dict[str, np.ndarray] | None:
    f = analysis_dir(path) / name
    if not f.exists():
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except Exception:
        return None


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def landscape_pngs(path: Path) -> dict[str, bytes]:
    """The landscape images of one run ({contour, surface, line}: PNG bytes), valid PNGs only."""
    d = analysis_dir(path) / "landscape"
    out = {}
    for name in ("contour", "surface", "line"):
        f = d / f"{name}.png"
        if f.exists():
            b = f.read_bytes()
            if b.startswith(PNG_MAGIC):
                out[name] = b
    return out


def landscape_meta(path: Path) -> dict:
    z = read_npz(path, "landscape/landscape.npz")
    if not z or "meta" not in z:
        return {}
    try:
        m = z["meta"]
        return json.loads(str(m.item() if m.ndim == 0 else m.tolist()))
    except Exception:
        return {}
