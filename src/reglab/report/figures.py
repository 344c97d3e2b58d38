"""The report's figures: matplotlib (Agg) figures rendered to PNG bytes.

Every function takes the `ReportData` (and sometimes a subset of its settings) and returns a
list of `Fig` (name, title, caption, png bytes); an empty list means "nothing to draw". Colors
come from each setting, so a setting has the same color in every figure. At most
`MAX_SETTINGS` settings are drawn in one figure; more are split over several figures.

This module only gathers the figure families under one name (``from . import figures as F``);
the code lives in:

- `reglab.report.plotting`: the Agg backend, constants (`MAX_SETTINGS`, `DPI`, `BAND`, `STYLE`,
  `SPLIT_NAMES`), `Fig`, `to_png`, `chunks`, part names and titles, the legend below a figure,
  panel grids, `x_axis`, `seed_stats` and the mean line with its min–max band;
- `reglab.report.figures_training`: curves during training, λ schedules, regularizer
  measurements and final accuracies (`curve_figures`, `lambda_figures`, `measurement_figures`,
  `final_accuracy_figures`, `reg_keys`, `measurement_columns`, `MEASUREMENT_DOC`);
- `reglab.report.figures_margins`: margin distributions (`margin_figures`,
  `margins_by_setting`, `choose_margin_kind`, `MARGIN_KIND_ORDER`, `MARGIN_DOC`);
- `reglab.report.figures_structure`: ranks, ranks during training, singular value spectra and
  active units (`rank_figures`, `rank_during_figures`, `spectrum_figures`, `sparsity_figures`,
  `sparsity_values`, `RANK_DOC`);
- `reglab.report.figures_landscape`: the landscape writer's PNGs of one representative run per
  setting (`landscape_figures`, `representative_run`).
"""

from __future__ import annotations

from .figures_histograms import spectrum_histogram_figures
from .figures_landscape import landscape_figures, representative_run
from .figures_margins import MARGIN_DOC, MARGIN_KIND_ORDER, choose_margin_kind, margin_figures, margins_by_setting
from .figures_margins import _violins as _violins
from .figures_structure import (
    RANK_DOC,
    rank_during_figures,
    rank_figures,
    sparsity_figures,
    sparsity_values,
    spectrum_figures,
)
from .figures_structure import _layer_order as _layer_order
from .figures_structure import _ranks_frame as _ranks_frame
from .figures_training import (
    MEASUREMENT_DOC,
    curve_figures,
    final_accuracy_figures,
    lambda_figures,
    measurement_columns,
    measurement_figures,
    reg_keys,
)
from .figures_training import _changing as _changing

# plotting first: it selects the Agg backend before any figure family imports pyplot
from .plotting import (
    BAND,
    DPI,
    MAX_SETTINGS,
    SPLIT_NAMES,
    STYLE,
    Fig,
    chunks,
    seed_stats,
    to_png,
    x_axis,
)
from .plotting import _draw_mean_band as _draw_mean_band
from .plotting import _legend_below as _legend_below
from .plotting import _panel_grid as _panel_grid
from .plotting import _part as _part
from .plotting import _part_title as _part_title

__all__ = [
    "BAND",
    "DPI",
    "MARGIN_DOC",
    "MARGIN_KIND_ORDER",
    "MAX_SETTINGS",
    "MEASUREMENT_DOC",
    "RANK_DOC",
    "SPLIT_NAMES",
    "STYLE",
    "Fig",
    "choose_margin_kind",
    "chunks",
    "curve_figures",
    "final_accuracy_figures",
    "lambda_figures",
    "landscape_figures",
    "margin_figures",
    "margins_by_setting",
    "measurement_columns",
    "measurement_figures",
    "rank_during_figures",
    "rank_figures",
    "reg_keys",
    "representative_run",
    "seed_stats",
    "sparsity_figures",
    "sparsity_values",
    "spectrum_figures",
    "spectrum_histogram_figures",
    "to_png",
    "x_axis",
]
