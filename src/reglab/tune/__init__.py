"""Hyperparameter search over reglab runs with Optuna (`reglab tune`; the `[tune]` extra).

`spec` reads and checks a config's `tune:` block (no Optuna needed), `storage` and `study` open
the study, `objective` turns a trial into an ordinary run whose evaluations feed the pruner,
`workers` runs the study in one or several local processes, `show` and `plot` read it back, and
`command` is `reglab tune` itself.
"""

from .command import require_optuna, tune_command
from .spec import TuneSetup, load_tune

__all__ = ["TuneSetup", "load_tune", "require_optuna", "tune_command"]
