"""HTML reports with figures: `build_report(root, out_dir)` -> out_dir/index.html.

- `reglab.report.data`: runs -> settings (groups of seeds), labels, colors, analysis readers
- `reglab.report.figures`: matplotlib figures (Agg) as PNG bytes, with captions; the families
  live in `figures_training`, `figures_margins`, `figures_structure`, `figures_landscape`, their
  shared pieces in `plotting`
- `reglab.report.html`: page assembly (inline CSS, base64 data URIs, no JavaScript)
- `reglab.report.build`: `build_report`
"""

from .build import build_report

__all__ = ["build_report"]
