"""What a sweep may ask of a SLURM cluster (`--slurm KEY=VALUE`, or a sweep YAML's `slurm:`
block), checked before anything is submitted or written.

Two checks, both ending in one line that names the field (`ConfigError`, exit status 2):
`slurm_options` checks names, types and ranges without the cluster (also for `--dry-run`);
`check_with_cluster` asks the cluster itself, with `sbatch --test-only` and the very options
the array job will carry, whether it would accept the job (partition, account, QOS, memory,
GPUs, constraints). A mistake found there costs a sweep nothing: no manifest, no run directory,
no job.

Each array task trains one run with one process, so per task and per job are the same thing:
`cpus_per_task`, `mem_gb` and `gpus` are what one run gets.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

OPTIONS: dict[str, str] = {
    "partition": "partition to submit to (default: the cluster's default partition)",
    "time": "time limit of each run's job: minutes, or [D-]HH:MM[:SS] (default 60)",
    "cpus_per_task": "CPUs per run; also its number of torch threads (default 1)",
    "mem_gb": "memory per run, in GB (default: the partition's default)",
    "gpus": "GPUs per run (default 0)",
    "account": "account to charge",
    "qos": "quality of service",
    "array_parallelism": "most runs of the array running at once (default: -j when given, else no limit)",
    "signal_delay_s": "seconds before the time limit when a job is told to requeue itself (90, or half the limit)",
    "max_requeues": "times one run's job may requeue itself at its time limit (default 3)",
    "job_name": "name of the array job (default: reglab-<sweep name>)",
    "setup": "shell lines run before each job's python, e.g. [module load cuda]",
    "sbatch_args": "extra sbatch options, long form: [--constraint=a100, --exclusive]",
}
"""Every accepted key and what it means (the README's table says the same)."""

ALIASES = {"gpus_per_node": "gpus"}
"""Names accepted for compatibility with reglab < 0.2."""

OWNED_FLAGS = {
    "array": None,
    "output": None,
    "error": None,
    "signal": "signal_delay_s",
    "open-mode": None,
    "wrap": None,
    "partition": "partition",
    "time": "time",
    "cpus-per-task": "cpus_per_task",
    "mem": "mem_gb",
    "gpus-per-node": "gpus",
    "account": "account",
    "qos": "qos",
    "job-name": "job_name",
    "nodes": None,
    "ntasks-per-node": None,
}
"""sbatch flags that reglab and submitit set themselves (None), or that have an option here."""

_FLAG_SHORT = {"p": "partition", "t": "time", "c": "cpus-per-task", "A": "account", "q": "qos", "J": "job-name"}


@dataclass(frozen=True)
class SlurmOptions:
    """Checked options; `submitit_parameters()` is what the SLURM executor is given."""

    time_min: int = 60
    partition: str | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    gpus: int | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int | None = None
    signal_delay_s: int | None = None
    max_requeues: int = 3
    job_name: str | None = None
    setup: tuple[str, ...] = ()
    sbatch_args: dict[str, Any] = field(default_factory=dict)

    @property
    def warning_s(self) -> int:
        """Seconds before the time limit that the job gets USR2: 90 as submitit, at most half
        the limit unless given."""
        if self.signal_delay_s is not None:
            return self.signal_delay_s
        return min(90, self.time_min * 30)

    @property
    def threads(self) -> int:
        """torch threads of each run: the CPUs its job was given."""
        return self.cpus_per_task or 1

    def submitit_parameters(self, sweep_name: str = "sweep") -> dict[str, Any]:
        """Keyword arguments of submitit's SlurmExecutor.update_parameters."""
        params: dict[str, Any] = {
            "time": self.time_min,
            "signal_delay_s": self.warning_s,
            "job_name": self.job_name or f"reglab-{sweep_name}",
        }
        named = {
            "partition": self.partition,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
            "gpus_per_node": self.gpus or None,
            "account": self.account,
            "qos": self.qos,
            "array_parallelism": self.array_parallelism,
        }
        params.update({k: v for k, v in named.items() if v is not None})
        if "mem_gb" in params:  # submitit's SlurmExecutor takes `mem` (its AutoExecutor says mem_gb)
            gb = params.pop("mem_gb")
            params["mem"] = f"{int(gb)}GB" if gb == int(gb) else f"{math.ceil(gb * 1024)}MB"
        if self.setup:
            params["setup"] = list(self.setup)
        if self.sbatch_args:
            params["additional_parameters"] = dict(self.sbatch_args)
        return params

    def sbatch_flags(self, sweep_name: str = "sweep") -> list[str]:
        """The same request as sbatch command-line flags (for `sbatch --test-only`)."""
        p = self.submitit_parameters(sweep_name)
        flags = [f"--time={p['time']}", f"--job-name={p['job_name']}"]
        for key in ("partition", "cpus_per_task", "mem", "gpus_per_node", "account", "qos"):
            if key in p:
                flags.append(f"--{key.replace('_', '-')}={p[key]}")
        for key, value in p.get("additional_parameters", {}).items():
            flags.append(f"--{key}" if value is True else f"--{key}={value}")
        return flags


def slurm_options(raw: dict[str, Any] | None) -> SlurmOptions:
    """Check a `slurm:` block (or the merged `--slurm` options) and return it typed."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError("slurm", f"must be a mapping of options (got {raw!r})", sorted(OPTIONS))
    raw = dict(raw or {})
    for old, new in ALIASES.items():
        if old in raw:
            if new in raw:
                raise ConfigError(f"slurm.{old}", f"give {new} only (it is the same option)")
            raw[new] = raw.pop(old)
    for key in raw:
        if key not in OPTIONS:
            why = "a run uses one task on one node" if key in ("nodes", "tasks_per_node", "ntasks") else "unknown key"
            raise ConfigError(f"slurm.{key}", why, sorted(OPTIONS))
    out = {FIELD.get(key, key): _PARSE[key](value) for key, value in raw.items()}
    opts = SlurmOptions(**out)
    if opts.warning_s >= opts.time_min * 60:
        raise ConfigError(
            "slurm.signal_delay_s",
            f"{opts.signal_delay_s} s is not before the time limit ({opts.time_min} min): give fewer seconds",
        )
    return opts


def slurm_request(block: object, items: Iterable[str] = ()) -> dict[str, Any]:
    """A config's `slurm:` block with the `--slurm KEY=VALUE` items laid over it, checked
    (`slurm_options`) but kept raw: what `reglab sweep` and `reglab tune` were asked for."""
    from ..config import parse_value

    if block is not None and not isinstance(block, dict):
        raise ConfigError("slurm", f"must be a mapping of options (got {block!r})", sorted(OPTIONS))
    raw = dict(block or {})
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ConfigError("--slurm", f"{item!r}: expected KEY=VALUE")
        raw[k.strip()] = parse_value(v)
    slurm_options(raw)
    return raw


def check_with_cluster(opts: SlurmOptions, sweep_name: str = "sweep") -> None:
    """Ask the cluster whether it would run one job of this sweep (`sbatch --test-only`, which
    submits nothing), and turn a refusal into a ConfigError naming the option at fault."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError(
            "--executor", "slurm: no sbatch on PATH; run the sweep on a machine of the cluster", ["inline", "process"]
        )
    cmd = [sbatch, "--test-only", *opts.sbatch_flags(sweep_name), "--wrap=true"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ConfigError("--executor", "slurm: sbatch --test-only did not answer within 60 s") from None
    if p.returncode == 0:
        return
    lines = [line.strip() for line in (p.stderr or p.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sbatch: error:")]  # says which value, when it does
    message = (errors or lines or [f"sbatch --test-only exited with status {p.returncode}"])[0 if errors else -1]
    message = re.sub(r"^(sbatch: error: |allocation failure: )", "", message)
    field_, allowed = _blame(message, opts)
    raise ConfigError(field_, f"the cluster refuses the job: {message}", allowed)


def _blame(message: str, opts: SlurmOptions) -> tuple[str, list[str] | None]:
    """The option an sbatch refusal is about (and, for a partition, the partitions there are)."""
    low = message.lower()
    if "partition" in low and "account" not in low:
        return "slurm.partition", _partitions()
    for word, key in (("account", "account"), ("qos", "qos"), ("time limit", "time"), ("gres", "gpus")):
        if word in low:
            return f"slurm.{key}", None
    if "memory" in low or "node configuration" in low:
        asked = [k for k in ("mem_gb", "cpus_per_task", "gpus") if getattr(opts, k)]
        return "slurm." + ("/".join(asked) if asked else "sbatch_args"), None
    return "slurm", None


def _partitions() -> list[str] | None:
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return None
    try:
        p = subprocess.run([sinfo, "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    names = sorted({line.strip() for line in p.stdout.splitlines() if line.strip()})
    return names or None


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def _minutes(value: Any) -> int:
    """A time limit in whole minutes (rounded up): minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]."""
    if isinstance(value, bool):
        raise ConfigError("slurm.time", f"must be minutes or [D-]HH:MM[:SS] (got {value!r})")
    if isinstance(value, int | float):
        if value <= 0:
            raise ConfigError("slurm.time", f"must be > 0 minutes (got {value!r})")
        return math.ceil(value)
    m = _TIME.match(str(value).strip())
    if m is None:
        raise ConfigError("slurm.time", f"must be minutes or [D-]HH:MM[:SS] (got {value!r})")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = (a or 0) * 3600 + (b or 0) * 60 + c
    elif b is not None:  # MM:SS, as sbatch reads it
        seconds = (a or 0) * 60 + b
    else:
        seconds = (a or 0) * 60
    if seconds <= 0:
        raise ConfigError("slurm.time", f"must be > 0 (got {value!r})")
    return math.ceil(seconds / 60)


def _word(key: str, value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip() or " " in str(value):
        raise ConfigError(f"slurm.{key}", f"must be one name without spaces (got {value!r})")
    return str(value)


def _integer(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"slurm.{key}", f"must be an integer >= {low} (got {value!r})")
    return value


def _strings(key: str, value: Any, split: bool) -> list[str]:
    """A list of strings, or one string (split like a shell line when `split`)."""
    if isinstance(value, str):
        return shlex.split(value) if split else [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"slurm.{key}", f"must be a list of strings (got {value!r})")


def _sbatch_args(value: Any) -> dict[str, Any]:
    """["--constraint=a100", "--exclusive"] -> {"constraint": "a100", "exclusive": True}."""
    out: dict[str, Any] = {}
    for arg in _strings("sbatch_args", value, split=True):
        if not arg.startswith("--") or len(arg) < 3:
            short = _FLAG_SHORT.get(arg.lstrip("-")[:1]) if arg.startswith("-") else None
            hint = f" (--{short}=...)" if short else ""
            raise ConfigError("slurm.sbatch_args", f"{arg!r}: give long options, --name=value{hint}")
        name, eq, v = arg[2:].partition("=")
        if name in OWNED_FLAGS:
            own = OWNED_FLAGS[name]
            why = f"use the option slurm.{own}" if own else "reglab sets it itself"
            raise ConfigError("slurm.sbatch_args", f"--{name}: {why}")
        out[name] = v if eq else True
    return out


def _mem_gb(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError("slurm.mem_gb", f"must be a number of GB > 0 (got {value!r})")
    return float(value)


_PARSE: dict[str, Any] = {
    "time": _minutes,
    "partition": lambda v: _word("partition", v),
    "account": lambda v: _word("account", v),
    "qos": lambda v: _word("qos", v),
    "job_name": lambda v: _word("job_name", v),
    "cpus_per_task": lambda v: _integer("cpus_per_task", v, 1),
    "gpus": lambda v: _integer("gpus", v, 0),
    "array_parallelism": lambda v: _integer("array_parallelism", v, 1),
    "max_requeues": lambda v: _integer("max_requeues", v, 0),
    "signal_delay_s": lambda v: _integer("signal_delay_s", v, 0),
    "mem_gb": _mem_gb,
    "setup": lambda v: tuple(_strings("setup", v, split=False)),
    "sbatch_args": _sbatch_args,
}
"""How each option's value is checked and converted (each raises a one-line ConfigError)."""

FIELD = {"time": "time_min"}
"""SlurmOptions attributes whose name differs from the option's."""


__all__ = ["OPTIONS", "SlurmOptions", "check_with_cluster", "slurm_options", "slurm_request"]
