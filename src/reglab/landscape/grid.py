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

First-layer reuse (exact algebra, on by default): the first weight layer the forward pass runs
(a Linear or Conv2d, not parametrized, called once per forward) computes f(u; W) with W linear
in the grid coordinates and u its input. When u does not depend on the perturbed parameters
(checked: u is recorded at theta* and at theta* + d1 (+ d2) and must be identical),
f(u; theta* + a d1 + b d2) = f(u; theta*) + a f0(u; d1) + b f0(u; d2) (f0: the layer without
its bias, or with the bias direction when biases are perturbed), so the three terms are computed
once and each point costs one multiply-add in place of the layer. For an MLP on MNIST this layer
holds most of the FLOPs. Values agree with direct evaluation up to float rounding. It is used
only while the cached terms take <= 256 MiB; `reuse_first_layer=False` turns it off.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..evaluation import LossFn, correct
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
    first_layer_reused: bool = False
    """Whether the first-layer reuse (module docstring) was in effect."""

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
    base: list[torch.Tensor],
    directions: Directions,
    x: torch.Tensor,
    y: torch.Tensor,
    alphas: np.ndarray,
    betas: np.ndarray | None,
    settings: dict | None,
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


def _save_state(
    path: Path, fp: str, loss: np.ndarray, acc: np.ndarray, mask: np.ndarray, settings: dict | None
) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        loss=loss,
        acc=acc,
        mask=mask,
        fingerprint=np.array(fp),
        settings=np.array(json.dumps(settings or {}, sort_keys=True, default=str)),
    )
    atomic_write_bytes(path, buf.getvalue())


class _Perturber:
    """Sets the perturbed parameters to theta* + a d1 (+ b d2) in place; restores theta*."""

    def __init__(self, model: nn.Module, directions: Directions):
        named = dict(model.named_parameters())
        missing = [n for n in directions.names if n not in named]
        if missing:
            raise ValueError(f"directions name parameters the model lacks: {missing[:3]}")
        self.params: list[torch.Tensor] = [named[n] for n in directions.names]
        for k, vs in enumerate(directions.vectors):
            for n, p, d in zip(directions.names, self.params, vs):
                if d.shape != p.shape:
                    raise ValueError(
                        f"direction {k + 1} for {n} has shape {tuple(d.shape)}, the parameter {tuple(p.shape)}"
                    )
        self.base = [p.detach().clone() for p in self.params]
        self.dirs = [
            [d.detach().to(device=p.device, dtype=p.dtype) for d, p in zip(vs, self.params)]
            for vs in directions.vectors
        ]

    @torch.no_grad()
    def set(self, coeffs: tuple[float, ...]) -> None:
        torch._foreach_copy_(self.params, self.base)
        for c, ds in zip(coeffs, self.dirs):
            if c != 0.0:
                torch._foreach_add_(self.params, ds, alpha=float(c))

    @torch.no_grad()
    def restore(self) -> None:
        torch._foreach_copy_(self.params, self.base)


class _Stop(Exception):
    pass


def _first_weight_layer_call(
    model: nn.Module, layers: Sequence[nn.Module], xb: torch.Tensor
) -> tuple[nn.Module | None, torch.Tensor | None]:
    """The first of `layers` that model(xb) calls, and its input; the forward stops there."""
    calls: list[tuple[nn.Module, torch.Tensor]] = []

    def hook(m, args):
        calls.append((m, args[0]))
        raise _Stop

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        model(xb)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return calls[0] if calls else (None, None)


class _FirstLayer:
    """Replaces the first weight layer's output by f(u; theta*) + sum_k c_k f0(u; d_k) (see the
    module docstring). Build with `build`; it returns None when the conditions do not hold."""

    MAX_BYTES = 256 << 20

    def __init__(self, layer, terms: list[list[torch.Tensor]], shapes: list[torch.Size]):
        self.layer = layer
        self.shapes = shapes
        self.terms = terms  # terms[b] = [f(u_b; theta*), f0(u_b; d1), (f0(u_b; d2))]
        self.batch = 0
        self.coeffs: tuple[float, ...] = ()

    @staticmethod
    @torch.no_grad()
    def build(model: nn.Module, pert: _Perturber, batches) -> _FirstLayer | None:
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if not layers:
            return None

        def first_input(xb):
            return _first_weight_layer_call(model, layers, xb)

        pert.restore()
        layer, _ = first_input(batches[0][0])
        if layer is None or parametrize.is_parametrized(layer):
            return None
        ids = {id(p): i for i, p in enumerate(pert.params)}
        iw = ids.get(id(layer.weight))
        ib = ids.get(id(layer.bias)) if layer.bias is not None else None
        if iw is None:
            return None
        owners = sum(any(q is layer.weight for q in m.parameters(recurse=False)) for m in model.modules())
        if owners != 1:
            return None  # a tied weight is used elsewhere too
        inputs = []
        for xb, _ in batches:
            m, u = first_input(xb)
            if m is not layer:
                return None
            inputs.append(u)
        pert.set(tuple(1.0 for _ in pert.dirs))
        try:
            m, u = first_input(batches[0][0])
        finally:
            pert.restore()
        if m is not layer or not torch.equal(u, inputs[0]):
            return None  # the layer's input depends on the perturbed parameters

        def f0(u, w, b):
            return F.linear(u, w, b) if isinstance(layer, nn.Linear) else layer._conv_forward(u, w, b)

        terms, size = [], 0
        for u in inputs:
            ts = [layer(u)] + [f0(u, ds[iw], ds[ib] if ib is not None else None) for ds in pert.dirs]
            size += sum(t.numel() * t.element_size() for t in ts)
            if size > _FirstLayer.MAX_BYTES:
                return None
            terms.append(ts)
        # A forward that calls the layer twice would read the wrong batch's terms: count calls.
        count = [0]
        h = layer.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        try:
            model(batches[0][0])
        finally:
            h.remove()
        if count[0] != 1:
            return None
        return _FirstLayer(layer, terms, [u.shape for u in inputs])

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        ts = self.terms[self.batch]
        if u.shape != self.shapes[self.batch]:
            raise RuntimeError(
                f"first-layer reuse: input of shape {tuple(u.shape)}, expected {tuple(self.shapes[self.batch])}"
            )
        out = ts[0].clone()
        for c, t in zip(self.coeffs, ts[1:]):
            if c != 0.0:
                out.add_(t, alpha=float(c))
        return out

    def install(self) -> None:
        self.layer.forward = self.forward

    def remove(self) -> None:
        self.layer.__dict__.pop("forward", None)


def _evaluate_points(
    model: nn.Module,
    pert: _Perturber,
    first: _FirstLayer | None,
    points: list[tuple[float, ...]],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    task: str,
) -> np.ndarray:
    """Summed loss and correct count over all batches at each point theta* + sum_i c_i d_i: (len(points), 2)."""
    device = batches[0][0].device
    vals = torch.zeros(len(points), 2, dtype=torch.float64, device=device)
    for j, coeffs in enumerate(points):
        pert.set(coeffs)
        if first is not None:
            first.coeffs = coeffs
        for b, (xb, yb) in enumerate(batches):
            if first is not None:
                first.batch = b
            out = model(xb)
            vals[j, 0] += loss_fn(out, yb).double() * xb.shape[0]
            vals[j, 1] += correct(out, yb, task).double()
    return vals.cpu().numpy()


def evaluate_grid(
    model: nn.Module,
    directions: Directions,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    task: str,
    alphas: np.ndarray,
    betas: np.ndarray | None = None,
    *,
    batch_size: int | None = None,
    state_path: Path | None = None,
    settings: dict | None = None,
    on_unit: Callable[[int, int], None] | None = None,
    reuse_first_layer: bool = True,
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
    first: _FirstLayer | None = None
    try:
        model.eval()
        with torch.no_grad():
            if reuse_first_layer and not mask.all():
                first = _FirstLayer.build(model, pert, batches)
                if first is not None:
                    first.install()
            for k, (start, stop) in enumerate(units):
                todo = [i for i in range(start, stop) if not mask[i]]
                if not todo:
                    continue
                points: list[tuple[float, ...]] = []
                for idx in todo:
                    r, c = divmod(idx, n_cols)
                    points.append((alphas[c],) if betas_arr is None else (alphas[c], betas_arr[r]))
                got = _evaluate_points(model, pert, first, points, batches, loss_fn, task) / n
                loss[todo], acc[todo] = got[:, 0], got[:, 1]
                mask[todo] = True
                evaluated += len(todo)
                if state_path is not None:
                    _save_state(Path(state_path), fp, loss, acc, mask, settings)
                if on_unit is not None:
                    on_unit(k, len(units))
    finally:
        if first is not None:
            first.remove()
        pert.restore()
        for m, flag in modes:
            m.training = flag
    shape = (n_cols,) if dims == 1 else (n_rows, n_cols)
    return GridResult(
        alphas,
        betas_arr,
        loss.reshape(shape),
        acc.reshape(shape),
        evaluated,
        resumed,
        fp,
        time.perf_counter() - t0,
        n,
        first is not None,
    )
