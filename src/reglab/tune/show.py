"""`reglab tune --show`: a study's trials and its best configuration, as plain text.

Plain aligned columns rather than a rich table: a table narrower than its dotted key names would
be wrapped or cut, and the lines are meant to be read by scripts and tests as well.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from .spec import TuneSetup, search_values
from .study import FINISHED


def show_lines(setup: TuneSetup, study: optuna.Study, url: str) -> list[str]:
    metric = setup.block.metric
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    said = ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n)
    finished = sum(counts[s] for s in FINISHED)
    lines = [
        f"study {setup.study} ({url}): {len(trials)} trials ({said or 'none yet'}); "
        f"{finished} of {setup.block.trials} finished; {metric}, {setup.direction}"
    ]
    header = ["#", "state", *setup.space, metric, "run", "note"]
    rows = [header] + [_row(setup, t) for t in trials]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines += _best(setup, study)
    return lines


def _row(setup: TuneSetup, t: FrozenTrial) -> list[str]:
    values = search_values(setup, t.params)
    return [
        str(t.number),
        t.state.name,
        *(_fmt(values[k]) if k in values else "-" for k in setup.space),
        _metric(t),
        t.user_attrs.get("run_hash", "-"),
        _note(t),
    ]


def _metric(t: FrozenTrial) -> str:
    if t.state == TrialState.COMPLETE and t.value is not None:
        return f"{t.value:.4f}"
    if t.intermediate_values:  # pruned, or still running: the last report
        step = max(t.intermediate_values)
        return f"{t.intermediate_values[step]:.4f} (step {step})"
    return "-"


def _note(t: FrozenTrial) -> str:
    notes = []
    retried = t.system_attrs.get("failed_trial", t.user_attrs.get("retry_of"))
    if retried is not None:
        notes.append(f"retry of {retried}")
    if t.user_attrs.get("run_status") == "reused":
        notes.append("finished run reused")
    return ", ".join(notes)


def _best(setup: TuneSetup, study: optuna.Study) -> list[str]:
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return ["best: no complete trial yet"]
    best = study.best_trial
    run = setup.root / str(best.user_attrs.get("run_hash", "?"))
    out = [f"best: trial {best.number}: {setup.block.metric} = {best.value:.4f}, run {run}"]
    out += [f"  {k} = {_fmt(v)}" for k, v in search_values(setup, best.params).items()]
    out.append(f"  whole config: {run}/config.json (`reglab train --from {run} --output DIR` trains it again)")
    return out


def _fmt(v: object) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


__all__ = ["show_lines"]
