"""reglab: a laboratory for weight regularization of neural networks.

The public API for your own models and training loops (imported lazily, so `import reglab`
stays light for the command line):

- `term(name, lam=..., schedule=..., **options)`: one regularizer by name under a lambda schedule;
- `Regularization.of(*terms)`: several terms combined, applied around your optimizer step;
- `declare_unit_groups(model, pairs=None)`: PathProx / path-norm unit groups for any module;
- `load_run(path)`: a finished run's config, trained model and metrics;
- `Regularizer`, `Options`, `StepContext`, `REGULARIZERS`: to write and register your own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "term": "reglab.regularization",
    "Term": "reglab.regularization",
    "Regularization": "reglab.regularization",
    "declare_unit_groups": "reglab.models.network",
    "load_run": "reglab.loading",
    "LoadedRun": "reglab.loading",
    "Regularizer": "reglab.regularizers.base",
    "Options": "reglab.regularizers.base",
    "StepContext": "reglab.regularizers.base",
    "REGULARIZERS": "reglab.regularizers",
    "ConfigError": "reglab.errors",
}

__all__ = [
    "REGULARIZERS",
    "ConfigError",
    "LoadedRun",
    "Options",
    "Regularization",
    "Regularizer",
    "StepContext",
    "Term",
    "__version__",
    "declare_unit_groups",
    "load_run",
    "term",
]

if TYPE_CHECKING:
    from .errors import ConfigError
    from .loading import LoadedRun, load_run
    from .models.network import declare_unit_groups
    from .regularization import Regularization, Term, term
    from .regularizers import REGULARIZERS
    from .regularizers.base import Options, Regularizer, StepContext


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reglab' has no attribute {name!r}")
