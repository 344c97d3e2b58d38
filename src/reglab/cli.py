"""Command line: reglab train | runs | list | data | demo.

Errors a user can cause print one line naming the field and what is allowed, and exit 2.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import Interrupted, UserError

DIVERGED_EXIT = 3
"""Exit status of `reglab train` for a run whose loss became NaN or inf."""


def _fail(err: UserError) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)


def _os_error_message(e: OSError) -> str:
    """One line for a file-system failure: the file, what went wrong, what to do."""
    where = e.filename or "a file"
    what = e.strerror or str(e)
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        todo = "free some space and rerun the same command: finished runs are kept and unfinished ones resume"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        todo = "choose a results root you can write (--output / output=)"
    else:
        todo = "check the path and rerun the same command"
    return f"{where}: {what}; {todo}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line: one line, without the source line that raised them."""
    click.echo(f"warning: {message}", err=True)


class _Group(click.Group):
    """Turns what a user can cause (UserError, a file-system failure, Ctrl-C) into one message:
    exit status 2, or 130 for an interrupt."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Interrupted as e:
            click.echo(str(e), err=True)
            sys.exit(e.exit_code)
        except UserError as e:
            _fail(e)
        except BrokenPipeError:
            # the reader went away (`reglab sweep ... --dry-run | head`): nothing to say to it;
            # stdout goes to /dev/null so the interpreter's final flush does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, as a shell reports a pipe's reader leaving
        except OSError as e:
            click.echo(f"error: {_os_error_message(e)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: rerun the same command to resume (finished runs are kept)", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="reglab")
def cli() -> None:
    """reglab: train networks under weight regularizers and lambda schedules, and report."""
    import warnings

    from .runtime import keep_freed_memory

    keep_freed_memory()
    warnings.showwarning = _show_warning


def _tracker_options(command):
    """--tensorboard, --wandb PROJECT, --mlflow, --mlflow-uri URI: switch the config's trackers
    on (its `logging:` block; reglab.tracking). The command gets them as keyword arguments."""
    options = [
        click.option("--tensorboard", is_flag=True, help="Log to TensorBoard (event files in RUN/tensorboard/)."),
        click.option("--wandb", default=None, metavar="PROJECT", help="Log to this W&B project (offline by default)."),
        click.option("--mlflow", is_flag=True, help="Log to MLflow (default store: sqlite ROOT/mlflow.db)."),
        click.option("--mlflow-uri", default=None, metavar="URI", help="Log to MLflow at this tracking URI."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--data-dir", default=None, help="Dataset directory (default: $REGLAB_DATA, then ~/.cache/reglab/data).")
@click.option("--output", "-o", default=None, help="Results root (default: the config's output, 'runs').")
@click.option("--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal).")
@click.option(
    "--from",
    "from_run",
    default=None,
    help="Train the config of this run directory again (e.g. into another --output, to reproduce it).",
)
@_tracker_options
def train(
    args: tuple[str, ...],
    data_dir: str | None,
    output: str | None,
    progress: bool | None,
    from_run: str | None,
    **trackers,
) -> None:
    """Train one run: reglab train [CONFIG.yaml] [key=value ...]

    Nested keys use dots (optim.lr=0.1, model.widths=[784,128,10], regularizers.0.lam=1e-3).
    """
    from .config import merge, parse_overrides
    from .tracking import switch_overrides
    from .train import run
    from .validation import load_config, validate

    path, overrides = _split_args(args)
    overrides += switch_overrides(**trackers)
    if output is not None:
        overrides.append(f"output={output}")
    if data_dir is not None:
        overrides.append(f"data.dir={data_dir}")
    if from_run is not None:
        if path is not None:
            raise UserError(f"--from {from_run}: give a run directory or a CONFIG.yaml, not both")
        cfg = validate(merge(_run_config(Path(from_run)), parse_overrides(overrides)))
    else:
        cfg = load_config(path, overrides)
    from .config import inert_settings

    for note in inert_settings(cfg):
        click.echo(f"warning: {note}", err=True)
    if progress is None:
        progress = sys.stderr.isatty() and cfg.train.progress
    res = run(cfg, progress=progress)
    if res.skipped:
        click.echo(f"already done: {res.path}")
    if res.status == "diverged":
        # Scripts tell it apart: 0 trained, 1 failed, 2 bad input, 3 diverged.
        click.echo(
            f"diverged: {res.path}: the loss became NaN or inf at step {res.summary.get('diverged_step')}; "
            "lower the learning rate or the regularizer's lam",
            err=True,
        )
        sys.exit(DIVERGED_EXIT)
    final = res.summary.get("final", {})
    shown = " ".join(
        f"{k}={final[k]:.4f}" for k in ("train_loss", "train_acc", "val_acc", "test_loss", "test_acc") if k in final
    )
    click.echo(f"{res.status}: {res.path}  {shown}")


def _run_config(run_dir: Path) -> dict:
    """The config a run directory was trained with (refused when the directory is damaged)."""
    from .results import damage
    from .store import RunDir

    rd = RunDir(run_dir)
    if not rd.config_path.is_file():
        raise UserError(f"--from {run_dir}: not a run directory (it has no config.json)")
    why = damage(rd)
    if why is not None:
        raise UserError(f"--from {run_dir}: damaged run directory: {why}")
    config: dict = rd.read_config()["config"]
    return config


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


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--jobs", "-j", type=int, default=None, help="Concurrent runs (default: the number of cores).")
@click.option(
    "--executor",
    type=click.Choice(["inline", "process", "slurm", "submitit_local"]),
    default=None,
    help="inline (one process), process (a local pool; default when jobs > 1), slurm or submitit_local (via submitit).",
)
@click.option("--name", default=None, help="Sweep name (default: the config's name, else the file name).")
@click.option("--seeds", type=int, default=None, help="Add a seed axis 0..N-1.")
@click.option(
    "--slurm",
    "slurm_opts",
    multiple=True,
    help=(
        "SLURM option KEY=VALUE, repeatable; implies --executor slurm (partition, time, cpus_per_task, mem_gb, "
        "gpus, account, qos, array_parallelism, signal_delay_s, max_requeues, job_name, setup, sbatch_args)."
    ),
)
@click.option("--data-dir", default=None, help="Dataset directory.")
@click.option("--output", "-o", default=None, help="Results root (default: the config's output, 'runs').")
@click.option("--dry-run", is_flag=True, help="Expand and validate the grid, print it, run nothing.")
@click.option(
    "--rerun-stale",
    is_flag=True,
    help="Train again the finished runs an older reglab computed (the old ones move to <root>/stale/).",
)
@click.option(
    "--vectorize",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help=(
        "Train groups of small compatible runs together with vmap (auto: small models, only those "
        "without convolutions; the plan is printed)."
    ),
)
@_tracker_options
def sweep(
    args, jobs, executor, name, seeds, slurm_opts, data_dir, output, dry_run, rerun_stale, vectorize, **trackers
) -> None:
    """Run a grid: reglab sweep CONFIG.yaml [key=a,b,c ...]

    Any value given as a list in the YAML, or as key=a,b,c here, is an axis; the sweep runs the
    product (per entry of `variants:` if the file has one). Finished runs are skipped, interrupted
    ones resume. Exit status 1 if any run failed.
    """
    from .config import check_name, name_from
    from .sweep import build_spec, expand, run_sweep
    from .sweep.executors import default_jobs
    from .tracking import switch_overrides

    path, overrides = _split_args(args)
    overrides += switch_overrides(**trackers)
    if seeds is not None:
        overrides.append("seed=" + ",".join(str(i) for i in range(seeds)) + ("," if seeds == 1 else ""))
    spec = build_spec(path, [o for o in overrides])
    if seeds == 1:
        spec["seed"] = 0
    slurm, executor = _slurm_request(spec.pop("slurm", None), slurm_opts, executor)
    if output is not None:
        spec["output"] = output
    if data_dir is not None:
        spec.setdefault("data", {})["dir"] = data_dir
    if name is not None:
        sweep_name = check_name(name, "--name")
    elif "name" in spec:
        sweep_name = check_name(spec["name"], "name")
    else:
        sweep_name = name_from(Path(path).stem) if path else "sweep"
    runs = expand(spec)
    from .config import inert_settings

    # said once, when it holds for every run (not when a sweep crosses wn_g0 with weight_norm)
    common = set.intersection(*(set(inert_settings(r.config)) for r in runs)) if runs else set()
    for note in sorted(common):
        click.echo(f"warning: {note} (in every run of this sweep)", err=True)
    if not dry_run:
        from .sweep.runner import preflight

        preflight(runs, data_dir)
    root = Path(runs[0].config.output) if runs else Path(output or "runs")
    axes = sorted({k for r in runs for k in r.axes})
    click.echo(f"sweep {sweep_name}: {len(runs)} runs under {root}" + (f", axes: {', '.join(axes)}" if axes else ""))
    if dry_run:
        for r, shown in zip(runs, _differences(runs)):
            click.echo(f"  {r.hash}  " + "  ".join(f"{k}={v}" for k, v in shown.items()))
        return
    # on SLURM, -j limits the array's concurrency only when given
    jobs = jobs or (0 if executor in ("slurm", "submitit_local") else default_jobs())
    executor = executor or ("process" if jobs > 1 and len(runs) > 1 else "inline")
    res = run_sweep(
        sweep_name,
        root,
        spec,
        runs,
        executor=executor,
        jobs=jobs,
        data_dir=data_dir,
        slurm=slurm,
        vectorize=vectorize,
        rerun_stale=rerun_stale,
    )
    for o in res.failed:
        click.echo(f"failed: {o.hash}: {o.error}", err=True)
    click.echo(f"results: reglab runs --root {root} --sweep {sweep_name}")
    if res.failed:
        sys.exit(1)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Finished trials to reach (tune.trials).")
@click.option(
    "--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes, or worker jobs."
)
@click.option(
    "--executor",
    type=click.Choice(["local", "slurm", "submitit_local"]),
    default=None,
    help="local (this process, or -j processes; the default), slurm (-j worker jobs) or submitit_local.",
)
@click.option(
    "--slurm", "slurm_opts", multiple=True, help="SLURM option KEY=VALUE as for sweep; implies --executor slurm."
)
@click.option(
    "--storage",
    default=None,
    help="SQLAlchemy URL or journal:FILE (default: sqlite ROOT/tune/STUDY.db; on SLURM ROOT/tune/STUDY.journal).",
)
@click.option("--output", "-o", default=None, help="Results root (default: the config's output, 'runs').")
@click.option("--data-dir", default=None, help="Dataset directory.")
@click.option("--show", is_flag=True, help="Print the trials and the best configuration; train nothing.")
@click.option("--plot", "plot_path", default=None, help="Write FILE.png: the metric against each searched key.")
def tune(args, trials, jobs, executor, slurm_opts, storage, output, data_dir, show, plot_path) -> None:
    """Search hyperparameters with Optuna: reglab tune CONFIG.yaml [key=value ...]

    CONFIG is a run config with a tune: block (search space, validation metric, trials,
    sampler, pruner). Each trial is an ordinary run under the results root; the study is
    stored and continued when the command is run again. Needs pip install 'reglab[tune]'.
    """
    from .tune import tune_command

    path, overrides = _split_args(args)
    if trials is not None:
        overrides.append(f"tune.trials={trials}")
    opts = {"jobs": jobs, "storage": storage, "output": output, "data_dir": data_dir}
    opts |= {"executor": executor, "slurm": slurm_opts}
    sys.exit(tune_command(path, overrides, **opts, show=show, plot=plot_path))


def _slurm_request(block: object, items: tuple[str, ...], executor: str | None) -> tuple[dict, str | None]:
    """The sweep's SLURM options (the YAML's `slurm:` block, then --slurm KEY=VALUE), checked
    now so a mistake stops before the preflight; --slurm without --executor means slurm."""
    from .errors import ConfigError
    from .sweep.slurm_options import slurm_request

    slurm = slurm_request(block, items)
    if items:
        if executor not in (None, "slurm", "submitit_local"):
            raise ConfigError("--slurm", f"needs --executor slurm (not {executor})", ["slurm", "submitit_local"])
        executor = executor or "slurm"
    return slurm, executor


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("study", type=click.Choice(["multiplicative", "energy", "autol2", "pathprox", "autol2tune"]))
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--scale",
    type=click.Choice(["quick", "cpu", "paper"]),
    default="quick",
    show_default=True,
    help="quick: this 2-core CPU in <= 15 min, 3 seeds; cpu: the largest budget a 2-core CPU finishes in "
    "<= 90 min, 5 seeds; paper: the study's own budgets (GPU or cluster).",
)
@click.option("--jobs", "-j", type=int, default=None, help="Concurrent runs (default: the number of cores).")
@click.option("--executor", type=click.Choice(["inline", "process", "slurm", "submitit_local"]), default=None)
@click.option("--data-dir", default=None, help="Dataset directory.")
@click.option("--output", "-o", default="runs", show_default=True, help="Results root.")
@click.option(
    "--vectorize",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Train groups of small compatible runs together with vmap.",
)
@click.option(
    "--publish",
    "publish_dir",
    default=None,
    help="Also write the study's page (Markdown, figures, claims and verdicts) into this folder.",
)
@click.option(
    "--no-train",
    is_flag=True,
    help="Train nothing: judge (and publish) from the runs already under the results root.",
)
@_tracker_options
def reproduce(
    study, overrides, scale, jobs, executor, data_dir, output, vectorize, publish_dir, no_train, **trackers
) -> None:
    """Rerun one of the four seed studies and judge its claims: reglab reproduce STUDY

    The presets are YAML files (src/reglab/presets/STUDY_SCALE.yaml) to copy and edit; extra
    key=value arguments override them (key=a,b adds an axis). autol2tune (quick, cpu) asks study
    3's question at an equal budget: a fixed lambda searched with reglab tune against AutoL2.
    """
    import shlex

    from .reproduce import reproduce as run_reproduction
    from .sweep.executors import default_jobs
    from .tracking import switch_overrides

    jobs = jobs or (0 if executor in ("slurm", "submitit_local") else default_jobs())  # 0: no array limit
    executor = executor or ("process" if jobs > 1 else "inline")
    # The page shows the command that trains the runs: as invoked, without the publishing options.
    argv = sys.argv[1:] if sys.argv[1:2] == ["reproduce"] else []
    shown = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--no-train" or a.startswith("--publish="):
            continue
        elif a == "--publish":
            skip = True
        else:
            shown.append(a)
    command = "reglab " + " ".join(shlex.quote(a) for a in shown) if shown else ""
    code = run_reproduction(
        study,
        scale,
        Path(output),
        jobs,
        executor,
        data_dir,
        [*overrides, *switch_overrides(**trackers)],
        vectorize=vectorize,
        publish_dir=Path(publish_dir) if publish_dir else None,
        command=command or f"reglab reproduce {study} --scale {scale}",
        train=not no_train,
    )
    sys.exit(code)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("run_dir")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--data-dir", default=None, help="Dataset directory.")
@click.option("--out", "out_dir", default=None, help="Output folder (default: RUN/analysis/landscape/).")
def landscape(run_dir, overrides, data_dir, out_dir) -> None:
    """Loss landscape around a finished run: reglab landscape RUN [key=value ...]

    Keys: dims (1|2), directions (random|pca), normalization (filter|layer|none), range=[-1,1],
    resolution, examples, split (train|val|test), seed, include_bias. RUN is a run directory.
    """
    from .landscape import landscape_for_run
    from .landscape.run_landscape import parse_landscape_overrides

    cfg = parse_landscape_overrides(list(overrides))
    out = landscape_for_run(Path(run_dir), cfg, data_dir=data_dir, out_dir=Path(out_dir) if out_dir else None)
    click.echo(f"wrote {out}")


@cli.command()
@click.argument("source", default="runs")
@click.option("--root", default=None, help="Results root when SOURCE is a sweep name (default: runs).")
@click.option("-o", "--out", "out_dir", required=True, help="Folder for index.html and its figures.")
@click.option("--title", default=None)
@click.option(
    "--vector",
    "vector_formats",
    multiple=True,
    type=click.Choice(["pdf", "svg"]),
    help="Also write every figure as figures/NAME.pdf or .svg (repeatable).",
)
@click.option(
    "--width",
    type=click.FloatRange(min=1.0, max=20.0),
    default=None,
    help="Draw the vector figures this many inches wide, text scaled with them (a paper's column: 3.3).",
)
def report(source, root, out_dir, title, vector_formats, width) -> None:
    """Write an HTML report: reglab report SWEEP_OR_RUNS -o DIR

    SOURCE is a results root (every run in it), a sweep name (with --root), or a run directory.
    """
    from .report import build_report
    from .sweep.runner import manifest_path, sweep_hashes

    if width is not None and not vector_formats:
        from .errors import ConfigError

        raise ConfigError("--width", "sets the size of the vector figures: add --vector pdf or --vector svg")
    vec = {"vector_formats": tuple(vector_formats), "width": width}

    src = Path(source)
    if root is not None or (not src.exists() and manifest_path(Path("runs"), source).exists()):
        base = Path(root or "runs")
        path = build_report(
            base, Path(out_dir), runs=sweep_hashes(base, source), title=title or f"sweep {source}", **vec
        )
    elif (src / "config.json").exists():
        path = build_report(src.parent, Path(out_dir), runs=[src.name], title=title, **vec)
    elif src.is_dir():
        path = build_report(src, Path(out_dir), title=title, **vec)
    else:
        from .errors import ConfigError

        raise ConfigError(
            "SOURCE", f"{source!r} is neither a results root, a run directory nor a sweep under runs/ (use --root)"
        )
    click.echo(f"wrote {path}")


@cli.command("list")
@click.argument("what", type=click.Choice(["models", "datasets", "regularizers", "schedules"]))
def list_names(what: str) -> None:
    """Print the registered names of models, datasets, regularizers or schedules."""
    # The registries hold different kinds of object (Registry[T] for four T); only names are read.
    names: list[str]
    if what == "models":
        from .models import MODELS

        names = MODELS.names()
    elif what == "datasets":
        from .data import DATASETS

        names = DATASETS.names()
    elif what == "regularizers":
        from .regularizers import REGULARIZERS

        names = REGULARIZERS.names()
    else:
        from .schedules import SCHEDULES

        names = SCHEDULES.names()
    for name in names:
        click.echo(name)


@cli.command()
@click.option("--data-dir", default=None, help="Dataset directory to look in.")
def data(data_dir: str | None) -> None:
    """List the datasets and where each was found, or why not."""
    from rich.console import Console
    from rich.table import Table

    from .data import data_search_path, dataset_status

    dirs = data_search_path(data_dir)
    table = Table(title=f"datasets (data directories: {', '.join(map(str, dirs))})")
    for col in ("name", "status", "where / why"):
        table.add_column(col)
    per_dir = [dataset_status(d, verify=True) for d in dirs]
    for i, st in enumerate(per_dir[0]):
        row = next((sts[i] for sts in per_dir if sts[i]["found"]), st)
        if row["damaged"]:
            table.add_row(row["name"], "damaged", f"{row['where']}: {row['why']}")
        else:
            table.add_row(row["name"], "found" if row["found"] else "missing", str(row.get("where") or row["why"]))
    Console().print(table)


@cli.command()
@click.option("--root", default="runs", show_default=True, help="Results root to read.")
@click.option("--sweep", "sweep_name", default=None, help="Only the runs of this sweep.")
@click.option("--export", "export", default=None, help="Write the table to FILE.csv or FILE.parquet.")
@click.option(
    "--all-columns", is_flag=True, help="Show every column, not only the varying config values and main metrics."
)
@click.option(
    "--by-setting",
    is_flag=True,
    help="One row per setting (runs that differ only in the seed): mean ± 95% CI over its finished runs.",
)
@click.option("--sort", "sort_by", default=None, help="Order rows by this metric (best first; see --best).")
@click.option(
    "--best",
    default=None,
    help="Name the best setting by METRIC[:max|min] (default max for accuracies, min for losses).",
)
def runs(
    root: str,
    sweep_name: str | None,
    export: str | None,
    all_columns: bool,
    by_setting: bool,
    sort_by: str | None,
    best: str | None,
) -> None:
    """Print a table of the runs under a results root."""
    import warnings

    from .report_table import print_runs_table, print_settings_table
    from .results import load_runs, provenance_notes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damaged runs are listed below, once, in plain words
        df = load_runs(root, sweep=sweep_name)
    if df.empty:
        click.echo(f"no runs under {root}")
    elif by_setting or best:
        agg = print_settings_table(df, sort_by=sort_by, best=best, show=by_setting or not best)
        if export:
            _export(agg, export)
            click.echo(f"wrote {export}")
    else:
        if export:
            _export(df, export)
            click.echo(f"wrote {export}")
        if sort_by is not None:
            from .report_table import metric_direction

            name = sort_by.partition(":")[0]
            if name not in df.columns:
                from .errors import ConfigError

                raise ConfigError("--sort", f"no run has {name!r}")
            df = df.sort_values(name, ascending=metric_direction(sort_by, "--sort") == "min", na_position="last")
        else:  # settings in the report's order, seeds in order within each
            from .results import order_by_config, varying_columns

            cols = [c for c in varying_columns(df) if c != "seed"] + (["seed"] if "seed" in df.columns else [])
            df = order_by_config(df, cols)
        print_runs_table(df, all_columns=all_columns)
    for d in df.attrs.get("damaged", []):
        click.echo(f"damaged run {d['path']}: {d['why']}; left out", err=True)
    for note in provenance_notes(df):
        click.echo(f"note: {note}", err=True)


@cli.command()
@click.option("--root", default="runs", show_default=True, help="Results root (or one run directory).")
@click.option("--sweep", "sweep_name", default=None, help="Only the runs of this sweep.")
@click.option("--snapshots", is_flag=True, help="Also remove weight snapshots (the trajectory of PCA landscapes).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed and how much it frees; remove nothing.")
def prune(root: str, sweep_name: str | None, snapshots: bool, dry_run: bool) -> None:
    """Remove what finished runs no longer need: resume points and best weights (and, with
    --snapshots, weight snapshots). Final weights, logs and analysis stay; unfinished runs and
    runs another process holds are not touched."""
    import warnings

    from .prune import prune as prune_runs
    from .results import _selected

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dirs, _ = _selected(root, sweep_name, None)
    res = prune_runs(dirs, snapshots=snapshots, dry_run=dry_run)
    verb = "would free" if dry_run else "freed"
    click.echo(
        f"{verb} {res.bytes / 2**20:.1f} MiB: {len(res.files)} files of {res.runs} finished runs "
        f"(of {len(dirs)} under {root}); kept: final weights, logs, analysis" + ("" if snapshots else ", snapshots")
    )
    for path in res.busy:
        click.echo(f"skipped {path}: another process holds it", err=True)


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


def _differences(runs: list) -> list[dict]:
    """For each planned run, every config value that is not the same in all of them (axes and
    what variants set alike), so no two lines of a dry run read the same."""
    from .config import canonical_dict
    from .results import _flatten

    flat = [_flatten(canonical_dict(r.config)) for r in runs]
    keys = sorted({k for f in flat for k in f}, key=lambda k: (k != "seed", k))
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    return [{k: f.get(k, "-") for k in varying} for f in flat]


def main() -> None:
    _working_directory_importable()
    cli(prog_name="reglab")


def _working_directory_importable() -> None:
    """Let configs name modules in the working directory (model.name: "nets:make_net"), as
    `python -m` does; the console script would otherwise see only its own bin directory. It goes
    last on sys.path, so a stray file there (yaml.py) never shadows a module reglab imports.
    Spawned sweep workers inherit sys.path, so they find the same modules."""
    try:
        cwd = os.getcwd()
    except OSError:  # the directory was removed: nothing to add
        return
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


if __name__ == "__main__":
    main()
