"""`reglab reproduce STUDY --scale quick|paper`: rerun one of the four seed studies.

A preset is an ordinary sweep YAML (copy it, edit it, run it with `reglab sweep`) with one extra
top-level block, `reproduce:`, that says how to read the results:

    reproduce:
      title: one line
      setting: "{regularizers.0.name} lam={regularizers.0.lam|0}"  # label of a setting ({key|default});
                                                                    # runs sharing a label are its seeds
      metrics: [test_acc, ...]          # columns of the summary table (mean ± 95% CI over seeds)
      claim:
        text: the study's headline claim in one line
        metric: test_acc
        expect: greater | less          # a's value is expected greater (less) than b's
        a: [label, ...]                 # the best of these settings (max for greater, min for less)
        b: [label, ...]                 # against the best of these

A claim is marked "reproduced" when the numbers go in the expected direction, and the line says
whether the two 95% confidence intervals are disjoint (a difference beyond seed noise) or not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .aggregate import aggregate_seeds
from .config import load_yaml
from .errors import ConfigError
from .report_table import format_mean_ci

PRESET_DIR = Path(__file__).parent / "presets"
STUDIES = ("multiplicative", "energy", "autol2", "pathprox")
SCALES = ("quick", "paper")


def preset_path(study: str, scale: str) -> Path:
    if study not in STUDIES:
        raise ConfigError("STUDY", f"unknown study {study!r}", STUDIES)
    if scale not in SCALES:
        raise ConfigError("--scale", f"unknown scale {scale!r}", SCALES)
    return PRESET_DIR / f"{study}_{scale}.yaml"


def load_preset(path: Path) -> tuple[dict, dict]:
    spec = load_yaml(path)
    meta = spec.pop("reproduce", None)
    if not isinstance(meta, dict) or "setting" not in meta or "claim" not in meta:
        raise ConfigError("reproduce", f"{path} needs a reproduce: block with setting, metrics and claim")
    return spec, meta


_FIELD = re.compile(r"\{([^{}]+)\}")


def _fmt_value(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def setting_label(row: dict, template: str) -> str:
    """Fill `{dotted.key}` (or `{dotted.key|default}`) fields of the template from a results row;
    an absent value prints as the default, or "none"."""

    def fill(m: re.Match) -> str:
        key, sep, default = m.group(1).partition("|")
        text = _fmt_value(row.get(key.strip()))
        return default if (text == "none" and sep) else text

    return _FIELD.sub(fill, template).strip()


def label_runs(df: pd.DataFrame, template: str) -> pd.DataFrame:
    df = df.copy()
    df["setting"] = [setting_label(r, template) for r in df.to_dict("records")]
    return df


@dataclass
class ClaimResult:
    text: str
    metric: str
    expect: str
    a: str
    b: str
    a_mean: float
    b_mean: float
    a_ci: float
    b_ci: float
    reproduced: bool | None
    separated: bool | None
    paired: bool = False
    diff_mean: float = math.nan
    diff_ci: float = math.nan
    n_pairs: int = 0

    def line(self) -> str:
        sign = ">" if self.expect == "greater" else "<"
        nums = (
            f"{self.a} {format_mean_ci(self.a_mean, self.a_ci, digits=4)} vs "
            f"{self.b} {format_mean_ci(self.b_mean, self.b_ci, digits=4)}"
        )
        if self.paired:
            nums += (
                f"; paired by seed (n={self.n_pairs}): a - b = {format_mean_ci(self.diff_mean, self.diff_ci, digits=4)}"
            )
        if self.reproduced is None:
            verdict = "NOT DETERMINED (a setting has no finished runs)"
        elif self.reproduced:
            noise = "the paired difference's 95% CI includes 0" if self.paired else "the 95% CIs overlap"
            verdict = "REPRODUCED" + ("" if self.separated else f" (but {noise}: within seed noise)")
        else:
            verdict = "NOT REPRODUCED"
        return f"claim: {self.text} [expected {self.metric}: a {sign} b] -> {verdict}: {nums}"


def check_claim(agg: pd.DataFrame, claim: dict, runs: pd.DataFrame | None = None) -> ClaimResult:
    """Compare the best of `a` with the best of `b` on the claim's metric.

    When `runs` (labelled per-run rows) share seeds between the two settings, the comparison is
    paired: the verdict's noise check uses the 95% CI of the per-seed differences a - b, which
    removes the seed-to-seed spread both settings share (initialization, data order).
    """
    metric, expect = claim["metric"], claim.get("expect", "greater")
    if expect not in ("greater", "less"):
        raise ConfigError("reproduce.claim.expect", f"unknown direction {expect!r}", ["greater", "less"])
    pick = max if expect == "greater" else min

    def best(labels):
        labels = [labels] if isinstance(labels, str) else list(labels)
        rows = agg[agg["setting"].isin(labels)]
        rows = rows[rows[f"{metric}_mean"].notna()] if f"{metric}_mean" in rows else rows.iloc[0:0]
        if rows.empty:
            return ", ".join(labels), math.nan, math.nan
        r = rows.loc[pick(rows.index, key=lambda i: rows.loc[i, f"{metric}_mean"])]
        return r["setting"], float(r[f"{metric}_mean"]), float(r[f"{metric}_ci95"])

    a, am, ac = best(claim["a"])
    b, bm, bc = best(claim["b"])
    res = ClaimResult(claim["text"], metric, expect, a, b, am, bm, ac, bc, None, None)
    if math.isnan(am) or math.isnan(bm):
        return res
    res.reproduced = am > bm if expect == "greater" else am < bm
    diffs = _paired_differences(runs, metric, a, b) if runs is not None else None
    if diffs is not None and len(diffs) >= 2:
        from .aggregate import sample_std, t975

        res.paired, res.n_pairs = True, len(diffs)
        res.diff_mean = float(diffs.mean())
        res.diff_ci = t975(len(diffs) - 1) * sample_std(diffs) / math.sqrt(len(diffs))
        lo, hi = res.diff_mean - res.diff_ci, res.diff_mean + res.diff_ci
        res.separated = lo > 0 if expect == "greater" else hi < 0
    elif math.isnan(ac) or math.isnan(bc):
        res.separated = False
    else:
        res.separated = (am - ac > bm + bc) if expect == "greater" else (am + ac < bm - bc)
    return res


def _paired_differences(runs: pd.DataFrame, metric: str, a: str, b: str):
    if metric not in runs.columns or "seed" not in runs.columns:
        return None
    ra = runs[runs["setting"] == a].set_index("seed")[metric]
    rb = runs[runs["setting"] == b].set_index("seed")[metric]
    if ra.index.has_duplicates or rb.index.has_duplicates:
        return None
    both = ra.index.intersection(rb.index)
    d = (pd.to_numeric(ra[both], errors="coerce") - pd.to_numeric(rb[both], errors="coerce")).dropna()
    return d if len(d) else None


def summary_table(df: pd.DataFrame, meta: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(aggregated frame, display table) of the runs, one row per setting."""
    df = label_runs(df, meta["setting"])
    metrics = list(dict.fromkeys([*meta.get("metrics", []), meta["claim"]["metric"]]))
    ok = df[df["status"].isin(["done", "diverged"])]
    agg = aggregate_seeds(ok, metrics, by=["setting"])
    agg.attrs["runs"] = ok
    counts = df.groupby("setting")["status"].value_counts().unstack(fill_value=0)
    table = pd.DataFrame({"setting": agg["setting"], "seeds": agg["n"]})
    if "diverged" in counts:
        table["diverged"] = [int(counts.loc[s, "diverged"]) for s in agg["setting"]]
    for m in metrics:
        if f"{m}_mean" in agg:
            scale = 100.0 if m.endswith("_acc") or m.endswith("acc") else 1.0
            name = f"{m} (%)" if scale == 100 else m
            table[name] = [
                format_mean_ci(a, c, scale, 2 if scale == 100 else 4)
                for a, c in zip(agg[f"{m}_mean"], agg[f"{m}_ci95"])
            ]
    return agg, table


def reproduce(
    study: str,
    scale: str,
    root: Path,
    jobs: int,
    executor: str,
    data_dir: str | None,
    overrides: list[str],
    live: bool = True,
    vectorize: str = "off",
) -> int:
    from .config import merge
    from .report_table import print_table
    from .results import load_runs
    from .store import atomic_write_bytes
    from .sweep import expand, run_sweep
    from .sweep.grid import sweep_overrides
    from .sweep.runner import preflight

    path = preset_path(study, scale)
    spec, meta = load_preset(path)
    spec = merge(spec, sweep_overrides(overrides))
    spec["output"] = str(root)
    if data_dir is not None:
        spec.setdefault("data", {})["dir"] = data_dir
    runs = expand(spec)
    preflight(runs, data_dir)
    name = f"{study}-{scale}"
    print(f"{meta.get('title', study)}: {len(runs)} runs ({path.name}) under {root}", flush=True)
    res = run_sweep(
        name, root, spec, runs, executor=executor, jobs=jobs, data_dir=data_dir, live=live, vectorize=vectorize
    )
    df = load_runs(root, sweep=name)
    if df.empty:
        print("no run finished: nothing to summarize")
        return 1
    agg, table = summary_table(df, meta)
    print_table(table, title=f"{name}: mean ± 95% CI over seeds")
    claim = check_claim(agg, meta["claim"], runs=agg.attrs.get("runs"))
    print(claim.line())
    md = [
        f"# {meta.get('title', name)}",
        "",
        table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False),
        "",
        claim.line(),
        "",
    ]
    atomic_write_bytes(Path(root) / "sweeps" / f"{name}.summary.md", "\n".join(md).encode())
    atomic_write_bytes(Path(root) / "sweeps" / f"{name}.summary.csv", agg.to_csv(index=False).encode())
    return 1 if res.failed else 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False
