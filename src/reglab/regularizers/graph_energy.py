"""graph_energy regularizers."""
