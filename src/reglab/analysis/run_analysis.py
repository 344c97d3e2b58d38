"""What a run measures on its network: `analyze_final` at the end, `spectra_rows` during training.

Files `analyze_final` writes into the run's analysis folder (each atomically, each only when its
part is enabled in `AnalysisConfig`):

    margins.npz               "{split}/{kind}" -> per-example margins (float32), see margins.py
    margins_summary.csv       summarize(): split, kind, n, min, q05, q25, median, q75, q95, max, mean, std
    margins_normalizers.json  the denominators: Π‖W‖_2, Π‖W‖_F, R_A, output std and ‖X‖_F/n per split
    hidden_margins.csv        (hidden_margins) Jiang et al. signature per split and layer
    hidden_margins.npz        (hidden_margins) "distance/{split}/{layer}" and "normalized/{split}/{layer}"
    ranks.csv                 (spectra) layer_spectra() with a leading step column
    singular_values.npz       (spectra) layer name -> singular values (float64)
    classification.json       per split: classes, confusion matrix, F1, (binary) confidence mean |f|
    misclassified.npz         split -> indices of the misclassified examples (classification.py)
    sparsity_units.csv        (sparsity, unit groups only) one row per unit
    sparsity.json             (sparsity) the summary of unit_sparsity() (or a note: no unit groups)

Margins use the first cfg.margin_limit examples of each split (train, val when present, test).
The model's parameters and train/eval modes are the same afterwards.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import AnalysisConfig
from ..data import TaskData
from ..store import atomic_write_bytes, atomic_write_json
from ._common import SPLITS
from .classification import classification_report
from .hidden_margins import hidden_margins
from .margins import compute_margins, summarize
from .sparsity import unit_sparsity
from .spectra import layer_spectra, spectra_rows

__all__ = ["analyze_final", "spectra_rows"]

MEAN_KINDS = ("raw", "norm_one")
"""Kinds whose mean is also returned (every kind returns its median)."""


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray], sync: bool = True) -> None:
    buf = io.BytesIO()
    # numpy's stub cannot tell that no key is savez's own allow_pickle keyword
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue(), sync)


def _write_csv(path: Path, frame, sync: bool = True) -> None:
    atomic_write_bytes(path, frame.to_csv(index=False).encode(), sync)


def analyze_final(
    model: nn.Module,
    data: TaskData,
    cfg: AnalysisConfig,
    out_dir: Path,
    step: int,
    *,
    reference_weights: Mapping[str, torch.Tensor] | None = None,
    include_bias: bool = False,
    sync: bool = True,
) -> dict[str, float]:
    """Measure the final network, write the files of the module docstring into `out_dir`
    (created), and return summary scalars:

    - margin.{split}.{kind}.median for every kind, margin.{split}.{kind}.mean for raw and norm_one;
    - prod_spectral_norm, prod_frobenius_norm, spectral_complexity (with margins);
    - rank_rel.{layer}, effective_rank.{layer}, spectral_norm.{layer}, and over all layers
      rank_rel_sum, nuclear_norm_sum, frobenius_sq_sum (with spectra);
    - active_units_pct, active_units_pct_thresh, path_norm_total (sparsity, unit groups);
    - f1.{split} and, for binary tasks, confidence.{split} (always).

    `reference_weights` ({layer: initial weight}, see margins.weight_matrices) sets the reference
    matrices M_ℓ of the spectral complexity; None means M_ℓ = 0. `include_bias` counts each unit's
    bias in its input-weight norm for the sparsity measurements (the trainer sets it for PathProx
    runs with regularize_bias, so they match PathProx's own report; study 4's bug 2 left it out).
    `sync`: fsync each file (False when the caller syncs once before the run's DONE, as the
    vectorized group trainer does)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scalars: dict[str, float] = {}

    if cfg.margins:
        res = compute_margins(model, data, SPLITS, cfg.margin_limit, reference_weights)
        _write_npz(
            out_dir / "margins.npz",
            {f"{split}/{kind}": v.astype(np.float32) for (split, kind), v in res.distributions.items()},
            sync,
        )
        summary = summarize(res.distributions)
        _write_csv(out_dir / "margins_summary.csv", summary, sync)
        atomic_write_json(out_dir / "margins_normalizers.json", res.normalizers, sync)
        for row in summary.itertuples(index=False):
            scalars[f"margin.{row.split}.{row.kind}.median"] = float(row.median)
            if row.kind in MEAN_KINDS:
                scalars[f"margin.{row.split}.{row.kind}.mean"] = float(row.mean)
        for key in ("prod_spectral_norm", "prod_frobenius_norm", "spectral_complexity"):
            scalars[key] = float(res.normalizers[key])

    if cfg.hidden_margins:
        hm = hidden_margins(model, data, SPLITS, limit=cfg.margin_limit)
        _write_csv(out_dir / "hidden_margins.csv", hm.summary, sync)
        arrays = {f"distance/{s}/{layer}": v.astype(np.float32) for (s, layer), v in hm.distances.items()}
        arrays.update({f"normalized/{s}/{layer}": v.astype(np.float32) for (s, layer), v in hm.normalized.items()})
        _write_npz(out_dir / "hidden_margins.npz", arrays, sync)

    if cfg.spectra:
        frame, spectra = layer_spectra(model)
        frame.insert(0, "step", int(step))
        _write_csv(out_dir / "ranks.csv", frame, sync)
        _write_npz(out_dir / "singular_values.npz", spectra, sync)
        for row in frame.itertuples(index=False):
            scalars[f"rank_rel.{row.layer}"] = float(row.rank_rel)
            scalars[f"effective_rank.{row.layer}"] = float(row.effective_rank)
            scalars[f"spectral_norm.{row.layer}"] = float(row.spectral_norm)  # the largest singular value
        # Network-level sums: study 2's spectral energy is 2 x nuclear_norm_sum.
        scalars["nuclear_norm_sum"] = float(frame["nuclear_norm"].sum())
        # Study 1's "weight rank" of a network: its layers' relative ranks added up.
        scalars["rank_rel_sum"] = float(frame["rank_rel"].sum())
        scalars["frobenius_sq_sum"] = float((frame["frobenius_norm"] ** 2).sum())

    report = classification_report(model, data)
    atomic_write_json(
        out_dir / "classification.json",
        {split: {k: v for k, v in e.items() if k != "misclassified"} for split, e in report.items()},
        sync,
    )
    _write_npz(out_dir / "misclassified.npz", {split: e["misclassified"] for split, e in report.items()}, sync)
    for split, e in report.items():
        scalars[f"f1.{split}"] = e["f1"]
        if "confidence" in e:
            scalars[f"confidence.{split}"] = e["confidence"]

    if cfg.sparsity:
        units, summary = unit_sparsity(model, cfg.active_threshold, include_bias)
        if summary["has_unit_groups"]:
            _write_csv(out_dir / "sparsity_units.csv", units, sync)
            for key in ("active_units_pct", "active_units_pct_thresh", "path_norm_total"):
                scalars[key] = float(summary[key])
        atomic_write_json(out_dir / "sparsity.json", summary, sync)

    return scalars
