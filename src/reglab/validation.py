"""A config checked whole: its schema (reglab.config) and every name in it that lives in a
registry (datasets, models, regularizers, schedules, also under an import path), with their
options, before any run starts. Kept out of reglab.config so the schema imports no registry.
"""

from __future__ import annotations

from pathlib import Path

from .config import RegularizerConfig, RunConfig, load_yaml, merge, parse_overrides, validate_schema
from .data import DATASETS
from .errors import ConfigError
from .models import MODELS
from .regularizers import REGULARIZERS, check_regularizer_options
from .schedules import SCHEDULES, check_schedule_options


def validate(raw: dict) -> RunConfig:
    """Validate raw data into a RunConfig (schema, then names); the first problem becomes a
    ConfigError."""
    cfg = validate_schema(raw)
    check_names(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """The config of a YAML file (or none) with key=value overrides over it, validated."""
    base = load_yaml(path) if path else {}
    return validate(merge(base, parse_overrides(overrides or [])))


def check_names(cfg: RunConfig) -> None:
    """Names that live in registries are checked here, before any run starts."""
    DATASETS.get(cfg.data.dataset, "data.dataset")
    MODELS.get(cfg.model.name, "model.name")
    for i, r in enumerate(cfg.regularizers):
        REGULARIZERS.get(r.name, f"regularizers.{i}.name")
        check_regularizer_options(r, f"regularizers.{i}")
        SCHEDULES.get(r.schedule.name, f"regularizers.{i}.schedule.name")
        check_schedule_options(r.schedule, f"regularizers.{i}.schedule")
        _check_lam_within_bounds(r, f"regularizers.{i}")
    names = [m.name for m in cfg.analysis.monitors]
    for i, m in enumerate(cfg.analysis.monitors):
        where = f"analysis.monitors.{i}"
        cls = REGULARIZERS.get(m.name, f"{where}.name")
        if cls.uses_batch:
            allowed = [n for n in REGULARIZERS.names() if not REGULARIZERS.get(n).uses_batch]
            raise ConfigError(f"{where}.name", f"{m.name} cannot be measured without a training batch", allowed)
        if m.name in names[:i]:
            raise ConfigError(f"{where}.name", f"{m.name} is monitored twice")
        check_regularizer_options(m, where)
    _check_rho_wn_terms(cfg)
    _check_precision(cfg)


def _check_precision(cfg: RunConfig) -> None:
    """Under train.precision bf16 the step's forward runs in bfloat16; a penalty that
    differentiates that forward (the batch's gradient or Jacobian) could not stay float32."""
    if cfg.train.precision == "fp32":
        return
    for i, r in enumerate(cfg.regularizers):
        if REGULARIZERS.get(r.name, f"regularizers.{i}.name").uses_batch:
            raise ConfigError(
                "train.precision",
                f"bf16 cannot train with regularizers.{i} ({r.name}): its penalty differentiates the "
                "training batch's forward pass, which bf16 runs in bfloat16",
                ["fp32"],
            )


def _check_rho_wn_terms(cfg: RunConfig) -> None:
    """Under Rho-WN every weight layer has norm 1, so l2_sum would be a constant (study 1 refused
    it too): refused before any run starts, as a penalty and as a monitor."""
    if cfg.model.weight_norm != "rho":
        return
    names = [(f"regularizers.{i}", r.name) for i, r in enumerate(cfg.regularizers)]
    names += [(f"analysis.monitors.{i}", m.name) for i, m in enumerate(cfg.analysis.monitors)]
    for where, name in names:
        if REGULARIZERS.get(name, f"{where}.name").name == "l2_sum":  # also under an import path
            raise ConfigError(
                f"{where}.name",
                "l2_sum is constant under model.weight_norm: rho (every layer has norm 1); penalize the "
                "network's scale with l2_mul (= rho^2), or use model.weight_norm: true (PaperWN)",
            )


def _check_lam_within_bounds(r: RegularizerConfig, where: str) -> None:
    """A schedule's min_lam/max_lam bound every change; a starting lam outside them would make the
    first change jump (or be refused), so it is a config error rather than silently clipped."""
    extra = r.schedule.model_extra or {}
    lo, hi = extra.get("min_lam"), extra.get("max_lam")
    if (lo is not None and r.lam < float(lo)) or (hi is not None and r.lam > float(hi)):
        bounds = f"[{'0' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ConfigError(f"{where}.lam", f"{r.lam} lies outside the schedule's bounds min_lam..max_lam", [bounds])
