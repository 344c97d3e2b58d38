"""Spectra as the studies drew them (study 2's eigenvalue-distribution plot): per weight layer of
the final network, a histogram of its singular values (analysis/singular_values.npz) and, for
square layers, of the eigenvalues of its symmetric part (W + W^T)/2 (from checkpoints/final.pt),
every setting overlaid on shared bins, so the baseline and the regularized runs sit in one panel.
Counts are averaged over a setting's seeds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .data import ReportData
from .figures_structure import per_layer_arrays, singular_values
from .plotting import Fig, _legend_below, _panel_grid, _part, _part_title, chunks, to_png

BINS = 50


def _square_weights(run_path: Path) -> dict[str, np.ndarray]:
    """{layer: W} for the square 2-D weights of the final checkpoint ({} when it is absent)."""
    f = run_path / "checkpoints" / "final.pt"
    if not f.exists():
        return {}
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)["model"]
    except Exception:
        return {}
    out = {}
    for k, v in state.items():
        if k.endswith(".weight") and v.ndim == 2 and v.shape[0] == v.shape[1]:
            out[k[: -len(".weight")]] = v.double().numpy()
    return out


def _symmetric_eigenvalues(run_path: Path) -> dict[str, np.ndarray]:
    return {k: np.linalg.eigvalsh((w + w.T) / 2) for k, w in _square_weights(run_path).items()}


def spectrum_histogram_figures(d: ReportData, max_layers: int = 6) -> list[Fig]:
    out = []
    for kind, name, title, xlabel, what in (
        ("sv", "spectra_hist", "Singular value distributions", "singular value σ", "singular values"),
        (
            "sym",
            "spectra_sym_hist",
            "Eigenvalue distributions of the symmetric part (square layers)",
            "eigenvalue of (W + Wᵀ)/2",
            "eigenvalues of the symmetric part (W + Wᵀ)/2 of each square layer (checkpoints/final.pt)",
        ),
    ):
        layers, per = per_layer_arrays(d, singular_values if kind == "sv" else _symmetric_eigenvalues)
        layers = layers[:max_layers]
        if not per:
            continue
        settings = [s for s in d.settings if s.index in per]
        parts = list(chunks(settings))
        for part, group in parts:
            fig, axes = _panel_grid(len(layers), max_cols=3, w=3.8, h=2.8)
            for ax, layer in zip(axes, layers):
                pooled = [v for s in group for v in per[s.index].get(layer, [])]
                if not pooled:
                    continue
                # a layer with few values (a 10-class output layer) gets fewer, fuller bins
                bins = min(BINS, max(8, min(len(v) for v in pooled) // 2))
                edges = np.histogram_bin_edges(np.concatenate(pooled), bins=bins)
                for s in group:
                    seeds = per[s.index].get(layer, [])
                    if not seeds:
                        continue
                    counts = np.mean([np.histogram(v, bins=edges)[0] for v in seeds], axis=0)
                    ax.stairs(counts, edges, color=s.color, lw=1.4)
                ax.set_title(str(layer), fontsize=10)
                ax.set_xlabel(xlabel)
                ax.set_ylabel("count (mean over seeds)")
            fig.tight_layout()
            _legend_below(fig, group)
            cap = (
                f"Distribution of the {what} of the final network, per weight layer, every setting on the "
                f"same bins ({BINS}, fewer for small layers; a step line per setting: the count in each bin, "
                "averaged over its seeds). "
                "As study 2 drew them: a regularizer that shrinks the spectrum moves mass towards 0."
            )
            nparts = len(parts)
            out.append(Fig(_part(name, part, nparts), _part_title(title, part, nparts), cap, to_png(fig), "ranks"))
            plt.close(fig)
    return out
