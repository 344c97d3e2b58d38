"""pathprox regularizers."""
