"""A tune setup as an Optuna study: its sampler, its pruner, and opening it.

A study is bound to what it searches (the base config, the space, the metric and direction,
stored as the study's user attribute `reglab`): `reglab tune` run again with the same config
continues it, and with another config under the same study name it stops with a ConfigError
instead of mixing the trials of two different searches.
"""

from __future__ import annotations

import json

import click
import numpy as np
import optuna
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.trial import TrialState

from ..errors import ConfigError
from .spec import TuneSetup
from .storage import open_storage, storage_file

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
"""The trials that count toward `tune.trials`: a failed one (a dead worker's) is retried instead."""


def quiet_optuna() -> None:
    """Optuna's log lines per trial (with a traceback for each failed one, a Ctrl-C's included)
    would repeat reglab's own line per trial; its errors still show."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def make_sampler(setup: TuneSetup, worker: int = 0, stored: int = 0) -> BaseSampler:
    """The sampler, seeded from `tune.seed`, the worker's number and the number of trials the
    study already holds: workers of one study must not propose the same values in lockstep, and
    a restarted study must not propose its first values again (a sampler seeded alike repeats
    its draws, and the repeated trials would only reuse finished runs). Deterministic for a given
    study state: a fresh study with one worker always proposes the same trials."""
    s = setup.block.sampler
    seed = int(np.random.SeedSequence([setup.block.seed, worker, stored]).generate_state(1)[0])
    if s.name == "grid":
        grid = {key: dist.grid_values() for key, dist in setup.space.items()}
        return GridSampler(grid, seed=seed)  # type: ignore[arg-type]  # load_tune checked every key has values
    if s.name == "random":
        return RandomSampler(seed=seed)
    return TPESampler(seed=seed, n_startup_trials=s.n_startup_trials)


def make_pruner(setup: TuneSetup) -> BasePruner:
    p = setup.block.pruner
    if p.name == "median":
        return MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.name == "hyperband":
        return HyperbandPruner(1 if p.min_resource == "auto" else p.min_resource, p.max_resource, p.reduction_factor)
    if p.name == "successive_halving":
        return SuccessiveHalvingPruner(p.min_resource, p.reduction_factor)
    return NopPruner()


def open_study(setup: TuneSetup, url: str, worker: int = 0, create: bool = True) -> optuna.Study:
    """The study named `setup.study` in the storage at `url`: created when `create` and absent,
    else loaded; refused when it was started for another search."""
    if not create:
        path = storage_file(url)
        if path is not None and not path.exists():
            raise _no_study(setup, url)
    storage, pruner = open_storage(setup, url), make_pruner(setup)
    if create:
        study = optuna.create_study(
            storage=storage,
            pruner=pruner,
            study_name=setup.study,
            direction=setup.direction,
            load_if_exists=True,
        )
    else:
        try:
            study = optuna.load_study(study_name=setup.study, storage=storage, pruner=pruner)
        except KeyError:
            raise _no_study(setup, url) from None
    study.sampler = make_sampler(setup, worker, len(study.get_trials(deepcopy=False)))
    _check_identity(setup, study, url, create)
    return study


def _no_study(setup: TuneSetup, url: str) -> ConfigError:
    return ConfigError("tune.study", f"no study {setup.study!r} in {url}: run `reglab tune CONFIG` first")


def _check_identity(setup: TuneSetup, study: optuna.Study, url: str, create: bool) -> None:
    mine = json.loads(json.dumps(setup.identity()))
    stored = study.user_attrs.get("reglab")
    if stored is None and create:
        study.set_user_attr("reglab", mine)
    elif stored is not None and stored != mine:
        differs = [k for k in mine if stored.get(k) != mine[k]]
        raise ConfigError(
            "tune.study",
            f"study {setup.study!r} in {url} was started with another {', '.join(differs)}; continuing it would mix "
            "two searches: name a new study (tune.study) or give another --storage",
        )
    if study.direction.name.lower() != setup.direction:
        raise ConfigError("tune.direction", f"study {setup.study!r} {study.direction.name.lower()}s its metric")


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


__all__ = ["FINISHED", "finished_trials", "make_pruner", "make_sampler", "open_study", "quiet_optuna"]


def missing_trials(setup: TuneSetup, url: str) -> tuple[optuna.Study, int]:
    """Open (create) the study before any worker loads it, say where it stands, and return it
    with the number of finished trials still missing (0: nothing to do)."""
    quiet_optuna()
    study = open_study(setup, url)
    target, have = setup.block.trials, finished_trials(study)
    click.echo(f"study {setup.study}: {have} of {target} trials finished, storage {url}, runs under {setup.root}")
    return study, max(0, target - have)
