"""Run a sweep: expand, record the manifest, skip what is done, execute, show progress.

The manifest ``<root>/sweeps/<name>.json`` lists the sweep's runs (hash and axis values); it is
written before any run starts, so `reglab runs --sweep NAME` and reports can find the runs of an
interrupted sweep. Runs are content-addressed, so running the same sweep again skips every run
that has a DONE marker and resumes the others from their last checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from .. import provenance
from ..errors import ConfigError
from ..store import RunDir, RunLock, atomic_write_json
from .executors import EXECUTORS, Executor, InlineExecutor, Outcome, ProcessExecutor, execute_run
from .grid import PlannedRun
from .progress import SweepDisplay
from .slurm_options import SlurmOptions, check_with_cluster, slurm_options


@dataclass
class SweepResult:
    name: str
    root: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.status == "failed"]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes.values())


def manifest_path(root: Path, name: str) -> Path:
    from ..config import check_name

    return Path(root) / "sweeps" / f"{check_name(name, 'sweep name')}.json"


def write_manifest(root: Path, name: str, spec: dict, runs: list[PlannedRun]) -> Path:
    path = manifest_path(root, name)
    record = {
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": spec,
        "axes": sorted({k for r in runs for k in r.axes}),
        "runs": [{"hash": r.hash, "axes": r.axes} for r in runs],
    }
    atomic_write_json(path, record)
    return path


def read_manifest(root: Path, name: str) -> dict:
    path = manifest_path(root, name)
    if not path.exists():
        known = sorted(p.stem for p in (Path(root) / "sweeps").glob("*.json"))
        raise ConfigError("--sweep", f"no sweep named {name!r} under {root}", known or ["(none yet)"])
    return json.loads(path.read_text())


def sweep_hashes(root: Path, name: str) -> list[str]:
    return [r["hash"] for r in read_manifest(root, name)["runs"]]


def preflight(runs: list[PlannedRun], data_dir: str | None = None) -> None:
    """Build each distinct setting once (data, model, regularizers, schedules) on the CPU, so a
    missing dataset or an impossible combination stops the sweep before any run starts. Seeds
    are the only thing that may differ within a setting; datasets are read once (cached). A
    tracker whose package is missing (reglab.tracking) stops it too."""
    from ..build import prepare
    from ..config import canonical_dict
    from ..tracking import require_packages

    seen = set()
    for r in runs:
        require_packages(r.config)
        d = canonical_dict(r.config)
        d.pop("seed", None)
        key = json.dumps(d, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        prepare(r.config.model_copy(update={"device": "cpu"}), data_dir)


def run_sweep(
    name: str,
    root: Path,
    spec: dict,
    runs: list[PlannedRun],
    executor: str = "inline",
    jobs: int = 1,
    data_dir: str | None = None,
    slurm: dict | None = None,
    live: bool = True,
    vectorize: str = "off",
    rerun_stale: bool = False,
) -> SweepResult:
    """Run every planned run not yet DONE. `vectorize`: "off" trains runs one by one; "auto"
    trains groups of small compatible runs (same model, data and batch size; differing in seed,
    lr or lambda) together with torch.func.vmap and says which runs fall back and why; "on" also
    groups what auto leaves out only because it would not pay (large models, convolutions on a
    CPU). Groups train in this process; the other runs go to
    the executor. Finished runs computed by an older reglab (see reglab.provenance) are reused
    with a note, or with `rerun_stale` moved to <root>/stale/ and trained again."""
    root = Path(root)
    slurm_opts = None
    if executor in ("slurm", "submitit_local"):
        slurm_opts = _cluster_options(slurm, executor, name)
        if vectorize == "on":
            print(f"note: --vectorize on is ignored with --executor {executor}: each run is one job", flush=True)
        vectorize = "off"  # groups would train in this process, not on the cluster
    write_manifest(root, name, spec, runs)
    result = SweepResult(name, root)
    todo = _to_train(runs, root, result, rerun_stale)
    groups: list[list[PlannedRun]] = []
    if vectorize != "off" and todo:
        from ..vectorized import describe_plan, plan_groups

        groups, singles = plan_groups(todo, auto=vectorize == "auto")
        for line in describe_plan(groups, singles):
            print(line, flush=True)
        todo = [r for r, _ in singles]
    display = SweepDisplay(
        name,
        total=len(runs),
        already_done=len(runs) - len(todo) - sum(map(len, groups)),
        live=live,
        workers=jobs or 1,
    )
    busy: list[dict] = []
    configs = [r.config.model_copy(update={"output": str(root)}).model_dump(mode="json") for r in todo]
    ex: Executor | None = None
    try:
        _train_groups(groups, len(todo), root, data_dir, display, result, busy)
        ex = make_executor(executor, jobs, data_dir, root, slurm_opts, name)
        ex.submit(configs)
        display.start(running=ex.running(), remaining=len(todo))
        for out in ex.outcomes():
            if out is not None:
                if out.status == "busy":
                    busy.append(next(c for c in configs if _hash_of(c) == out.hash))
                elif out.status == "interrupted":
                    raise KeyboardInterrupt  # a worker was interrupted: the whole sweep stops
                else:
                    result.outcomes[out.hash] = out
                    display.finished(out)
            display.refresh(running=ex.running())
    except KeyboardInterrupt:
        if ex is not None:
            ex.interrupt()
        display.stop()
        raise _interrupted(name, result, len(runs)) from None
    finally:
        if ex is not None:
            ex.close()
    # Runs another process was training: wait for its lock, then take over if it did not finish.
    for cfg in busy:
        h = _hash_of(cfg)
        with RunLock(root / h) as lock:
            lock.acquire(blocking=True)
        out = Outcome(**execute_run(cfg, data_dir))
        result.outcomes[h] = out
        display.finished(out)
    display.stop()
    return result


def make_executor(
    kind: str,
    jobs: int,
    data_dir: str | None,
    root: Path,
    slurm: SlurmOptions | dict | None = None,
    sweep_name: str = "sweep",
) -> Executor:
    """The executor named `kind`. For SLURM, `jobs` (when > 0) is the array's concurrency
    limit unless the options set `array_parallelism`."""
    if kind == "inline":
        return InlineExecutor(data_dir)
    if kind == "process":
        return ProcessExecutor(jobs, data_dir)
    if kind in ("slurm", "submitit_local"):
        opts = slurm if isinstance(slurm, SlurmOptions) else slurm_options(slurm)
        if opts.array_parallelism is None and jobs > 0:
            opts = replace(opts, array_parallelism=jobs)
        from .slurm import SubmititExecutor

        return SubmititExecutor(root / ".submitit", data_dir, kind == "submitit_local", opts, sweep_name)
    raise ConfigError("--executor", f"unknown executor {kind!r}", EXECUTORS)


def _cluster_options(slurm: dict | None, executor: str, name: str) -> SlurmOptions:
    """The sweep's SLURM options, checked before anything is written: their names and values,
    then (for a real cluster) whether the cluster would accept the job."""
    import importlib.util

    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("--executor", f"{executor} needs submitit: pip install 'reglab[slurm]'", EXECUTORS[:2])
    opts = slurm_options(slurm)
    if executor == "slurm":
        check_with_cluster(opts, name)
    return opts


def _to_train(runs: list[PlannedRun], root: Path, result: SweepResult, rerun_stale: bool) -> list[PlannedRun]:
    """The runs to train: all but the finished ones (recorded as skipped), and with rerun_stale
    also the finished runs an older reglab computed (set aside first); says what it did with those."""
    todo, stale = [], 0
    for r in runs:
        rd = RunDir(root / r.hash)
        if rd.done and provenance.is_stale(rd.read_summary()):
            stale += 1
            if rerun_stale:
                _set_aside(rd)
                todo.append(r)
                continue
        if rd.done:
            result.outcomes[r.hash] = Outcome(r.hash, "skipped")
        else:
            todo.append(r)
    if stale:
        what = "set aside under stale/ and trained again" if rerun_stale else "reused; --rerun-stale recomputes them"
        print(
            f"{stale} finished run(s) were computed by an older reglab (compute version < "
            f"{provenance.COMPUTE_VERSION}): {what}",
            flush=True,
        )
    return todo


def _set_aside(rd: RunDir) -> None:
    """Move a stale run directory to <root>/stale/<hash>-v<compute version>/ (kept, not listed)."""
    with RunLock(rd.path) as lock:
        lock.acquire(blocking=True)
        version = provenance.compute_version(rd.read_summary())
        target = rd.path.parent / "stale" / f"{rd.path.name}-v{version}"
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        rd.path.rename(target)


def _train_groups(
    groups: list[list[PlannedRun]],
    singles: int,
    root: Path,
    data_dir: str | None,
    display: SweepDisplay,
    result: SweepResult,
    busy: list[dict],
) -> None:
    """Train the vectorized groups in this process; runs another process holds go to `busy`."""
    from ..vectorized import train_group

    for g in groups:
        display.start(running=len(g), remaining=singles + sum(map(len, groups)))
        for o in train_group(g, root, data_dir):
            out = Outcome(**o)
            if out.status == "busy":
                cfg = next(r for r in g if r.hash == out.hash).config
                busy.append(cfg.model_copy(update={"output": str(root)}).model_dump(mode="json"))
                continue
            result.outcomes[out.hash] = out
            display.finished(out)


def _interrupted(name: str, result: SweepResult, total: int):
    from ..errors import Interrupted

    done = sum(o.status in ("done", "diverged", "skipped") for o in result.outcomes.values())
    return Interrupted(
        f"interrupted: sweep {name} stopped with {done} of {total} runs finished; unfinished runs keep "
        "their last checkpoint. Rerun the same command to resume them"
    )


def _hash_of(cfg_json: dict) -> str:
    from ..config import config_hash
    from ..validation import validate

    return config_hash(validate(cfg_json))


__all__ = ["SweepResult", "preflight", "read_manifest", "run_sweep", "sweep_hashes"]
