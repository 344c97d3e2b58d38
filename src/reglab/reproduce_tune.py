"""The tune stage of a reproduction: a fixed value searched with `reglab tune` within the budget of
one run, set against the preset's other settings at an equal number of training steps.

A preset's `reproduce:` block may hold a `tune:` block (study 3 asked the practitioner's way:
presets/autol2tune_*.yaml):

    tune:
      label: tuned fixed lam            # the setting each seed's best trial stands for in claims
      retrain_label: tuned ... (2B)     # optional: the best values trained again at full length
      base:                             # dotted keys set on the preset without its variants:
        regularizers: [{name: l2, lam: 1.0e-4}]   # the one setting the search starts from
      trials: 5                         # the budget's shares: trials of B // trials steps
      space: {regularizers.0.lam: {log_uniform: [1.0e-6, 0.1]}}
      metric: val_acc                   # and reglab tune's other keys: sampler, pruner, direction, ...

The budget rule. B is the number of training steps of one run of the preset's training budget
(computed for each seed as the run computes it); every run of the preset's sweep trains B steps.
For each seed, one Optuna study (its sampler seeded by the seed) runs trials of B // trials steps
(`train.iterations`) on the base with that seed, one at a time, while the steps its trials have
trained plus one more trial's share fit in B. A trial is charged its run's steps: a pruned one up
to where it stopped, a diverged one up to its divergence, a duplicate of an earlier trial again in
full; a failed trial that was queued again is charged through its retry, which continues its run.
Steps a pruner saves are thus spent on further trials, and counted. The seed's result is its
best complete trial's run by the trial's value, the final validation metric (the test set plays
no part), labelled `label`, so claims compare it with the sweep's settings paired by seed. With
`retrain_label`, the best values are trained again for B steps: that setting costs the search
plus B, up to 2B.

Each setting's steps per seed are the runs' column `budget_steps` (a sweep run: its own steps;
`label`: the sum over the seed's trials; `retrain_label`: that sum plus its own run), and a table
of them per seed, with the trials and the values found, goes under the summary, onto the page, and
into `<root>/sweeps/NAME.tune.json`.

The searches run on this machine: one after another, or with the process executor `-j N` seeds
at a time in spawned processes (a study's own trials stay sequential), also when the sweep's runs
go to SLURM. Running `reglab reproduce` again continues each seed's study where it stopped
(SQLite under `<root>/tune/`): finished trials and runs are reused, nothing trains twice. Each
trial's sampler is seeded from the seed and the number of trials stored, so a search stopped
between trials proposes, once resumed, what an uninterrupted one would have (one stopped inside a
trial retries that trial first, from its run's checkpoint). A study's name holds a digest of what
it searches, so a changed preset or override starts new studies beside the old ones instead of
mixing them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pandas as pd

from .config import merge
from .errors import ConfigError, Interrupted

if TYPE_CHECKING:
    import optuna

    from .sweep.grid import PlannedRun
    from .tune.spec import TuneSetup

WHERE = "reproduce.tune"
STAGE_KEYS = ("label", "retrain_label", "base")
"""The stage's own keys; the others are reglab tune's block."""
SET_PER_SEED = ("seed", "study")
NOT_HASHED = ("heartbeat_interval", "grace_period", "max_retry")
"""Block keys that do not change what a study searches (left out of its name's digest)."""


@dataclass(frozen=True)
class Stage:
    label: str
    retrain_label: str | None
    base: dict[str, Any]
    block: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return [self.label] + ([self.retrain_label] if self.retrain_label else [])


def parse_stage(meta: dict) -> Stage | None:
    """The `tune:` block of a preset's reproduce block (None when it has none), its shape checked."""
    raw = meta.get("tune")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(WHERE, "must be a mapping: label, base, trials, space, metric, ...")
    for key in ("label", "trials", "space", "metric"):
        if key not in raw:
            raise ConfigError(f"{WHERE}.{key}", "is required")
    for key in SET_PER_SEED:
        if key in raw:
            raise ConfigError(
                f"{WHERE}.{key}", "is set by reglab reproduce: one study per seed, its sampler seeded by it"
            )
    label, retrain = raw["label"], raw.get("retrain_label")
    for key, v in (("label", label), ("retrain_label", retrain)):
        if v is not None and not (isinstance(v, str) and v.strip()):
            raise ConfigError(f"{WHERE}.{key}", f"must be a setting label (text), got {v!r}")
    if retrain == label:
        raise ConfigError(f"{WHERE}.retrain_label", "must differ from label")
    base = raw.get("base", {})
    if not isinstance(base, dict):
        raise ConfigError(f"{WHERE}.base", "must be a mapping of (dotted) config keys to values")
    trials = raw["trials"]
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"{WHERE}.trials", f"must be a positive integer: the budget's shares (got {trials!r})")
    block = {k: v for k, v in raw.items() if k not in STAGE_KEYS}
    return Stage(label, retrain, base, block)


def stage_labels(meta: dict) -> list[str]:
    """The setting labels the tune stage adds (none without a tune block)."""
    stage = parse_stage(meta)
    return stage.labels if stage else []


@dataclass(frozen=True)
class SeedPlan:
    """One seed's search: picklable, so a spawned worker can run it."""

    seed: int
    setup: TuneSetup
    """The trials' setup: the base with this seed, B // trials steps a trial."""
    full: dict
    """The base with this seed at the preset's budget (raw), for the retrained run."""
    budget: int
    share: int
    url: str


def plan(stage: Stage, spec: dict, name: str, seeds: list[int], data_dir: str | None) -> list[SeedPlan]:
    """Each seed's search, checked (config, space, metric) and its budget B computed, before any
    run trains."""
    from .build import prepare
    from .config import canonical_dict
    from .sweep.grid import find_axes
    from .tune import require_optuna
    from .tune.spec import tune_setup
    from .tune.storage import default_url
    from .validation import validate

    require_optuna()
    common = copy.deepcopy(spec)
    common.pop("variants", None)
    plans = []
    for seed in seeds:
        full = merge(common, [*stage.base.items(), ("seed", seed)])
        for key, values in find_axes(full):
            raise ConfigError(
                f"{WHERE}.base",
                f"{key} has alternatives {values!r}: the search starts from one setting (set {key} in base)",
            )
        try:
            cfg = validate(full)
        except ConfigError as e:
            raise ConfigError(f"{WHERE}.base", f"the searched setting is not a valid run config: {e}") from None
        budget = prepare(cfg.model_copy(update={"device": "cpu"}), data_dir).total_steps
        share = budget // stage.block["trials"]
        if share < 1:
            raise ConfigError(f"{WHERE}.trials", f"{stage.block['trials']} trials do not fit in B = {budget} steps")
        trial = merge(full, [("train.iterations", share)])
        kept = {k: v for k, v in stage.block.items() if k not in NOT_HASHED}
        what = {"base": canonical_dict(validate(trial)), "tune": kept}
        digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:8]
        study = f"{name}-seed{seed}-{digest}"
        try:
            setup = tune_setup({**trial, "tune": {**stage.block, "seed": seed, "study": study}}, study)
        except ConfigError as e:
            field = f"reproduce.{e.field}" if e.field.startswith("tune") else e.field
            raise ConfigError(field, str(e)[len(e.field) + 2 :]) from None
        full_named = {**full, "name": study, "output": str(setup.root)}
        plans.append(SeedPlan(seed, setup, full_named, budget, share, default_url(setup)))
    return plans


# ------------------------------------------------------------------------------------ search


def run_wall(path: Path) -> float:
    """Seconds a run directory's training took (its summary's; 0 without one)."""
    from .store import RunDir

    rd = RunDir(path)
    summary = rd.read_summary() if rd.summary_path.exists() else None
    return float((summary or {}).get("wall_time") or 0.0)


def run_steps(path: Path) -> int:
    """Training steps a run directory holds: its summary's, else its last evaluation's (a pruned
    trial stops at an evaluation; an interrupted run resumes from what it kept)."""
    from .store import RunDir

    rd = RunDir(path)
    summary = rd.read_summary() if rd.summary_path.exists() else None
    if summary and isinstance(summary.get("steps"), int):
        return int(summary["steps"])
    if not rd.evals_path.exists():
        return 0
    return max((int(r.get("step", 0)) for r in rd.evals()), default=0)


def charges(trials: list[optuna.trial.FrozenTrial], root: Path) -> dict[int, int]:
    """The steps each trial is charged (see the module docstring)."""
    retried = {t.system_attrs.get("failed_trial", t.user_attrs.get("retry_of")) for t in trials} - {None}
    out = {}
    for t in trials:
        run = t.user_attrs.get("run_hash")
        out[t.number] = 0 if (t.number in retried or run is None) else run_steps(root / run)
    return out


def search_seed(p: SeedPlan, data_dir: str | None) -> None:
    """Trials of one seed's study, one at a time, while one more fits in the budget."""
    from .tune.objective import Objective, RunDiverged, describe
    from .tune.study import open_study, quiet_optuna

    quiet_optuna()
    objective = Objective(p.setup, data_dir)

    def say(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        click.echo(f"seed {p.seed}: {describe(p.setup, trial)}")

    while True:
        # Opened again for each trial: the sampler is seeded by the trials stored, so a search
        # resumed after an interruption proposes what an uninterrupted one would have.
        study = open_study(p.setup, p.url)
        spent = sum(charges(study.get_trials(deepcopy=False), p.setup.root).values())
        if spent + p.share > p.budget:
            return
        study.optimize(objective, n_trials=1, catch=(RunDiverged,), callbacks=[say])


def _worker_start(parent: int, threads: int) -> None:
    import torch

    from .tune.workers import _exit_with_parent

    _exit_with_parent(parent)
    torch.set_num_threads(threads)


def search(plans: list[SeedPlan], workers: int, data_dir: str | None) -> None:
    """Every seed's search: one after another here, or `workers` seeds at a time in spawned
    processes (each study's trials stay sequential, so its proposals do not depend on timing)."""
    workers = min(workers, len(plans))
    try:
        if workers <= 1:
            for p in plans:
                search_seed(p, data_dir)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_start, initargs=(os.getpid(), threads)
        ) as pool:
            for f in [pool.submit(search_seed, p, data_dir) for p in plans]:
                f.result()
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted: the searches keep their finished trials; rerun the same command to continue"
        ) from None


# ----------------------------------------------------------------------------------- results


@dataclass
class SeedResult:
    plan: SeedPlan
    trials: list[dict] = field(default_factory=list)
    spent: int = 0
    wall: float = 0.0
    """Seconds of training over all trials (those with a summary: done or diverged runs)."""
    best: dict | None = None
    retrain: str | None = None
    """The retrained run's hash."""


def read_seed(p: SeedPlan) -> SeedResult:
    """A seed's study as stored: its trials, the steps charged, its best complete trial."""
    from optuna.trial import TrialState

    from .tune.spec import search_values
    from .tune.study import open_study, quiet_optuna

    quiet_optuna()
    out = SeedResult(p)
    try:
        study = open_study(p.setup, p.url, create=False)
    except ConfigError:  # never searched (--no-train before any training)
        return out
    trials = study.get_trials(deepcopy=False)
    charged = charges(trials, p.setup.root)
    for t in trials:
        out.trials.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "values": search_values(p.setup, t.params),
                "value": t.value,
                "run": t.user_attrs.get("run_hash"),
                "steps": charged[t.number],
            }
        )
    out.spent = sum(charged.values())
    runs: set[str] = {str(t.user_attrs["run_hash"]) for t in trials if t.user_attrs.get("run_hash")}
    out.wall = sum((run_wall(p.setup.root / h) for h in runs), 0.0)
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
        out.best = {
            "number": best.number,
            "run": best.user_attrs["run_hash"],
            "value": best.value,
            "values": search_values(p.setup, best.params),
            "params": best.params,
        }
    return out


def retrain_run(r: SeedResult) -> PlannedRun:
    """The best values of a seed's search trained at the preset's budget."""
    from .config import config_hash
    from .sweep.grid import PlannedRun

    assert r.best is not None
    cfg = replace(r.plan.setup, base=r.plan.full).trial_config(r.best["params"])
    return PlannedRun(cfg, config_hash(cfg), {"seed": r.plan.seed})


@dataclass
class StageResult:
    stage: Stage
    seeds: list[SeedResult]
    failed: bool = False

    def hashes(self) -> list[str]:
        return [h for r in self.seeds for h in (r.best["run"] if r.best else None, r.retrain) if h]

    def annotate(self, runs: pd.DataFrame, root: Path) -> pd.DataFrame:
        """`runs` with the stage's labels (column `label`) and every run's `budget_steps`."""
        labels: dict[str, str] = {}
        budget: dict[str, int] = {}
        for r in self.seeds:
            if r.best:
                labels[r.best["run"]] = self.stage.label
                budget[r.best["run"]] = r.spent
            if r.retrain and self.stage.retrain_label:
                labels[r.retrain] = self.stage.retrain_label
                budget[r.retrain] = r.spent + run_steps(root / r.retrain)
        runs = runs.copy()
        runs["label"] = runs["run"].map(labels)
        steps = (
            pd.to_numeric(runs["steps"], errors="coerce") if "steps" in runs else pd.Series(float("nan"), runs.index)
        )
        runs["budget_steps"] = [budget.get(h, s) for h, s in zip(runs["run"], steps)]
        return runs

    def record(self) -> dict:
        """What `<root>/sweeps/NAME.tune.json` keeps: per seed, B, the share, every trial with its
        steps, the best, the retrained run."""
        return {
            "label": self.stage.label,
            "retrain_label": self.stage.retrain_label,
            "seeds": [
                {
                    "seed": r.plan.seed,
                    "study": r.plan.setup.study,
                    "storage": r.plan.url,
                    "budget_steps": r.plan.budget,
                    "steps_per_trial": r.plan.share,
                    "spent_steps": r.spent,
                    "trials_wall_time": r.wall,
                    "trials": r.trials,
                    "best": {k: v for k, v in r.best.items() if k != "params"} if r.best else None,
                    "retrained_run": r.retrain,
                }
                for r in self.seeds
            ],
        }

    def lines(self, runs: pd.DataFrame, settings: list[str]) -> list[str]:
        """The budget section of the summary and the page: a table of every setting's steps per
        seed (from labelled runs: columns setting, seed, budget_steps; settings in the order
        given) and what each search found."""
        from .publish import markdown_table

        shares = self.stage.block["trials"]
        steps = runs.pivot_table(index="seed", columns="setting", values="budget_steps", aggfunc="first")
        order = [s for s in settings if s not in self.stage.labels] + [s for s in self.stage.labels if s in settings]
        rows = []
        for r in self.seeds:
            seed = r.plan.seed
            row: dict[str, Any] = {"seed": seed, "B (one run)": f"{r.plan.budget:,}"}
            for s in order:
                v = steps[s].get(seed) if s in steps else None
                row[s] = "–" if v is None or pd.isna(v) else f"{int(v):,}"
            states = pd.Series([t["state"] for t in r.trials]).value_counts().to_dict()
            row["trials"] = f"{len(r.trials)} ({', '.join(f'{n} {k}' for k, n in states.items()) or 'none'})"
            if r.best:
                found = ", ".join(f"{k} = {_short(v)}" for k, v in r.best["values"].items())
                row["best trial (validation)"] = f"#{r.best['number']}: {found} ({self._metric} {r.best['value']:.4f})"
            else:
                row["best trial (validation)"] = "– (no complete trial)"
            rows.append(row)
        head = [
            "## Budget: training steps per seed",
            "",
            f"B is the steps of one run at the preset's budget. `{self.stage.label}` is the best of trials of B // "
            f"{shares} steps each, run while one more fits in B, chosen on the final {self._metric} (never on test); "
            f"its steps are the sum over the seed's trials (all searches together trained for "
            f"{sum(r.wall for r in self.seeds) / 60:.1f} min)."
            + (
                f" `{self.stage.retrain_label}` trains the values found again for B steps: the search plus B."
                if self.stage.retrain_label
                else ""
            ),
            "",
        ]
        return [*head, markdown_table(pd.DataFrame(rows)), ""]

    @property
    def _metric(self) -> str:
        return str(self.stage.block["metric"])


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def run_stage(
    stage: Stage,
    plans: list[SeedPlan],
    name: str,
    root: Path,
    *,
    train: bool,
    jobs: int,
    executor: str,
    data_dir: str | None,
    live: bool,
    vectorize: str,
) -> StageResult:
    """Search (unless `train` is false), read every seed's study, and train the retrained runs."""
    from .sweep import run_sweep

    if train and plans:
        p = plans[0]
        click.echo(
            f"tune stage: {len(plans)} searches (one per seed), B = {p.budget:,} steps, trials of {p.share:,} steps, "
            f"studies under {root / 'tune'}"
        )
        search(plans, jobs if executor == "process" else 1, data_dir)
    result = StageResult(stage, [read_seed(p) for p in plans])
    for r in result.seeds:
        if r.best is None:
            click.echo(f"seed {r.plan.seed}: no complete trial{' (not searched yet)' if not r.trials else ''}")
            result.failed = result.failed or train
    if stage.retrain_label:
        planned = [retrain_run(r) for r in result.seeds if r.best]
        for r, run in zip([r for r in result.seeds if r.best], planned):
            r.retrain = run.hash
        if train and planned:
            spec = {"name": f"{name}-retrain", "note": f"{stage.retrain_label}: each seed's best values at B steps"}
            res = run_sweep(
                f"{name}-retrain",
                root,
                spec,
                planned,
                executor=executor,
                jobs=jobs,
                data_dir=data_dir,
                live=live,
                vectorize=vectorize,
            )
            result.failed = result.failed or bool(res.failed)
    return result


__all__ = ["SeedPlan", "Stage", "StageResult", "parse_stage", "plan", "run_stage", "run_steps", "stage_labels"]
