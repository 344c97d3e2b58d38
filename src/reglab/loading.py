"""Load a finished run back from its directory: its config, its trained model and its metrics.

`load_run(path)` rebuilds the model from the run's config and the input shape and classes its
summary recorded (no dataset is read), then loads the weights of a checkpoint: ``final`` (the
weights the final metrics were measured on: the restored best ones where early stopping asked
for it), ``best`` or ``last``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .config import RunConfig
from .errors import UserError
from .store import RunDir
from .validation import validate


@dataclass
class LoadedRun:
    """A finished run: where it is, its config, its trained model and its summary."""

    path: Path
    config: RunConfig
    model: nn.Module
    """In eval mode, on the CPU unless `device` said otherwise."""
    summary: dict

    @property
    def final(self) -> dict:
        """The final metrics (summary.json's "final")."""
        return dict(self.summary.get("final", {}))

    def evals(self) -> pd.DataFrame:
        """One row per evaluation (evals.jsonl)."""
        return pd.DataFrame(RunDir(self.path).evals())

    def steps(self) -> pd.DataFrame:
        """One row per logged optimizer step (steps.jsonl)."""
        return pd.DataFrame(RunDir(self.path).steps())


def load_run(path: str | Path, checkpoint: str = "final", device: str | torch.device = "cpu") -> LoadedRun:
    """The run in directory `path` (see the module docstring). A directory that is not a finished
    run, or lacks the checkpoint, is a UserError saying what is missing."""
    from .models import build_model

    rd = RunDir(Path(path))
    if not rd.config_path.exists():
        raise UserError(f"{path}: not a run directory (no config.json)")
    summary = rd.read_summary()
    if summary is None or not rd.done:
        raise UserError(f"{path}: the run has not finished (no summary.json or DONE); train it to the end first")
    config = validate(rd.read_config()["config"])
    data = summary["data"]
    outputs = 1 if data["task"] == "binary" else len(data["classes"])
    with torch.random.fork_rng():  # building initializes weights; the caller's random state stays
        model = build_model(config.model, tuple(data["input_shape"]), outputs)
    state = rd.load_checkpoint(checkpoint, map_location=device)
    if state is None:
        kept = sorted(p.stem for p in rd.ckpt_dir.glob("*.pt"))
        raise UserError(f"{path}: no {checkpoint!r} checkpoint (kept: {', '.join(kept) or 'none'})")
    model.load_state_dict(state["model"])
    return LoadedRun(rd.path, config, model.to(device).eval(), summary)
