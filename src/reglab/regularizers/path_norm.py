"""path_norm regularizers."""
