"""Landscapes of a finished run (`landscape_for_run`) or of an in-memory model
(`landscape_for_model`).

Files written into the output directory (default `<run_dir>/analysis/landscape/`):

    landscape.npz        arrays + JSON metadata (see writers.write_npz)
    landscape.h5         with h5py installed: X, Y, losses (+ accuracies, metadata), as losscape
    grid_state.npz       resumable grid state (a rerun with the same settings computes nothing)
    landscape.vtp        2-D only: ParaView surface, z = loss
    landscape_log.vtp    2-D only: z = ln(loss + 0.1)
    contour.png          2-D only: contour map (+ trajectory for PCA directions)
    surface.png          2-D only: 3-D surface
    line.png             1-D only: loss and accuracy along the line
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from ..config import LandscapeConfig, parse_overrides
from ..errors import ConfigError, UserError, pydantic_message
from ..evaluation import LossFn
from ..store import RunDir
from ..validation import validate
from .directions import Directions, pca_directions_for_model, random_directions
from .grid import GridResult, evaluate_grid, grid_axis
from .writers import (
    LOG_OFFSET,
    finite_surface,
    plot_contour,
    plot_line,
    plot_surface,
    write_hdf5,
    write_npz,
    write_vtp,
)

if TYPE_CHECKING:
    from ..data import TaskData

FIELD = "analysis.landscape"


@dataclass
class LandscapeResult:
    out_dir: Path
    grid: GridResult
    directions: Directions
    meta: dict
    files: dict[str, Path] = field(default_factory=dict)


def parse_landscape_overrides(items: list[str], base: LandscapeConfig | None = None) -> LandscapeConfig:
    """A LandscapeConfig from `key=value` items; keys are LandscapeConfig fields, optionally
    prefixed by `analysis.landscape.` (e.g. `dims=1`, `range=[-2,2]`, `directions=pca`)."""
    raw = (base or LandscapeConfig()).model_dump()
    for key, value in parse_overrides(items):
        short = key.removeprefix(f"{FIELD}.")
        if short not in LandscapeConfig.model_fields:
            raise ConfigError(f"{FIELD}.{short}", "unknown key", sorted(LandscapeConfig.model_fields))
        raw[short] = value
    try:
        return LandscapeConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"] == "value_error":  # a cross-field check that names its field itself
            field, _, text = err["msg"].removeprefix("Value error, ").partition(": ")
            raise ConfigError(field, text) from None
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{FIELD}.{loc}", pydantic_message(err)) from None


def _state_dicts(snapshots) -> list[dict]:
    return [s["model"] if isinstance(s, dict) and isinstance(s.get("model"), dict) else s for s in snapshots]


def make_directions(
    model: nn.Module, cfg: LandscapeConfig, snapshots=None, steps: list[int] | None = None
) -> Directions:
    """Random or PCA directions as the config says (PCA needs `snapshots`, state dicts)."""
    if cfg.directions == "random":
        return random_directions(model, cfg.dims, cfg.normalization, cfg.seed, cfg.include_bias)
    snaps = _state_dicts(snapshots or [])
    if len(snaps) < 2:
        raise ConfigError(
            f"{FIELD}.directions",
            f"PCA directions need at least 2 weight snapshots, found {len(snaps)}; "
            "train the run with train.snapshot_every=N (e.g. 1) or use directions=random",
        )
    try:
        return pca_directions_for_model(model, snaps, cfg.dims, cfg.include_bias, steps)
    except ValueError as e:
        raise ConfigError(f"{FIELD}.directions", f"PCA directions impossible: {e}") from None


def landscape_for_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    task: str,
    cfg: LandscapeConfig,
    out_dir: Path,
    snapshots=None,
    meta: dict | None = None,
    *,
    steps: list[int] | None = None,
    batch_size: int | None = None,
    plots: bool = True,
    on_unit=None,
) -> LandscapeResult:
    """The landscape of `model` around its current weights on the first cfg.examples of (x, y).

    `snapshots`: state dicts (or {"model": state_dict} records) of the trajectory, needed for
    cfg.directions == "pca"; `steps` their training steps. `meta` is merged into the metadata
    (e.g. run hash and step). The model is left exactly as it was.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_avail = x.shape[0]
    if n_avail < cfg.examples:
        warnings.warn(
            f"landscape: the split has {n_avail} examples, fewer than examples={cfg.examples}; using all", stacklevel=2
        )
    x, y = x[: cfg.examples], y[: cfg.examples]
    dirs = make_directions(model, cfg, snapshots, steps)
    alphas = grid_axis(*cfg.range, cfg.resolution)
    betas = grid_axis(*cfg.range, cfg.resolution) if cfg.dims == 2 else None
    settings = {
        **cfg.model_dump(mode="json"),
        "task": task,
        "loss": getattr(loss_fn, "__name__", type(loss_fn).__name__),
    }
    grid = evaluate_grid(
        model,
        dirs,
        x,
        y,
        loss_fn,
        task,
        alphas,
        betas,
        batch_size=batch_size,
        state_path=out_dir / "grid_state.npz",
        settings=settings,
        on_unit=on_unit,
    )

    info = {
        **cfg.model_dump(mode="json"),
        "examples": int(x.shape[0]),
        "examples_requested": cfg.examples,
        "normalization_applied": dirs.normalization,
        "perturbed_parameters": dirs.names,
        "num_perturbed": int(sum(t.numel() for t in dirs.vectors[0])),
        "cosine": dirs.cosine(),
        "task": task,
        "fingerprint": grid.fingerprint,
        "grid_seconds": grid.seconds,
        "points_evaluated": grid.evaluated,
        "points_resumed": grid.resumed,
        "first_layer_reused": grid.first_layer_reused,
        "log_offset": LOG_OFFSET,
        "center_loss": _center(grid),
        "min_loss": float(np.nanmin(grid.loss)),
        "non_finite_points": int((~np.isfinite(grid.loss)).sum()),
        **(meta or {}),
    }
    traj = resid = None
    if dirs.pca is not None:
        p = dirs.pca
        traj, resid = p.coords.numpy(), p.residual.numpy()
        info.update(
            pca_explained=p.explained.tolist(),
            pca_residual_total=p.residual_total,
            pca_residuals=resid.tolist(),
            pca_steps=p.steps,
            snapshots=len(resid),
        )
        lo, hi = cfg.range
        inside = bool(((traj >= lo) & (traj <= hi)).all())
        info["trajectory_inside_range"] = inside
        if not inside:
            warnings.warn(
                f"landscape: the trajectory reaches coordinates {traj.min():.3g}..{traj.max():.3g}, outside range "
                f"{cfg.range}; set range to cover it",
                stacklevel=2,
            )
    files = {"npz": out_dir / "landscape.npz"}
    write_npz(files["npz"], grid, info, traj, resid, dirs.pca.steps if dirs.pca is not None else None)
    if write_hdf5(out_dir / "landscape.h5", grid, info):
        files["h5"] = out_dir / "landscape.h5"
    if cfg.dims == 2:
        assert grid.betas is not None  # a 2-D grid has a beta axis
        files["vtp"], files["vtp_log"] = out_dir / "landscape.vtp", out_dir / "landscape_log.vtp"
        z, _ = finite_surface(grid.loss)
        write_vtp(files["vtp"], grid.alphas, grid.betas, z)
        write_vtp(files["vtp_log"], grid.alphas, grid.betas, np.log(z + LOG_OFFSET))
        if plots:
            files["contour"], files["surface"] = out_dir / "contour.png", out_dir / "surface.png"
            plot_contour(files["contour"], grid, info, traj)
            plot_surface(files["surface"], grid, info)
    elif plots:
        files["line"] = out_dir / "line.png"
        plot_line(files["line"], grid, info)
    return LandscapeResult(out_dir, grid, dirs, info, files)


def _center(grid) -> float | None:
    """The loss at the trained weights (alpha = beta = 0), or None when that is not a grid point
    (an even resolution over a symmetric range steps over it)."""
    axes = [grid.alphas] if grid.betas is None else [grid.betas, grid.alphas]
    idx = []
    for axis in axes:
        hits = np.flatnonzero(np.isclose(axis, 0.0, rtol=0.0, atol=1e-12))
        if hits.size == 0:
            return None
        idx.append(int(hits[0]))
    return float(grid.loss[tuple(idx)])


def _snap_step(p: Path) -> int:
    m = re.fullmatch(r"snap_(\d+)\.pt", p.name)
    return int(m.group(1)) if m else -1


def landscape_in_run(
    rd: RunDir,
    model: nn.Module,
    d: TaskData,
    loss_fn: LossFn,
    cfg: LandscapeConfig,
    out: Path,
    meta: dict,
    batch_size: int,
    device: torch.device,
) -> None:
    """The landscape of a run's model (already holding the weights to look around), on the run's
    data split; PCA directions come from the run's weight snapshots. Used by landscape_for_run
    and by the trainer at the end of a run (which has model and data in memory already)."""
    x, y = {"train": (d.x_train, d.y_train), "val": (d.x_val, d.y_val), "test": (d.x_test, d.y_test)}[cfg.split]
    if x is None:
        raise ConfigError(
            f"{FIELD}.split",
            "the run has no validation set (data.val_fraction, data.val_size or data.rest_as_validation)",
            ["train", "test"],
        )
    assert y is not None  # x_val and y_val are set together
    snaps, steps = None, None
    if cfg.directions == "pca":
        paths = sorted(rd.ckpt_dir.glob("snap_*.pt"), key=_snap_step)
        if len(paths) < 2:
            raise ConfigError(
                f"{FIELD}.directions",
                f"PCA directions need at least 2 weight snapshots, run {rd.path.name} has {len(paths)}; "
                "train it with train.snapshot_every=N (e.g. 1) or use directions=random",
            )
        snaps = [torch.load(p, map_location=device, weights_only=True) for p in paths]
        steps = [int(s.get("step", _snap_step(p))) for s, p in zip(snaps, paths)]
    landscape_for_model(model, x, y, loss_fn, d.task, cfg, out, snaps, meta, steps=steps, batch_size=batch_size)


def landscape_for_run(
    run_dir: Path, cfg: LandscapeConfig, data_dir: str | None = None, out_dir: Path | None = None
) -> Path:
    """The landscape around a run's final weights; files go to out_dir (default
    `<run_dir>/analysis/landscape/`), which is returned."""
    from ..build import prepare

    rd = RunDir(Path(run_dir))
    if not rd.exists():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    record = rd.read_config()
    summary = rd.read_summary() or {}
    if summary.get("status") == "diverged":
        raise UserError(
            f"run {rd.path.name} diverged (non-finite loss at step {summary.get('diverged_step')}): "
            "there is no landscape around non-finite weights"
        )
    run_cfg = validate(record["config"])
    setup = prepare(run_cfg, data_dir)
    ck = rd.load_checkpoint("final", map_location=setup.device)
    if ck is None:
        raise UserError(f"run {rd.path.name} has no final weights (checkpoints/final.pt): it has not finished")
    model = setup.model
    model.load_state_dict(ck["model"])
    model.eval()
    out = Path(out_dir) if out_dir is not None else rd.path / "analysis" / "landscape"
    meta = {
        "run_hash": record.get("hash", rd.path.name),
        "run_dir": str(rd.path),
        "step": ck.get("step"),
        "model": run_cfg.model.name,
        "dataset": run_cfg.data.dataset,
        "loss_kind": run_cfg.train.loss,
    }
    landscape_in_run(rd, model, setup.data, setup.loss_fn, cfg, out, meta, run_cfg.train.eval_batch_size, setup.device)
    return out
