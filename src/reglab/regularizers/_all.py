"""Import every regularizer module so its classes register themselves in REGULARIZERS."""

from . import gradient_penalties, graph_energy, l2, path_energy, path_norm, pathprox, spectral  # noqa: F401
