"""path_energy regularizers."""
