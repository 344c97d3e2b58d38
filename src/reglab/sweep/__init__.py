"""Sweeps: grids of runs, executed inline, in a process pool or on SLURM, resumable."""

from .executors import EXECUTORS, execute_run
from .grid import PlannedRun, build_spec, expand
from .runner import SweepResult, read_manifest, run_sweep, sweep_hashes

__all__ = [
    "EXECUTORS",
    "PlannedRun",
    "SweepResult",
    "build_spec",
    "execute_run",
    "expand",
    "read_manifest",
    "run_sweep",
    "sweep_hashes",
]
