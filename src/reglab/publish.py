"""A study's reproduction page: Markdown with figures, from the stored runs of its preset.

`publish(...)` writes ``DIR/STUDY-SCALE.md`` and its figures under ``DIR/STUDY-SCALE/``: what was
run (the exact command, the preset, commit, machine, wall time), a table of mean ± 95 % CI per
setting, every claim with the study's number, ours, the paired interval and the verdict, and the
curves behind them. It reads only the run directories, so rerunning the same `reglab reproduce
... --publish DIR` after a change to tables or figures rewrites the page without training. The
index ``DIR/README.md`` lists every page in the folder with its verdicts (read back from each
page's ``.json`` sidecar).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from .report_table import number
from .runtime import cpu_model
from .store import atomic_write_bytes, atomic_write_json
from .verdicts import Verdict


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from . import __version__

    return f"reglab {__version__} (not a git checkout)"


def machines_of(runs: pd.DataFrame, root: Path) -> list[str]:
    """Distinct (device, dtype, torch) of the segments that trained these runs."""
    seen: dict[str, None] = {}
    for run in runs["run"]:
        try:
            summary = json.loads((root / run / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for seg in summary.get("trained_by") or []:
            seen[f"{seg.get('device')} {seg.get('dtype')}, torch {seg.get('torch')}, {seg.get('path')}"] = None
    return list(seen)


def _fmt(x: float | None, pct: bool) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.2f} %" if pct else number(x)


def markdown_table(df: pd.DataFrame) -> str:
    """A pipe table (no optional dependency)."""
    cells = [[str(c) for c in df.columns], *[[str(v).replace("|", "\\|") for v in row] for row in df.to_numpy()]]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def claims_table(verdicts: list[Verdict]) -> str:
    rows = [
        "| claim | kind | metric | study: a vs b | ours: a vs b (mean over seeds) | a − b, 95 % CI (paired) | "
        "p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        c = v.claim
        pct = c.metric.endswith("acc")
        k = 100.0 if pct else 1.0
        study = "–"
        if c.study_a is not None or c.study_b is not None:
            sa = _fmt(None if c.study_a is None else c.study_a / c.scale, pct)
            sb = _fmt(None if c.study_b is None else c.study_b / c.scale, pct)
            study = f"{sa} vs {sb}" + (f" (÷{c.scale:g})" if c.scale != 1 else "")
        if not v.a:
            ours = "–"
        elif c.expect in ("below", "above"):
            ours = f"{v.a} mean {_fmt(v.a_mean, pct)} (every run {c.expect} {c.value:g}?)"
        else:
            ours = f"{v.a} {_fmt(v.a_mean, pct)} vs {v.b} {_fmt(v.b_mean, pct)}"
        ci = (
            f"{k * v.diff_mean:+.3g} [{k * v.diff_lo:+.3g}, {k * v.diff_hi:+.3g}] (n={v.n})" + (" pts" if pct else "")
            if v.n >= 2 and not math.isnan(v.diff_mean)
            else "–"
        )
        p = "–" if math.isnan(v.p_value) else f"{v.p_value:.2g} ({v.p_holm:.2g})"
        rows.append(
            f"| **{c.id}**: {c.text} | {c.kind} | `{c.metric}` | {study} | {ours} | {ci} | {p} | **{v.verdict}** |"
        )
    return "\n".join(rows)


def verdict_notes(verdicts: list[Verdict]) -> list[str]:
    out = []
    for v in verdicts:
        c = v.claim
        pct = c.metric.endswith("acc")
        k, unit = (100.0, " points") if pct else (1.0, "")
        notes = list(v.notes)
        if v.study_diff_inside is not None:
            notes.append(f"the study's difference lies {'inside' if v.study_diff_inside else 'outside'} our 95 % CI")
        if v.verdict == "inconclusive" and v.detectable is not None:
            notes.append(f"smallest difference these seeds detect with 80 % power: {k * v.detectable:.3g}{unit}")
            if v.seeds_needed is not None:
                notes.append(f"{v.seeds_needed} seeds would detect the study's own effect at this spread")
        if c.study_note:
            notes.append(f"study's numbers: {c.study_note}")
        if notes:
            out.append(f"- **{c.id}** ({v.verdict}): " + "; ".join(notes) + ".")
    return out


def _band_figure(
    df: pd.DataFrame, column: str, ylabel: str, path: Path, scale: float = 1.0, log: bool = False, x: str = "epoch"
) -> None:
    """`column` against epoch (the frame's "epoch" column; `x` names the axis), one line per
    setting: the mean over seeds, and a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for setting, g in df.groupby("setting", sort=True):
        s = g.groupby("epoch")[column].agg(["mean", "min", "max"])
        (line,) = ax.plot(s.index, scale * s["mean"], label=str(setting), lw=1.4)
        ax.fill_between(s.index, scale * s["min"], scale * s["max"], color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("iteration" if x == "step" else x)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _log_scale(metric: str) -> bool:
    """Losses, objectives and monitored penalties span orders of magnitude."""
    return metric.endswith(("loss", "objective_path_norm")) or metric.startswith("monitor.")


def _readable(metric: str) -> str:
    """A metric's name for axes and captions: plain words for plain names (test acc), the dotted
    name as logged for measurements (monitor.path_energy.energy_epoch), so it can be looked up."""
    return metric if "." in metric else metric.replace("_", " ")


def _curves_figure(root: Path, runs: pd.DataFrame, metric: str, path: Path, x: str = "epoch") -> str | None:
    """An evaluation metric against epochs or steps (evals.jsonl): the y scale drawn ("log" or
    "linear"), or None when no run logged it."""
    frames = []
    for _, r in runs.iterrows():
        p = root / r["run"] / "evals.jsonl"
        if p.exists():
            ev = pd.read_json(p, lines=True)
            if metric in ev.columns:
                frames.append(ev[[x, metric]].rename(columns={x: "epoch"}).assign(setting=r["setting"]))
    if not frames:
        return None
    df = pd.concat(frames)
    acc = metric.endswith("acc")
    if acc:
        df = df[df["epoch"] > 0]  # the untrained network's chance level would squash the curves
    label = _readable(metric) + (" (%)" if acc else "")
    positive = bool((pd.to_numeric(df[metric], errors="coerce") > 0).all())
    log = _log_scale(metric) and positive  # a zero (path energy before the first step) forbids a log axis
    _band_figure(df, metric, label, path, scale=100.0 if acc else 1.0, log=log, x=x)
    return "log" if log else "linear"


def preset_notes(preset: Path) -> list[str]:
    """The preset's leading comment block (what it runs, what shrank, what differs), as text."""
    out = []
    for line in preset.read_text().splitlines():
        if not line.startswith("#"):
            break
        out.append(line[1:].strip())
    return out


def _spectral_energy_figure(root: Path, runs: pd.DataFrame, path: Path) -> bool:
    """2 x the sum of the layers' nuclear norms at each evaluation (analysis/ranks_during.jsonl)."""
    frames = []
    for _, r in runs.iterrows():
        p = root / r["run"] / "analysis" / "ranks_during.jsonl"
        if not p.exists():
            continue
        per_step = pd.read_json(p, lines=True).groupby("step")["nuclear_norm"].sum() * 2
        steps_per_epoch = max(1, int(r.get("steps", 1) / max(r.get("epochs", 1), 1e-9)))
        epochs = per_step.index / steps_per_epoch
        frames.append(pd.DataFrame({"epoch": epochs, "energy": per_step.values, "setting": r["setting"]}))
    if not frames:
        return False
    _band_figure(pd.concat(frames), "energy", "spectral energy 2·Σ‖W‖*", path)
    return True


def publish(
    out_dir: Path,
    name: str,
    meta: dict,
    preset: Path,
    command: str,
    root: Path,
    runs: pd.DataFrame,
    table: pd.DataFrame,
    verdicts: list[Verdict],
    sections: list[str] | None = None,
) -> Path:
    """Write the page of one study at one scale (see the module docstring); returns its path.
    `sections`: Markdown lines set after the settings table (the tune stage's budget table)."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / name
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    x = meta.get("x", "epoch")
    per = "iteration" if x == "step" else "epoch"
    for metric in meta.get("figures", ["test_acc", "train_loss"]):
        scale = _curves_figure(root, runs, metric, fig_dir / f"{metric}.png", x=x)
        if scale is not None:
            start = f", from {per} 1" if metric.endswith("acc") else (", log scale" if scale == "log" else "")
            figures.append((f"{_readable(metric)} per {per} (mean; band: min–max over seeds{start})", f"{metric}.png"))
    if _spectral_energy_figure(root, runs, fig_dir / "spectral_energy.png"):
        figures.append(("spectral energy during training (mean; band: min–max over seeds)", "spectral_energy.png"))
    wall = pd.to_numeric(runs.get("wall_time"), errors="coerce").sum() if "wall_time" in runs else math.nan
    seeds = sorted({int(s) for s in runs["seed"]}) if "seed" in runs else []
    counts = pd.Series([v.verdict for v in verdicts]).value_counts().to_dict()
    scale = name.rsplit("-", 1)[-1]
    lines = [
        f"# {meta.get('title', name)} — {scale} scale",
        "",
        f"Verdicts: {', '.join(f'{n} {k}' for k, n in counts.items())} (of {len(verdicts)} claims). "
        "How verdicts are reached: README, *Reproducing the studies*.",
        "",
        "## Claims",
        "",
        claims_table(verdicts),
        "",
        *verdict_notes(verdicts),
        "",
        "## Settings (mean ± 95 % CI over seeds)",
        "",
        markdown_table(table),
        "",
        *(sections or []),
        "## Figures",
        "",
        *(f"![{cap}]({name}/{file})\n\n*{cap}.*\n" for cap, file in figures),
        "## The preset: what it runs and what differs from the study",
        "",
        *(f"> {line}" if line else ">" for line in preset_notes(preset)),
        "",
        "## How this was run",
        "",
        f"- command: `{command}`",
        f"- preset: `src/reglab/presets/{preset.name}` ({len(runs)} finished runs, seeds {seeds})",
        f"- code: {_git_commit()}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}",
        f"- trained on: {'; '.join(machines_of(runs, root)) or 'not recorded'}",
        f"- training time: {wall / 60:.1f} min summed over runs" if math.isfinite(wall) else "- training time: –",
        f"- page written: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} from the stored runs under `{root}`",
        "",
    ]
    page = out_dir / f"{name}.md"
    atomic_write_bytes(page, "\n".join(lines).encode())
    atomic_write_json(
        out_dir / f"{name}.json",
        {
            "title": meta.get("title", name),
            "scale": scale,
            "page": page.name,
            "verdicts": [{"id": v.claim.id, "kind": v.claim.kind, "verdict": v.verdict} for v in verdicts],
        },
    )
    write_index(out_dir)
    return page


SCALE_ORDER = {"quick": 0, "cpu": 1, "paper": 2}


def _counts(verdicts: list[dict], kind: str) -> str:
    mine = [v["verdict"] for v in verdicts if v.get("kind") == kind]
    if not mine:
        return "–"
    counts = pd.Series(mine).value_counts().to_dict()
    return ", ".join(f"{n} {k}" for k, n in counts.items())


def write_index(out_dir: Path) -> Path:
    """DIR/README.md, what a researcher reads first: how to read a verdict, then every published
    page, grouped by study (budgets from the smallest), with its outcome and mechanism verdicts."""
    entries = []
    for side in sorted(Path(out_dir).glob("*.json")):
        try:
            entries.append(json.loads(side.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    entries.sort(key=lambda r: (r["title"], SCALE_ORDER.get(r.get("scale", ""), 9)))
    lines = [
        "# Reproductions",
        "",
        "Does each regularizer do what its study says, at the study's budget, beyond seed noise? Each "
        "page below tests one study's claims with reglab at one budget, on runs paired by seed.",
        "",
        "How to read a verdict (README, *Reproducing the studies*):",
        "",
        "- **reproduced**: the 95 % interval of the paired difference excludes 0 on the claimed side "
        "(an equivalence claim: lies inside its margin);",
        "- **contradicted**: it excludes 0 on the other side (or lies outside the margin), or, for a "
        "claim about every run, one run breaks it;",
        "- **inconclusive**: neither; the page says the smallest difference the seeds could detect and "
        "how many seeds the study's own effect would need;",
        "- **not testable at this budget**: the runs stop before the regime the claim is about;",
        "- **not determined**: too few finished runs to pair (for example, every run of a setting diverged).",
        "",
        "*Outcome* claims are the studies' results (accuracy, objective, robustness); *mechanism* claims "
        "check that the regularizer acted as designed. Budgets: *quick* shows the mechanism in minutes; "
        "*cpu* is the largest budget a 2-core CPU finishes in about 90 minutes, 5 seeds; *paper* is the "
        "study's own. Each page says what its budget shrank, where its runs were trained, and the "
        "command that regenerates it from the stored runs.",
        "",
        "| study | budget | outcome claims | mechanism claims |",
        "|---|---|---|---|",
    ]
    for rec in entries:
        lines.append(
            f"| [{rec['title']}]({rec['page']}) | {rec.get('scale', '')} | "
            f"{_counts(rec['verdicts'], 'outcome')} | {_counts(rec['verdicts'], 'mechanism')} |"
        )
    index = Path(out_dir) / "README.md"
    atomic_write_bytes(index, ("\n".join(lines) + "\n").encode())
    return index
