"""`reglab reproduce STUDY --scale quick|cpu|paper`: rerun one of the four seed studies.

A preset is an ordinary sweep YAML (copy it, edit it, run it with `reglab sweep`) with one extra
top-level block, `reproduce:`, that says how to read the results:

    reproduce:
      title: one line
      setting: "{regularizers.0.name} lam={regularizers.0.lam|0}"  # label of a setting ({key|default});
                                                                    # runs sharing a label are its seeds
      metrics: [test_acc, ...]          # columns of the summary table (mean ± 95% CI over seeds)
      claims:                           # the study's claims, each judged on runs paired by seed
        - id: short-name
          text: the claim as the study states it
          kind: outcome | mechanism
          metric: test_acc              # or NAME@STEP, plateau_step(NAME), ... (reglab.derived)
          expect: greater | less | equivalent   # a against b (equivalent: within +-margin)
                | below | above         #   or every run of a against `value` (no b)
          a: [label, ...]               # the best of these settings (by select_by) stands for a
          b: [label, ...]
          a_minus: label                # optional contrast: a - a_minus against b - b_minus
          select_by: val_acc            # optional; picks the best of a list (never the test metric)
          study_a: 0.973                # optional: the study's own numbers (study units; scale
          study_b: 0.969                #   converts ours to them), and min_steps: the regime
                                        #   the claim is about

Verdicts (reproduced, contradicted, inconclusive, not testable at this budget) are defined in
reglab.verdicts. A single `claim:` mapping (the older form) is read as a list of one. A `tune:`
block adds a setting searched with `reglab tune` within the budget of one run (reglab.reproduce_tune).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from .aggregate import aggregate_seeds
from .config import load_yaml
from .derived import derive
from .errors import ConfigError
from .publish import markdown_table, publish
from .report_table import format_mean_ci, format_mean_ci_sig, number
from .reproduce_tune import parse_stage, plan, run_stage
from .verdicts import Verdict, judge_all, parse_claims

PRESET_DIR = Path(__file__).parent / "presets"
STUDIES = ("multiplicative", "energy", "autol2", "pathprox", "autol2tune")
SCALES = ("quick", "cpu", "paper")
SAME_AS = {("energy", "cpu"): "paper"}
"""Scales whose preset is another's: study 2's paper budget (10 epochs of MNIST) fits a CPU."""
SCALES_OF = {"autol2tune": ("quick", "cpu")}
"""Studies with presets at some scales only (study 3 at equal budget: its search at the paper's
200 epochs a run is left to a copy of the cpu preset)."""


def has_preset(study: str, scale: str) -> bool:
    return scale in SCALES_OF.get(study, SCALES)


def preset_path(study: str, scale: str) -> Path:
    if study not in STUDIES:
        raise ConfigError("STUDY", f"unknown study {study!r}", STUDIES)
    if scale not in SCALES:
        raise ConfigError("--scale", f"unknown scale {scale!r}", SCALES)
    if not has_preset(study, scale):
        raise ConfigError("--scale", f"{study} has no {scale} preset", SCALES_OF[study])
    return PRESET_DIR / f"{study}_{SAME_AS.get((study, scale), scale)}.yaml"


def load_preset(path: Path) -> tuple[dict, dict]:
    spec = load_yaml(path)
    meta = spec.pop("reproduce", None)
    if not isinstance(meta, dict) or "setting" not in meta or not ("claims" in meta or "claim" in meta):
        raise ConfigError("reproduce", f"{path} needs a reproduce: block with setting, metrics and claims")
    parse_claims(meta)  # a malformed claim stops here, before any run
    parse_stage(meta)  # and a malformed tune block
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
    an absent value prints as the default, or "none". `{dotted.key?text}` prints text when the
    value is true and nothing otherwise (a flag that names a variant); `{dotted.key!text}` prints
    text when the value is false (not when absent)."""

    def fill(m: re.Match) -> str:
        field = m.group(1)
        for mark, wanted in (("?", True), ("!", False)):
            if mark in field:
                key, _, text = field.partition(mark)
                return text if row.get(key.strip()) is wanted else ""
        key, sep, default = field.partition("|")
        text = _fmt_value(row.get(key.strip()))
        return default if (text == "none" and sep) else text

    return _FIELD.sub(fill, template).strip()


def label_runs(df: pd.DataFrame, template: str) -> pd.DataFrame:
    """Each run's setting: its `label` where it has one (the tune stage's), else the template's."""
    df = df.copy()
    df["setting"] = [
        r["label"] if isinstance(r.get("label"), str) else setting_label(r, template) for r in df.to_dict("records")
    ]
    return df


def verdict_line(v: Verdict) -> str:
    """One claim's verdict in one line: the claim, our numbers, the study's, the test."""
    c = v.claim
    pct = c.metric.endswith("acc")

    def num(x: float | None) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "-"
        if pct:
            return f"{100 * x:.2f} %"
        return number(x)

    head = f"[{c.id}, {c.kind}] {c.text}"
    if not v.a:
        return f"{head}: {v.verdict.upper()} ({'; '.join(v.notes)})"
    if c.expect in ("below", "above"):
        parts = [f"{c.metric}: {v.a} mean {num(v.a_mean)}, every run {c.expect} {c.value:g}?"]
    else:
        parts = [f"{c.metric}: {v.a} {num(v.a_mean)} vs {v.b} {num(v.b_mean)}"]
    if c.study_a is not None or c.study_b is not None:
        study = f"study: {num(c.study_a)} vs {num(c.study_b)}"
        if c.scale != 1.0:
            study += f" in its units (ours x{c.scale:g}: {num(c.scale * v.a_mean)} vs {num(c.scale * v.b_mean)})"
        parts.append(study + (f" ({c.study_note})" if c.study_note else ""))
    if v.n >= 2 and not math.isnan(v.diff_mean):
        scale = 100.0 if pct else 1.0
        unit = " points" if pct else ""
        test = (
            f"paired by seed (n={v.n}): a - b = {scale * v.diff_mean:+.4g}{unit}, 95 % CI "
            f"[{scale * v.diff_lo:+.4g}, {scale * v.diff_hi:+.4g}], p = {v.p_value:.3g}"
        )
        if not math.isnan(v.p_holm):
            test += f" (Holm {v.p_holm:.3g})"
        parts.append(test)
        if v.study_diff_inside is not None:
            parts.append(f"the study's difference is {'inside' if v.study_diff_inside else 'outside'} our CI")
        if v.verdict == "inconclusive" and v.detectable is not None:
            extra = f"detectable with 80 % power: {scale * v.detectable:.3g}{unit}"
            if v.seeds_needed is not None:
                extra += f"; {v.seeds_needed} seeds would detect the study's effect"
            parts.append(extra)
    parts += v.notes
    return f"{head} -> {v.verdict.upper()}: " + "; ".join(parts)


def _in_report_order(agg: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Settings in the order reports list them: by the config values that vary between them."""
    from .results import order_by_config, varying_columns

    if agg.empty or runs.empty:
        return agg
    first = runs.drop_duplicates("setting").set_index("setting")
    # what makes a setting: varying values that are one value within each setting (not the seed,
    # not a metric)
    cols = [
        c
        for c in varying_columns(runs)
        if c not in ("seed", "setting") and (runs.groupby("setting")[c].nunique(dropna=False) <= 1).all()
    ]
    keyed = first.loc[agg["setting"], cols].reset_index(drop=True)
    order = order_by_config(keyed, cols).index
    return agg.iloc[list(order)].reset_index(drop=True)


def summary_table(df: pd.DataFrame, meta: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(aggregated frame, display table) of the runs, one row per setting."""
    df = label_runs(df, meta["setting"])
    claims = parse_claims(meta)
    metrics = list(dict.fromkeys([*meta.get("metrics", []), *(c.metric for c in claims)]))
    df = derive(df, metrics)
    ok = df[df["status"].isin(["done", "diverged"])]
    agg = aggregate_seeds(ok, metrics, by=["setting"])
    agg = _in_report_order(agg, ok)
    if "label" in ok:  # the settings a tune stage labelled come after the preset's own
        staged = agg["setting"].isin(set(ok.loc[ok["label"].notna(), "setting"]))
        agg = pd.concat([agg[~staged], agg[staged]], ignore_index=True)
    agg.attrs["runs"] = ok
    counts = df.groupby("setting")["status"].value_counts().unstack(fill_value=0)
    table = pd.DataFrame({"setting": agg["setting"], "seeds": agg["n"]})
    if "diverged" in counts:
        table["diverged"] = [int(counts.loc[s, "diverged"]) for s in agg["setting"]]
    for m in metrics:
        if f"{m}_mean" in agg and agg[f"{m}_mean"].notna().any():  # a metric no run reached is left out
            if m.endswith("acc"):
                cells = [format_mean_ci(a, c, 100.0, 2) for a, c in zip(agg[f"{m}_mean"], agg[f"{m}_ci95"])]
                table[f"{m} (%)"] = cells
            else:
                table[m] = [format_mean_ci_sig(a, c) for a, c in zip(agg[f"{m}_mean"], agg[f"{m}_ci95"])]
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
    publish_dir: Path | None = None,
    command: str = "",
    train: bool = True,
) -> int:
    """Run (unless `train` is false) and judge a study's preset; with publish_dir also write its
    page (reglab.publish). Returns the exit status: 1 when a run failed or none finished."""
    from .report_table import print_table
    from .results import load_runs
    from .store import atomic_write_bytes, atomic_write_json
    from .sweep import expand, run_sweep
    from .sweep.grid import with_overrides
    from .sweep.runner import preflight

    path = preset_path(study, scale)
    spec, meta = load_preset(path)
    spec = with_overrides(spec, overrides)
    spec["output"] = str(root)
    if data_dir is not None:
        spec.setdefault("data", {})["dir"] = data_dir
    runs = expand(spec)
    name = f"{study}-{SAME_AS.get((study, scale), scale)}"  # one page per preset: energy cpu is energy paper
    print(f"{meta.get('title', study)}: {len(runs)} runs ({path.name}) under {root}", flush=True)
    stage = parse_stage(meta)  # the tune stage's searches are checked before anything trains
    plans = plan(stage, spec, name, sorted({r.config.seed for r in runs}), data_dir) if stage else []
    failed = False
    if train:
        preflight(runs, data_dir)
        res = run_sweep(
            name, root, spec, runs, executor=executor, jobs=jobs, data_dir=data_dir, live=live, vectorize=vectorize
        )
        failed = bool(res.failed)
    tuned = None
    if stage is not None:
        tuned = run_stage(
            stage,
            plans,
            name,
            Path(root),
            train=train,
            jobs=jobs,
            executor=executor,
            data_dir=data_dir,
            live=live,
            vectorize=vectorize,
        )
        failed = failed or tuned.failed
    df = load_runs(root, runs=[r.hash for r in runs] + (tuned.hashes() if tuned else []))
    if tuned is not None and not df.empty:
        df = tuned.annotate(df, Path(root))
    if not train and len(df) < len(runs):
        print(f"{len(runs) - len(df)} of {len(runs)} runs are not under {root}: the summary covers the others")
    if df.empty:
        print("no run finished: nothing to summarize")
        return 1
    agg, table = summary_table(df, meta)
    print_table(table, title=f"{name}: mean ± 95% CI over seeds")
    verdicts = judge_all(parse_claims(meta), agg.attrs["runs"])
    lines = [verdict_line(v) for v in verdicts]
    for line in lines:
        print("claim " + line)
    budget = tuned.lines(agg.attrs["runs"], list(agg["setting"])) if tuned is not None else []
    if tuned is not None:
        print("\n".join(budget))
        atomic_write_json(Path(root) / "sweeps" / f"{name}.tune.json", tuned.record())
    md = [
        f"# {meta.get('title', name)}",
        "",
        markdown_table(table),
        "",
        *(f"- {line}" for line in lines),
        "",
        *budget,
    ]
    atomic_write_bytes(Path(root) / "sweeps" / f"{name}.summary.md", "\n".join(md).encode())
    atomic_write_bytes(Path(root) / "sweeps" / f"{name}.summary.csv", agg.to_csv(index=False).encode())
    if publish_dir is not None:
        page = publish(
            Path(publish_dir), name, meta, path, command, Path(root), agg.attrs["runs"], table, verdicts, budget
        )
        print(f"wrote {page}")
    return 1 if failed else 0
