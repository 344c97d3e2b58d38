"""spectral regularizers."""
