"""`reglab tune`: search, show or plot a study, given a config with a `tune:` block.

Kept apart from the command-line parsing (cli.py) and from Optuna: the config is read and
checked, and Optuna's presence asked for, before anything is opened or written; with
`--executor slurm` so are the SLURM options (`--slurm KEY=VALUE` over the config's `slurm:`
block, as `reglab sweep` takes them), the storage (SQLite refused) and the cluster's answer.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..sweep.slurm_options import SlurmOptions
    from .spec import TuneSetup

INSTALL = "pip install 'reglab[tune]'"
CLUSTER = ("slurm", "submitit_local")
"""Executors whose workers are submitit jobs: they share the study through a journal file or a
database server (never SQLite)."""


def require_optuna() -> None:
    """Optuna is an optional extra: without it, one message saying how to get it."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("tune", f"reglab tune needs Optuna, which is not installed: {INSTALL}") from None


def tune_command(
    path: str | None,
    overrides: list[str],
    *,
    jobs: int = 1,
    storage: str | None = None,
    output: str | None = None,
    data_dir: str | None = None,
    show: bool = False,
    plot: str | None = None,
    executor: str | None = None,
    slurm: tuple[str, ...] | list[str] = (),
) -> int:
    """Run the study (or, with `show`/`plot`, only read it); returns the exit status.
    `executor`: local (this process, or -j worker processes; the default), slurm (-j worker jobs;
    implied by `slurm`, the --slurm KEY=VALUE items) or submitit_local."""
    require_optuna()
    if path is None:
        raise ConfigError("CONFIG", "reglab tune needs a config file with a tune: block")
    from ..sweep.slurm_options import slurm_request
    from .spec import load_tune
    from .storage import choose_url

    setup = load_tune(path, overrides, output)
    request = slurm_request(setup.slurm, slurm)  # the slurm: block and --slurm, checked whatever the executor
    if slurm and executor not in (None, *CLUSTER):
        raise ConfigError("--slurm", f"needs --executor slurm (not {executor})", list(CLUSTER))
    executor = executor or ("slurm" if slurm else "local")
    cluster = executor in CLUSTER
    url = choose_url(setup, storage, cluster=cluster)
    if not (show or plot):
        if cluster:
            options = cluster_options(executor, request, setup.study)
            if storage is None:
                _note_local_study(setup)
            from .cluster import run_on_cluster

            return run_on_cluster(setup, url, jobs, data_dir, executor, options)
        from .workers import run_study

        return run_study(setup, url, jobs, data_dir)

    from .study import open_study, quiet_optuna

    quiet_optuna()
    study = open_study(setup, url, create=False)
    if show:
        from .show import show_lines

        for line in show_lines(setup, study, url):
            click.echo(line)
    if plot:
        from .plot import plot_study

        click.echo(f"wrote {plot_study(setup, study, Path(plot))}")
    return 0


def cluster_options(executor: str, request: dict, study: str) -> SlurmOptions:
    """The worker jobs' SLURM options, checked before anything is written: submitit is there,
    the options' names and values, and (on SLURM) the cluster's own answer to the request."""
    import importlib.util

    from ..sweep.slurm_options import check_with_cluster, slurm_options

    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("--executor", f"{executor} needs submitit: pip install 'reglab[slurm]'", ["local"])
    options = slurm_options(request)
    if executor == "slurm":
        missing = [p for p in ("sbatch", "srun") if shutil.which(p) is None]
        if missing:
            raise ConfigError(
                "--executor",
                f"slurm: no {' or '.join(missing)} on PATH; run reglab tune on a machine of the cluster",
                ["local", "submitit_local"],
            )
        check_with_cluster(options, f"tune-{study}")
    return options


def _note_local_study(setup: TuneSetup) -> None:
    """Worker jobs cannot share the local SQLite study: say so when there is one."""
    from .storage import default_url, journal_url

    sqlite, journal = default_url(setup), journal_url(setup)
    if Path(sqlite[len("sqlite:///") :]).exists() and not Path(journal[len("journal:") :]).exists():
        click.echo(
            f"note: worker jobs cannot share the SQLite study {sqlite[len('sqlite:///') :]}; they start study "
            f"{setup.study} in {journal[len('journal:') :]} (runs already finished under {setup.root} are reused "
            "where trials ask for them)",
            err=True,
        )


__all__ = ["CLUSTER", "INSTALL", "cluster_options", "require_optuna", "tune_command"]
