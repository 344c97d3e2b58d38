"""l2 regularizers."""
