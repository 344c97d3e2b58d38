"""Experiment trackers as run observers: TensorBoard, Weights & Biases and MLflow.

A config's `logging:` block switches them on (or `--tensorboard`, `--wandb PROJECT`, `--mlflow`
on the command line); `train.run` builds them with `observers_for`, so every way of running a
config (train, sweep, reproduce, Python) gets them. Each tracker is an optional extra: a
missing package stops the run with one message naming the extra, before anything is written.

`base` holds what the trackers share (names, values, the resume rule that logs each step
once); `tensorboard`, `wandb` and `mlflow` are one tracker each; `wandb_files` reads W&B's
local files back.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError
from ..observers import RunObserver


def packages_needed(cfg: RunConfig) -> dict[str, tuple[str, ...]]:
    """For each tracker the config switches on, the packages it imports."""
    lc = cfg.logging
    needed: dict[str, tuple[str, ...]] = {}
    if lc.tensorboard:
        needed["tensorboard"] = ("tensorboard",)
    if lc.wandb is not None and lc.wandb.enabled:
        needed["wandb"] = ("wandb",)
    if lc.mlflow is not None and lc.mlflow.enabled:
        sqlite = lc.mlflow.tracking_uri is None or lc.mlflow.tracking_uri.startswith("sqlite:")
        needed["mlflow"] = ("mlflow", "sqlalchemy", "alembic") if sqlite else ("mlflow",)
    return needed


def require_packages(cfg: RunConfig) -> None:
    """Refuse, with the extra to install, a config whose trackers are not installed."""
    for tracker, packages in packages_needed(cfg).items():
        for package in packages:
            if importlib.util.find_spec(package) is None:
                raise ConfigError(
                    f"logging.{tracker}",
                    f"needs the {package} package, which is not installed: pip install 'reglab[{tracker}]'",
                )


def observers_for(cfg: RunConfig, run_path: Path) -> list[RunObserver]:
    """The trackers `cfg.logging` switches on, for the run in directory `run_path` (their files
    go there, or beside it under the results root). Nothing is opened or written until the
    run starts; a missing package is a ConfigError now."""
    require_packages(cfg)
    lc = cfg.logging
    out: list[RunObserver] = []
    if lc.tensorboard:
        from .tensorboard import TensorBoardObserver

        out.append(TensorBoardObserver(Path(run_path) / "tensorboard"))
    if lc.wandb is not None and lc.wandb.enabled:
        from .wandb import WandbObserver

        w = lc.wandb
        out.append(WandbObserver(w.project, w.entity, w.mode, Path(w.dir) if w.dir else None))
    if lc.mlflow is not None and lc.mlflow.enabled:
        from .mlflow import MLflowObserver, default_uri

        m = lc.mlflow
        out.append(MLflowObserver(m.tracking_uri or default_uri(Path(run_path).parent), m.experiment))
    return out


def switch_overrides(
    tensorboard: bool = False, wandb: str | None = None, mlflow: bool = False, mlflow_uri: str | None = None
) -> list[str]:
    """The command line's tracker switches as key=value overrides. They set single keys, so a
    config's own tracker settings stay (`--mlflow` over a `logging.mlflow` block keeps it);
    values are quoted, so a project named 2024 stays a name."""
    out = []
    if tensorboard:
        out.append("logging.tensorboard=true")
    if wandb is not None:
        out += ["logging.wandb.enabled=true", f"logging.wandb.project={json.dumps(wandb)}"]
    if mlflow or mlflow_uri is not None:
        out.append("logging.mlflow.enabled=true")
    if mlflow_uri is not None:
        out.append(f"logging.mlflow.tracking_uri={json.dumps(mlflow_uri)}")
    return out


__all__ = ["observers_for", "packages_needed", "require_packages", "switch_overrides"]
