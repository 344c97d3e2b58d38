"""reglab: a laboratory for weight regularization of neural networks."""

__version__ = "0.1.0"
