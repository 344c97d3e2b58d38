"""gradient_penalties regularizers."""
