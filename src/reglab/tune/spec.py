"""The `tune:` block of a config: what `reglab tune` searches and how it judges a trial.

A tune config is a run config, the base every trial starts from, plus a `tune:` block:

    tune:
      space:                      # dotted config keys -> a distribution
        regularizers.0.lam: {log_uniform: [1.0e-6, 1.0e-2]}
        optim.lr: {uniform: [0.01, 0.3]}
        model.widths: {categorical: [[64, 32, 10], [64, 64, 10]]}
        train.batch_size: {int: [32, 128, 32]}      # low, high[, step]
      metric: val_acc             # a validation metric; test_* is refused
      direction: maximize         # default: maximize accuracies, minimize losses
      trials: 20                  # finished (complete or pruned) trials the study reaches
      sampler: tpe                # or {name: tpe, n_startup_trials: 10}; random; grid
      pruner: median              # or {name: median, n_startup_trials: 5, n_warmup_steps: 0}; hyperband;
                                  # successive_halving; none
      seed: 0                     # seeds the sampler (with the worker and the trials stored)

Everything is checked here, before a study is opened, the same way a run config is: each problem
is one ConfigError naming its field (exit status 2) and nothing is written. Each searched key is
tried at its extreme values (and each choice) on the base config, so a key the config does not
have, or a range the config refuses, stops the search before its first trial rather than
failing trial after trial.

A `slurm:` block beside it (the options of `--executor slurm`, as in a sweep's YAML) is kept
apart, raw, in `TuneSetup.slurm`: it is no part of any run config nor of the study.

This module needs no Optuna: it only reads and checks the block and builds trial configs.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import (
    NON_IDENTITY_FIELDS,
    RunConfig,
    check_name,
    load_yaml,
    merge,
    name_from,
    parse_overrides,
    set_dotted,
)
from ..errors import ConfigError, pydantic_message

KINDS = ("log_uniform", "uniform", "int", "categorical")
Direction = Literal["maximize", "minimize"]
METRICS = ("val_acc", "val_loss")
"""What a trial is judged by: the validation split's numbers of the run's evaluations."""
VALIDATION_KEYS = ("data.val_fraction", "data.val_size", "data.rest_as_validation")


@dataclass(frozen=True)
class Dist:
    """One searched key's distribution. Categorical choices that Optuna cannot store (lists,
    mappings) travel as their JSON text and are decoded when a trial's config is built."""

    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    choices: tuple[Any, ...] = ()
    grid: tuple[Any, ...] | None = None
    """Explicit values for the grid sampler (floats need them; int and categorical have their own)."""

    @property
    def log(self) -> bool:
        return self.kind == "log_uniform"

    @property
    def encoded(self) -> bool:
        return any(not isinstance(c, (bool, int, float, str, type(None))) for c in self.choices)

    def options(self) -> tuple[Any, ...]:
        """The values a trial can hold as Optuna stores them (categorical: encoded choices)."""
        return tuple(json.dumps(c) for c in self.choices) if self.encoded else self.choices

    def decode(self, value: Any) -> Any:
        """The config value of a stored trial value."""
        return json.loads(value) if self.encoded and isinstance(value, str) else value

    def grid_values(self) -> list[Any] | None:
        """The values the grid sampler walks through, or None when this key has none."""
        if self.grid is not None:
            return list(self.grid)
        if self.kind == "categorical":
            return list(self.options())
        if self.kind == "int":
            assert self.low is not None and self.high is not None
            return list(range(int(self.low), int(self.high) + 1, self.step or 1))
        return None

    def probes(self) -> list[Any]:
        """Config values that stand for the whole range when checking it against the base."""
        if self.kind == "categorical":
            return list(self.choices)
        values = [self.low, self.high, *(self.grid or ())]
        return [int(v) for v in values if v is not None] if self.kind == "int" else values


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SamplerConfig(_Block):
    name: Literal["tpe", "random", "grid"] = "tpe"
    n_startup_trials: int = Field(10, ge=0)
    """tpe: random trials before the model takes over."""


class PrunerConfig(_Block):
    """The pruner and its options; each option belongs to some pruners only (OPTIONS)."""

    name: Literal["median", "hyperband", "successive_halving", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    """median: training steps before a trial may be pruned."""
    min_resource: int | Literal["auto"] = "auto"
    """Training steps a trial gets before its first judgement (hyperband: auto means 1)."""
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)


PRUNER_OPTIONS = {
    "median": ("n_startup_trials", "n_warmup_steps"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
    "successive_halving": ("min_resource", "reduction_factor"),
    "none": (),
}


class TuneBlock(_Block):
    space: dict[str, Any]
    metric: str
    direction: Direction | None = None
    trials: int = Field(20, ge=1)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    seed: int = 0
    study: str | None = None
    """The study's name (default: the config's name, else the file's)."""
    heartbeat_interval: int = Field(10, ge=1)
    """Seconds between a running trial's signs of life in the storage."""
    grace_period: int | None = Field(None, ge=1)
    """Seconds without a sign of life after which a trial counts as dead, is marked failed and
    retried (default: twice the heartbeat interval)."""
    max_retry: int = Field(3, ge=0)
    """How many times a dead worker's trial is queued again."""

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _name_alone(cls, v: Any) -> Any:
        """`sampler: random` stands for `sampler: {name: random}`."""
        return {"name": v} if isinstance(v, str) else v


@dataclass(frozen=True)
class TuneSetup:
    """Everything a worker needs to run trials (plain, picklable data)."""

    study: str
    root: Path
    base: dict
    """The base config as raw data, before any trial's values."""
    block: TuneBlock
    space: dict[str, Dist]
    direction: Direction
    slurm: dict[str, Any] | None = None
    """The config's `slurm:` block, raw (what `--executor slurm` asks of the cluster); not part
    of a trial's run config nor of the study's identity."""

    def trial_config(self, values: dict[str, Any]) -> RunConfig:
        """The run config of a trial: the base with the trial's (stored) values set."""
        from ..validation import validate

        raw = copy.deepcopy(self.base)
        for key, value in values.items():
            set_dotted(raw, key, self.space[key].decode(value))
        return validate(raw)

    def identity(self) -> dict:
        """What a study is bound to: a study continued under another base config, space or metric
        would mix trials of different searches."""
        from ..config import canonical_dict
        from ..validation import validate

        return {
            "base": canonical_dict(validate(self.base)),
            "space": self.block.space,
            "metric": self.block.metric,
            "direction": self.direction,
        }


def load_tune(path: str | Path, overrides: list[str], output: str | None = None) -> TuneSetup:
    """The tune setup of a YAML file and key=value overrides (tune.* keys included); the results
    root is `output`, else the config's `output`."""
    raw = merge(load_yaml(path), parse_overrides(overrides))
    if output is not None:
        raw["output"] = output
    if "tune" not in raw:
        raise ConfigError("tune", f"{path} has no tune: block (the search space, metric and trials)")
    return tune_setup(raw, name_from(Path(path).stem))


def tune_setup(raw: dict, default_study: str) -> TuneSetup:
    """The tune setup of a config's raw data with its `tune:` block, checked as `load_tune` says;
    the study's name is `tune.study`, else the config's `name`, else `default_study`."""
    raw = copy.deepcopy(raw)
    tune_raw = raw.pop("tune")
    raw.pop("reproduce", None)
    slurm = raw.pop("slurm", None)
    block = _block(tune_raw)
    base = _base_config(raw)
    space = {key: _dist(key, spec) for key, spec in block.space.items()}
    if not space:
        raise ConfigError("tune.space", "is empty: name at least one config key to search")
    _check_metric(block, base, space)
    direction = block.direction or _default_direction(block.metric)
    _check_pruner(block.pruner)
    if block.sampler.name == "grid":
        for key, dist in space.items():
            if dist.grid_values() is None:
                raise ConfigError(
                    f"tune.space.{key}",
                    "the grid sampler needs the values to try: add grid: [...] or use categorical or int",
                )
    study = _study_name(block, raw, default_study)
    # The runs carry the study's name (a label, not part of their identity) and the root explicitly.
    setup = TuneSetup(
        study, Path(base.output), raw | {"name": study, "output": base.output}, block, space, direction, slurm
    )
    for key, dist in space.items():
        _check_key(setup, key, dist)
    return setup


def _block(tune_raw: Any) -> TuneBlock:
    if not isinstance(tune_raw, dict):
        raise ConfigError("tune", "must be a mapping (space, metric, trials, ...)")
    try:
        return TuneBlock.model_validate(tune_raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = "tune." + ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            sections: dict[str, type[BaseModel]] = {"sampler": SamplerConfig, "pruner": PrunerConfig}
            parent: type[BaseModel] = TuneBlock
            for part in err["loc"][:-1]:
                parent = sections.get(str(part), parent)
            raise ConfigError(field, "unknown key", sorted(parent.model_fields)) from None
        if err["type"] == "missing":
            raise ConfigError(field, "is required") from None
        raise ConfigError(field, pydantic_message(err)) from None


def _base_config(raw: dict) -> RunConfig:
    """The validated base: one setting (a sweep's alternatives belong in tune.space)."""
    from ..sweep.grid import find_axes
    from ..validation import validate

    if "variants" in raw:
        raise ConfigError("variants", "a tune config has one base setting: search over choices with tune.space")
    for key, values in find_axes(raw):
        raise ConfigError(key, f"a list of alternatives ({values!r}) has no place in a tune config: use tune.space")
    return validate(raw)


def _dist(key: str, spec: Any) -> Dist:
    where = f"tune.space.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(where, f"must be a mapping with one of {', '.join(KINDS)} (got {spec!r})")
    kinds = [k for k in spec if k in KINDS]
    extra = [k for k in spec if k not in (*KINDS, "grid")]
    if extra:
        raise ConfigError(f"{where}.{extra[0]}", "unknown key", [*KINDS, "grid"])
    if len(kinds) != 1:
        raise ConfigError(where, "give exactly one distribution", KINDS)
    kind, args = kinds[0], spec[kinds[0]]
    grid = spec.get("grid")
    if grid is not None and (not isinstance(grid, list) or not grid):
        raise ConfigError(f"{where}.grid", "must be a non-empty list of values")
    if kind == "categorical":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}.categorical", "must be a non-empty list of choices")
        if grid is not None:
            raise ConfigError(f"{where}.grid", "categorical choices are the grid already")
        return Dist(kind, choices=tuple(args))
    sizes = (2, 3) if kind == "int" else (2,)
    form = "[low, high] or [low, high, step]" if kind == "int" else "[low, high]"
    if not isinstance(args, list) or len(args) not in sizes:
        raise ConfigError(f"{where}.{kind}", f"must be {form}")
    numbers = [_number(f"{where}.{kind}", v, integer=kind == "int") for v in args]
    low, high = numbers[0], numbers[1]
    if not low < high:
        raise ConfigError(f"{where}.{kind}", f"low must be below high (got {low}, {high})")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}.{kind}", f"a log scale needs low > 0 (got {low})")
    step = int(numbers[2]) if len(numbers) == 3 else None
    if step is not None and step < 1:
        raise ConfigError(f"{where}.{kind}", f"step must be at least 1 (got {step})")
    if grid is not None:
        for v in grid:
            x = _number(f"{where}.grid", v, integer=kind == "int")
            if not low <= x <= high:
                raise ConfigError(f"{where}.grid", f"{v!r} lies outside [{low}, {high}]")
    return Dist(kind, low, high, step, grid=tuple(grid) if grid is not None else None)


def _number(where: str, v: Any, integer: bool) -> float | int:
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not math.isfinite(v):
        raise ConfigError(where, f"{v!r} is not {'an integer' if integer else 'a finite number'}")
    return v


def _check_metric(block: TuneBlock, base: RunConfig, space: dict[str, Dist]) -> None:
    metric = block.metric
    if metric.startswith("test_"):
        raise ConfigError(
            "tune.metric",
            f"{metric} is measured on the test set: choosing hyperparameters by it leaves no unbiased "
            "test number; use the validation split",
            METRICS,
        )
    if metric not in METRICS:
        raise ConfigError(
            "tune.metric", f"unknown metric {metric!r}: a trial is judged on the validation split", METRICS
        )
    d = base.data
    has_val = d.val_fraction > 0 or d.val_size is not None or d.rest_as_validation
    if not has_val and not any(k in VALIDATION_KEYS for k in space):
        raise ConfigError(
            "tune.metric",
            f"{metric} needs a validation set: set data.val_fraction, data.val_size or data.rest_as_validation",
        )


def _default_direction(metric: str) -> Direction:
    return "maximize" if metric.endswith("_acc") else "minimize"


def _check_pruner(p: PrunerConfig) -> None:
    allowed = PRUNER_OPTIONS[p.name]
    for option in p.model_fields_set - {"name"}:
        if option not in allowed:
            raise ConfigError(f"tune.pruner.{option}", f"is not an option of the {p.name} pruner", allowed or ["none"])


def _study_name(block: TuneBlock, raw: dict, default: str) -> str:
    if block.study is not None:
        return check_name(block.study, "tune.study")
    if "name" in raw:
        return check_name(raw["name"], "name")
    return default


def _check_key(setup: TuneSetup, key: str, dist: Dist) -> None:
    """Each searched value must make a valid run config of the base: the key exists, and the
    range's ends (or each choice) are values that key accepts."""
    where = f"tune.space.{key}"
    if key in NON_IDENTITY_FIELDS:
        raise ConfigError(where, "does not change what a run computes: every trial would be the same run")
    for value in dist.probes():
        try:
            setup.trial_config({key: json.dumps(value) if dist.encoded else value})
        except ConfigError as e:
            msg = str(e)[len(e.field) + 2 :]
            if e.field == key and msg.startswith("unknown key"):
                raise ConfigError(where, msg) from None
            raise ConfigError(where, f"value {value!r} is refused: {e}") from None


def search_values(setup: TuneSetup, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's searched values as config values (decoded), in the space's order."""
    return {k: setup.space[k].decode(params[k]) for k in setup.space if k in params}


__all__ = [
    "METRICS",
    "Dist",
    "PrunerConfig",
    "SamplerConfig",
    "TuneBlock",
    "TuneSetup",
    "load_tune",
    "search_values",
    "tune_setup",
]
