"""Evaluating the loss on a line or a plane through the final weights.

For directions d1 (and d2) and final weights theta*, the grid point (alpha_j, beta_i) is the
model with parameters theta* + alpha_j d1 + beta_i d2 (unperturbed parameters kept at their
values). Its value is the mean loss over the given examples, loss_fn(model(x_b), y_b) weighted
by batch size, and the accuracy (fraction correct, `reglab.evaluation.correct`), computed with
the model in eval mode (batch norm uses its running statistics) under torch.no_grad.

Layout: alphas = linspace(lo, hi, n) (and betas likewise); a 2-D grid's arrays have shape
(n_beta, n_alpha) with [i, j] at (alpha_j, beta_i) (numpy meshgrid 'xy' order, what
`contourf(alphas, betas, Z)` expects); a 1-D grid's arrays have shape (n_alpha,).

Parameters are set in place from precomputed tensors with `torch._foreach` ops (copy theta*,
add alpha d1, add beta d2), so a point costs one pass over the parameters plus the forward
passes. The model is restored exactly afterwards, also when an exception is raised: every
perturbed parameter is copied back from an exact clone of theta* (bit-identical), and every
module's train/eval flag is put back.

Resuming: with `state_path`, the grid is written atomically after each unit of work (a row of
a 2-D grid; a chunk of ceil(n/10) points of a 1-D grid) as an .npz holding loss, acc, the mask
of computed points and a fingerprint (SHA-256 of the settings, the axes, theta*, the directions
and the evaluation data). A later call with the same fingerprint computes only the points not
yet in the mask (a finished state computes nothing); a different fingerprint starts over.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..evaluation import correct
from ..store import atomic_write_bytes
from .directions import Directions


@dataclass
class GridResult:
    alphas: np.ndarray
    betas: np.ndarray | None
    loss: np.ndarray
    """(n_beta, n_alpha) for 2-D, (n_alpha,) for 1-D; float64."""
    acc: np.ndarray
    evaluated: int
    """Points computed by this call."""
    resumed: int
    """Points taken from an earlier, interrupted call."""
    fingerprint: str
    seconds: float
    examples: int

    @property
    def dims(self) -> int:
        return 1 if self.betas is None else 2


def grid_axis(lo: float, hi: float, n: int) -> np.ndarray:
    """n evenly spaced values from lo to hi inclusive (float64)."""
    return np.linspace(float(lo), float(hi), int(n))


def _hash_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().contiguous().cpu()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def fingerprint(
    base: list[torch.Tensor], directions: Directions, x: torch.Tensor, y: torch.Tensor, alphas: np.ndarray, betas: np.ndarray | None, settings: dict | None
) -> str:
    """SHA-256 over everything that determines the grid values."""
    h = hashlib.sha256()
    h.update(json.dumps(settings or {}, sort_keys=True, default=str).encode())
    h.update(json.dumps(directions.names).encode())
    h.update(np.asarray(alphas, dtype=np.float64).tobytes())
    h.update(b"|" if betas is None else np.asarray(betas, dtype=np.float64).tobytes())
    for t in base:
        _hash_tensor(h, t)
    for vs in directions.vectors:
        for t in vs:
            _hash_tensor(h, t)
    _hash_tensor(h, x)
    _hash_tensor(h, y)
    return h.hexdigest()


def _units(n_rows: int, n_cols: int, dims: int) -> list[tuple[int, int]]:
    """Flat index ranges [start, stop) written together: rows (2-D) or chunks (1-D)."""
    if dims == 2:
        return [(i * n_cols, (i + 1) * n_cols) for i in range(n_rows)]
    step = max(1, math.ceil(n_cols / 10))
    return [(s, min(s + step, n_cols)) for s in range(0, n_cols, step)]


def _load_state(path: Path, fp: str, size: int):
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fp or z["mask"].shape != (size,):
                return None
            return z["loss"].copy(), z["acc"].copy(), z["mask"].copy()
    except (OSError, KeyError, ValueError):
        return None


def _save_state(path: Path, fp: str, loss: np.ndarray, acc: np.ndarray, mask: np.ndarray, settings: dict | None) -> None:
    buf = io.BytesIO()
    np.savez(buf, loss=loss, acc=acc, mask=mask, fingerprint=np.array(fp), settings=np.array(json.dumps(settings or {}, sort_keys=True, default=str)))
    atomic_write_bytes(path, buf.getvalue())


class _Perturber:
    """Sets the perturbed parameters to theta* + a d1 (+ b d2) in place; restores theta*."""

    def __init__(self, model: nn.Module, directions: Directions):
        named = dict(model.named_parameters())
        missing = [n for n in directions.names if n not in named]
        if missing:
            raise ValueError(f"directions name parameters the model lacks: {missing[:3]}")
        self.params = [named[n] for n in directions.names]
        for k, vs in enumerate(directions.vectors):
            for n, p, d in zip(directions.names, self.params, vs):
                if d.shape != p.shape:
                    raise ValueError(f"direction {k + 1} for {n} has shape {tuple(d.shape)}, the parameter {tuple(p.shape)}")
        self.base = [p.detach().clone() for p in self.params]
        self.dirs = [[d.detach().to(device=p.device, dtype=p.dtype) for d, p in zip(vs, self.params)] for vs in directions.vectors]

    @torch.no_grad()
    def set(self, coeffs: tuple[float, ...]) -> None:
        torch._foreach_copy_(self.params, self.base)
        for c, ds in zip(coeffs, self.dirs):
            if c != 0.0:
                torch._foreach_add_(self.params, ds, alpha=float(c))

    @torch.no_grad()
    def restore(self) -> None:
        torch._foreach_copy_(self.params, self.base)


def evaluate_grid(
    model: nn.Module,
    directions: Directions,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable,
    task: str,
    alphas: np.ndarray,
    betas: np.ndarray | None = None,
    *,
    batch_size: int | None = None,
    state_path: Path | None = None,
    settings: dict | None = None,
    on_unit: Callable[[int, int], None] | None = None,
) -> GridResult:
    """The loss/accuracy grid of theta* + alpha d1 (+ beta d2) over all of (x, y).

    `directions.dims` must be 1 with betas None, or 2 with betas given. batch_size None
    evaluates all examples in one batch. `on_unit(k, n_units)` is called after unit k is
    computed (and saved when state_path is given). `settings` enter the fingerprint.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    dims = 1 if betas is None else 2
    if directions.dims != dims:
        raise ValueError(f"a {dims}-D grid needs {dims} direction(s), got {directions.dims}")
    betas_arr = None if betas is None else np.asarray(betas, dtype=np.float64)
    n_cols = alphas.size
    n_rows = 1 if betas_arr is None else betas_arr.size
    size = n_rows * n_cols
    n = x.shape[0]
    if n == 0:
        raise ValueError("no examples to evaluate the landscape on")
    bs = n if batch_size is None else max(1, int(batch_size))

    t0 = time.perf_counter()
    pert = _Perturber(model, directions)
    fp = fingerprint(pert.base, directions, x, y, alphas, betas_arr, settings)
    loss = np.full(size, np.nan)
    acc = np.full(size, np.nan)
    mask = np.zeros(size, dtype=bool)
    if state_path is not None and Path(state_path).exists():
        got = _load_state(Path(state_path), fp, size)
        if got is not None:
            loss, acc, mask = got
    resumed = int(mask.sum())
    evaluated = 0

    modes = [(m, m.training) for m in model.modules()]
    units = _units(n_rows, n_cols, dims)
    batches = [(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)]
    try:
        model.eval()
        with torch.no_grad():
            for k, (start, stop) in enumerate(units):
                todo = [i for i in range(start, stop) if not mask[i]]
                if not todo:
                    continue
                vals = torch.zeros(len(todo), 2, dtype=torch.float64, device=x.device)
                for j, idx in enumerate(todo):
                    r, c = divmod(idx, n_cols)
                    coeffs = (alphas[c],) if dims == 1 else (alphas[c], betas_arr[r])
                    pert.set(coeffs)
                    for xb, yb in batches:
                        out = model(xb)
                        vals[j, 0] += loss_fn(out, yb).double() * xb.shape[0]
                        vals[j, 1] += correct(out, yb, task).double()
                got = (vals / n).cpu().numpy()
                loss[todo], acc[todo] = got[:, 0], got[:, 1]
                mask[todo] = True
                evaluated += len(todo)
                if state_path is not None:
                    _save_state(Path(state_path), fp, loss, acc, mask, settings)
                if on_unit is not None:
                    on_unit(k, len(units))
    finally:
        pert.restore()
        for m, flag in modes:
            m.training = flag
    shape = (n_cols,) if dims == 1 else (n_rows, n_cols)
    return GridResult(alphas, betas_arr, loss.reshape(shape), acc.reshape(shape), evaluated, resumed, fp, time.perf_counter() - t0, n)
