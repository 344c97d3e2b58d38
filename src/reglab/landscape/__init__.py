"""Loss landscapes around a network's weights (Li, Xu, Taylor, Studer & Goldstein 2018).

- `directions`: seeded Gaussian directions with filter/layer/no normalization, PCA directions
  of a training trajectory;
- `grid`: resumable evaluation of the loss on a 1-D line or 2-D plane, model restored exactly;
- `writers`: .npz (+ JSON metadata), ParaView .vtp surfaces, PNG contour/surface/line plots;
- `run_landscape`: `landscape_for_run(run_dir, cfg)` and `landscape_for_model(...)`.
"""

from .directions import (
    Directions,
    PCAResult,
    normalize_direction,
    pca_directions,
    pca_directions_for_model,
    perturbed_parameters,
    random_directions,
)
from .grid import GridResult, evaluate_grid, grid_axis
from .run_landscape import (
    LandscapeResult,
    landscape_for_model,
    landscape_for_run,
    make_directions,
    parse_landscape_overrides,
)
from .writers import read_npz, vtp_text, write_npz, write_vtp

__all__ = [
    "Directions",
    "GridResult",
    "LandscapeResult",
    "PCAResult",
    "evaluate_grid",
    "grid_axis",
    "landscape_for_model",
    "landscape_for_run",
    "make_directions",
    "normalize_direction",
    "parse_landscape_overrides",
    "pca_directions",
    "pca_directions_for_model",
    "perturbed_parameters",
    "random_directions",
    "read_npz",
    "vtp_text",
    "write_npz",
    "write_vtp",
]
