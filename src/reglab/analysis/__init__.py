"""Analysis of trained networks: margins, hidden-layer margins, spectra and ranks, sparsity.

Each module computes one family of quantities and states their definitions in its docstring;
`run_analysis` is what a run calls (`analyze_final` at the end, `spectra_rows` during training).
"""

from .hidden_margins import HiddenMarginResult, hidden_layer_distances, hidden_margins, signature
from .margins import (
    MARGIN_KINDS,
    MarginResult,
    compute_margins,
    margin_distributions,
    norm_one_network,
    product_of_frobenius_norms,
    product_of_spectral_norms,
    spectral_complexity,
    summarize,
    weight_matrices,
)
from .run_analysis import analyze_final
from .sparsity import unit_sparsity
from .spectra import layer_spectra, matrix_metrics, spectra_rows

__all__ = [
    "MARGIN_KINDS",
    "HiddenMarginResult",
    "MarginResult",
    "analyze_final",
    "compute_margins",
    "hidden_layer_distances",
    "hidden_margins",
    "layer_spectra",
    "margin_distributions",
    "matrix_metrics",
    "norm_one_network",
    "product_of_frobenius_norms",
    "product_of_spectral_norms",
    "signature",
    "spectra_rows",
    "spectral_complexity",
    "summarize",
    "unit_sparsity",
    "weight_matrices",
]
