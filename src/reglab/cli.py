"""Command line: reglab train | runs | list | data | demo.

Errors a user can cause print one line naming the field and what is allowed, and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import UserError


def _fail(err: UserError) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)


class _Group(click.Group):
    """Turns UserError raised by any command into one message and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            _fail(e)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """reglab: train networks under weight regularizers and lambda schedules, and report."""


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--data-dir", default=None, help="Dataset directory (default: $REGLAB_DATA, then ~/.cache/reglab/data).")
@click.option("--output", "-o", default=None, help="Results root (default: the config's output, 'runs').")
@click.option("--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal).")
def train(args: tuple[str, ...], data_dir: str | None, output: str | None, progress: bool | None) -> None:
    """Train one run: reglab train [CONFIG.yaml] [key=value ...]

    Nested keys use dots (optim.lr=0.1, model.widths=[784,128,10], regularizers.0.lam=1e-3).
    """
    from .config import load_config
    from .train import run

    path, overrides = _split_args(args)
    if output is not None:
        overrides.append(f"output={output}")
    if data_dir is not None:
        overrides.append(f"data.dir={data_dir}")
    cfg = load_config(path, overrides)
    if progress is None:
        progress = sys.stderr.isatty() and cfg.train.progress
    res = run(cfg, progress=progress)
    if res.skipped:
        click.echo(f"already done: {res.path}")
    final = res.summary.get("final", {})
    shown = " ".join(f"{k}={final[k]:.4f}" for k in ("train_loss", "train_acc", "val_acc", "test_loss", "test_acc") if k in final)
    click.echo(f"{res.status}: {res.path}  {shown}")
    if res.status == "diverged":
        click.echo(f"the run diverged (NaN or inf loss) at step {res.summary.get('diverged_step')}", err=True)


def _split_args(args: tuple[str, ...]) -> tuple[str | None, list[str]]:
    path = None
    overrides = []
    for a in args:
        if "=" in a:
            overrides.append(a)
        elif path is None and (a.endswith((".yaml", ".yml")) or Path(a).is_file()):
            path = a
        else:
            from .errors import ConfigError

            raise ConfigError(a, "expected a CONFIG.yaml file or a key=value override")
    return path, overrides


@cli.command("list")
@click.argument("what", type=click.Choice(["models", "datasets", "regularizers", "schedules"]))
def list_names(what: str) -> None:
    """Print the registered names of models, datasets, regularizers or schedules."""
    if what == "models":
        from .models import MODELS as reg
    elif what == "datasets":
        from .data import DATASETS as reg
    elif what == "regularizers":
        from .regularizers import REGULARIZERS as reg
    else:
        from .schedules import SCHEDULES as reg
    for name in reg.names():
        click.echo(name)


@cli.command()
@click.option("--data-dir", default=None, help="Dataset directory to look in.")
def data(data_dir: str | None) -> None:
    """List the datasets and where each was found, or why not."""
    from rich.console import Console
    from rich.table import Table

    from .data import dataset_status, resolve_data_dir

    root = resolve_data_dir(data_dir)
    table = Table(title=f"datasets (data directory: {root})")
    for col in ("name", "status", "where / why"):
        table.add_column(col)
    for st in dataset_status(root):
        table.add_row(st["name"], "found" if st["found"] else "missing", str(st.get("where") or st.get("why") or ""))
    Console().print(table)


@cli.command()
@click.option("--root", default="runs", show_default=True, help="Results root to read.")
@click.option("--export", "export", default=None, help="Write the table to FILE.csv or FILE.parquet.")
@click.option("--all-columns", is_flag=True, help="Show every column, not only the varying config values and main metrics.")
def runs(root: str, export: str | None, all_columns: bool) -> None:
    """Print a table of the runs under a results root."""
    from .report_table import print_runs_table
    from .results import load_runs

    df = load_runs(root)
    if df.empty:
        click.echo(f"no runs under {root}")
        return
    if export:
        _export(df, export)
        click.echo(f"wrote {export}")
    print_runs_table(df, all_columns=all_columns)


def _export(df, path: str) -> None:
    from .errors import ConfigError
    from .store import atomic_write_bytes

    if path.endswith(".csv"):
        atomic_write_bytes(Path(path), df.to_csv(index=False).encode())
    elif path.endswith(".parquet"):
        import io

        buf = io.BytesIO()
        try:
            df.to_parquet(buf, index=False)
        except ImportError:
            raise ConfigError("--export", "parquet needs pyarrow: pip install 'reglab[parquet]'") from None
        atomic_write_bytes(Path(path), buf.getvalue())
    else:
        raise ConfigError("--export", f"unknown file type {path!r}", [".csv", ".parquet"])


@cli.command()
@click.option("--output", "-o", default="demo-out", show_default=True, help="Where the demo's runs go.")
def demo(output: str) -> None:
    """Train a small MLP on scikit-learn's digits under a few regularizers and print a table."""
    from .demo import run_demo

    run_demo(Path(output))


def main() -> None:
    cli(prog_name="reglab")


if __name__ == "__main__":
    main()
