"""Run directories read back as pandas DataFrames.

`load_runs(root)` has one row per run: ``run`` (the config hash), ``status`` (done, diverged,
running, failed), ``name``, every config value as a dotted column (``optim.lr``,
``regularizers.0.lam``, ...), and the final metrics (``train_loss``, ``test_acc``, ..., as
measured at the end of the run, after restoring the best weights when early stopping asked
for it), plus ``steps``, ``epochs``, ``wall_time``, ``best_step``, ``num_params``.
Finished runs also have ``compute_version`` and ``stale`` (computed by an older reglab, see
reglab.provenance) and ``trained_on`` (one-by-one, vectorized, or mixed when resumed on the
other path). `load_evals(root)` and `load_steps(root)` stack the per-evaluation and per-step logs of every
run, with a ``run`` column.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import pandas as pd

from . import provenance
from .store import RunDir, run_dirs


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif key == "regularizers" and not v:
            continue  # no regularizer: its columns stay empty rather than adding one for []
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, item in enumerate(v):
                out.update(_flatten(item, f"{key}.{i}."))
        elif isinstance(v, list):
            out[key] = tuple(v)
        else:
            out[key] = v
    return out


def run_status(rd: RunDir) -> str:
    if rd.done:
        s = rd.read_summary() or {}
        return s.get("status", "done")
    if (rd.path / "error.json").exists():
        return "failed"
    return "incomplete"


def run_row(rd: RunDir) -> dict:
    rec = rd.read_config()
    row = {"run": rec["hash"], "status": run_status(rd), "name": rec["config"].get("name")}
    cfg = _flatten(rec["canonical"])
    row.update(cfg)
    row["_config_columns"] = list(cfg)
    s = rd.read_summary()
    if s:
        for k in ("steps", "epochs", "wall_time", "best_step", "num_params", "stopped_early", "diverged_step"):
            row[k] = s.get(k)
        row["compute_version"] = provenance.compute_version(s)
        row["stale"] = provenance.is_stale(s)
        row["trained_on"] = provenance.trained_on(s)
        for k, v in (s.get("final") or {}).items():
            if k not in ("step", "epoch"):
                row[k] = v
    row["path"] = str(rd.path)
    return row


def damage(rd: RunDir) -> str | None:
    """Why a run directory's content cannot be trusted, or None when it can: its config.json must
    be readable, name the directory's hash, and hold a canonical form and a config that both hash
    to it (a hand edit would otherwise label this run's numbers with another run's settings)."""
    from .config import config_hash
    from .errors import UserError
    from .validation import validate

    name = rd.path.name
    try:
        rec = rd.read_config()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"config.json cannot be read ({type(e).__name__}: {e})"
    if (
        not isinstance(rec, dict)
        or not isinstance(rec.get("config"), dict)
        or not isinstance(rec.get("canonical"), dict)
    ):
        return "config.json lacks the run's config or its canonical form"
    if rec.get("hash") != name:
        return f"config.json names run {rec.get('hash')!r}, not this directory's {name}"
    blob = json.dumps(rec["canonical"], sort_keys=True, separators=(",", ":"))
    if hashlib.sha256(blob.encode()).hexdigest()[:12] != name:
        return "the canonical config in config.json does not match the run's hash (the file was edited)"
    try:
        cfg = validate(rec["config"])
    except UserError as e:
        return f"the config in config.json is not valid: {e}"
    if config_hash(cfg) != name:
        return "the config in config.json does not match the run's hash (the file was edited)"
    try:
        rd.read_summary()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"summary.json cannot be read ({type(e).__name__}: {e})"
    return None


def _selected(root: str | Path, sweep: str | None, runs: list[str] | None) -> tuple[list[RunDir], list[dict[str, str]]]:
    """The selected run directories whose content can be trusted, and the damaged ones (path, why).
    `root` may also be one run directory (the table then has that run only)."""
    from .errors import UserError

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"root: {root} is not a directory (a results root, or one run directory)")
    dirs = [RunDir(root)] if (root / "config.json").is_file() else run_dirs(root)
    if sweep is not None:
        from .sweep.runner import sweep_hashes

        wanted = set(sweep_hashes(Path(root), sweep))
        dirs = [d for d in dirs if d.path.name in wanted]
    if runs is not None:
        dirs = [d for d in dirs if d.path.name in set(runs)]
    good, damaged = [], []
    for d in dirs:
        why = damage(d)
        if why is None:
            good.append(d)
        else:
            damaged.append({"path": str(d.path), "why": why})
    return good, damaged


def _warn_damaged(damaged: list[dict[str, str]]) -> None:
    for d in damaged:
        warnings.warn(f"damaged run {d['path']}: {d['why']}; left out", UserWarning, stacklevel=3)


def load_runs(root: str | Path = "runs", sweep: str | None = None, runs: list[str] | None = None) -> pd.DataFrame:
    """One row per run under `root` (see module docstring for the columns); `sweep` keeps the
    runs of that sweep only (its manifest under root/sweeps/), `runs` a list of run hashes.
    Damaged run directories (see `damage`) are left out with a warning each, and listed in
    ``df.attrs["damaged"]`` (path, why)."""
    rows, config_cols = [], {}
    dirs, damaged = _selected(root, sweep, runs)
    _warn_damaged(damaged)
    for rd in dirs:
        row = run_row(rd)
        rows.append(row)
        config_cols.update(dict.fromkeys(row.pop("_config_columns")))
    df = pd.DataFrame(rows)
    df.attrs["config_columns"] = list(config_cols)
    df.attrs["damaged"] = damaged
    return df


def _stack(root: str | Path, which: str, sweep: str | None = None, runs: list[str] | None = None) -> pd.DataFrame:
    frames = []
    dirs, damaged = _selected(root, sweep, runs)
    _warn_damaged(damaged)
    for rd in dirs:
        rows = rd.evals() if which == "evals" else rd.steps()
        if rows:
            df = pd.DataFrame(rows)
            df.insert(0, "run", rd.path.name)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_evals(root: str | Path = "runs", sweep: str | None = None, runs: list[str] | None = None) -> pd.DataFrame:
    return _stack(root, "evals", sweep, runs)


def load_steps(root: str | Path = "runs", sweep: str | None = None, runs: list[str] | None = None) -> pd.DataFrame:
    return _stack(root, "steps", sweep, runs)


def value_sort_key(v: object) -> tuple:
    """One order for config values everywhere settings are listed (tables and reports): unset
    first, then numbers by value, then anything else by its text."""
    import numpy as np

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return (0, 0.0, "")
    if isinstance(v, int | float | np.number) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0.0, str(v))


def order_by_config(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Rows ordered by these config columns with value_sort_key (the report's setting order)."""
    if not columns or df.empty:
        return df
    keys = [tuple(value_sort_key(row[c]) for c in columns) for _, row in df.iterrows()]
    order = sorted(range(len(df)), key=lambda i: keys[i])
    return df.iloc[order]


def varying_columns(df: pd.DataFrame) -> list[str]:
    """Config columns whose value differs between runs (what a table should show)."""
    skip = {"run", "status", "name", "path"}
    known = df.attrs.get("config_columns")
    if known is not None:
        cfg_cols = [c for c in known if c in df.columns]
    else:  # a frame not made by load_runs: config columns are the dotted ones
        cfg_cols = [c for c in df.columns if "." in c or c in ("seed",)]
    out = []
    for c in cfg_cols:
        if c in skip:
            continue
        vals = df[c].astype(str)
        if vals.nunique(dropna=False) > 1:
            out.append(c)
    return out


def provenance_notes(df: pd.DataFrame) -> list[str]:
    """Plain-language warnings about how the runs of a table were computed: runs computed by an
    older reglab (stale), and settings whose seeds were trained on different paths (vectorized
    groups and one-by-one training agree only up to float reduction order; see README)."""
    notes: list[str] = []
    if df.empty:
        return notes
    if "stale" in df.columns:
        stale = df[df["stale"].fillna(False).astype(bool)]
        if len(stale):
            versions = sorted({int(v) for v in stale["compute_version"]})
            notes.append(
                f"{len(stale)} run(s) were computed by an older reglab (compute version "
                f"{', '.join(map(str, versions))} < {provenance.COMPUTE_VERSION}): {', '.join(stale['run'])}; "
                "`reglab sweep ... --rerun-stale` recomputes them"
            )
    if "trained_on" in df.columns:
        known = df.attrs.get("config_columns") or [c for c in df.columns if "." in c]
        keys = [c for c in known if c in df.columns and c not in ("seed", "name")]
        for _, group in df.groupby(df[keys].map(str).agg("|".join, axis=1) if keys else [0] * len(df)):
            paths = set(group["trained_on"].dropna()) - {"unknown"}
            if len(paths) > 1 or "mixed" in paths:
                notes.append(
                    f"the seeds of one setting were trained on different paths ({', '.join(sorted(paths))}): "
                    f"{', '.join(group['run'])}; they agree only up to float reduction order"
                )
    return notes
