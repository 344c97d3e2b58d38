"""`reglab tune --plot FILE`: the metric against each searched key, one scatter per key.

Where the search found good values and how sharp the optimum is, at a glance. Complete trials
are dots, pruned ones hollow circles at their last reported value (they were stopped early, so
their value is a partial curve's, not comparable one for one), the best trial a star.
Log-uniform keys get a log x-axis; categorical keys one tick per choice.
A PNG beside the study rather than a section of `reglab report`: the report is built from run
directories, and what a figure of a search needs (pruned values, which trial was best) lives in
the study.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .spec import TuneSetup, search_values


def plot_study(setup: TuneSetup, study: optuna.Study, path: Path) -> Path:
    from ..report.plotting import DPI, STYLE, plt  # selects the Agg backend

    metric = setup.block.metric
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    best = study.best_trial.number if any(t.state == TrialState.COMPLETE for t in trials) else None
    keys = list(setup.space)
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            _panel(ax, setup, key, trials, best)
            ax.set_ylabel(metric)
        for ax in list(axes.flat)[len(keys) :]:
            ax.set_visible(False)
        fig.suptitle(f"study {setup.study}: {metric} ({setup.direction}) of {len(trials)} trials")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.02))
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, facecolor="white")
        plt.close(fig)
    return path


def _panel(ax, setup: TuneSetup, key: str, trials: list, best: int | None) -> None:
    dist = setup.space[key]
    ticks: list[str] = []
    if dist.kind == "categorical":
        ticks = [str(c) for c in dist.choices]

    def x_of(t) -> float:
        v = search_values(setup, t.params)[key]
        return float(ticks.index(str(v))) if ticks else float(v)

    groups: dict[str, tuple[list[float], list[float]]] = {"complete": ([], []), "pruned": ([], []), "best": ([], [])}
    for t in trials:
        if key not in t.params:
            continue
        if t.state == TrialState.COMPLETE:
            y = t.value
        elif t.intermediate_values:
            y = t.intermediate_values[max(t.intermediate_values)]
        else:
            continue
        group = "best" if t.number == best else ("complete" if t.state == TrialState.COMPLETE else "pruned")
        groups[group][0].append(x_of(t))
        groups[group][1].append(y)
    ax.scatter(*groups["pruned"], facecolors="none", edgecolors="0.55", s=26, label="pruned (last report)")
    ax.scatter(*groups["complete"], color="C0", s=26, label="complete")
    ax.scatter(*groups["best"], color="C3", marker="*", s=120, label="best", zorder=3)
    if dist.log:
        ax.set_xscale("log")
    if ticks:
        tilted = max(map(len, ticks)) > 6
        ax.set_xticks(range(len(ticks)), ticks, rotation=30 if tilted else 0, ha="right" if tilted else "center")
    ax.set_xlabel(key)


__all__ = ["plot_study"]
