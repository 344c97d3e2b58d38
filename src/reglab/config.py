"""Typed experiment configs: YAML file + key=value overrides, validated, hashed.

A config is the whole statement of one run. Its canonical form (sorted keys, defaults filled
in, fields that do not change the numbers removed) is hashed; the hash names the run directory,
so the same experiment always lands in the same place and a finished one is never redone.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, pydantic_message

# Run and sweep names become file names under the results root (sweeps/<name>.json): a name is
# one path component that cannot climb out of the root.
NAME_RULE = "1-128 letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_name(value: object, field: str = "name") -> str:
    """`value` if it is a valid run or sweep name, else a ConfigError naming `field`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(field, f"{value!r} is not a valid name: use {NAME_RULE}")
    return value


def name_from(text: str) -> str:
    """A valid name made from free text (a file name): other characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-._+")[:128]
    return name or "sweep"


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default. Numbers must
    be finite: inf and nan (also as 1e400) are refused wherever a number is asked for."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SyntheticConfig(_Strict):
    """A seeded teacher network labels Gaussian inputs (needs no files)."""

    n_train: int = Field(2048, ge=1)
    n_test: int = Field(1024, ge=1)
    dim: int = Field(20, ge=1)
    classes: int = Field(4, ge=2)
    teacher_width: int = Field(32, ge=1)
    seed: int = 0

    MAX_VALUES: ClassVar[int] = 2**31
    """At most this many input values (8 GiB of float32), checked before they are generated."""

    @model_validator(mode="after")
    def _bounded(self) -> SyntheticConfig:
        values = (self.n_train + self.n_test) * self.dim
        if values > self.MAX_VALUES:
            raise ValueError(
                f"data.synthetic.n_train: (n_train + n_test) x dim = {values:,} input values, about "
                f"{values * 4 / 2**30:,.1f} GiB; at most {self.MAX_VALUES:,} ({self.MAX_VALUES * 4 // 2**30} GiB)"
            )
        return self


class DataConfig(_Strict):
    dataset: str = "digits"
    dir: str | None = None
    """Data directory; None means --data-dir, then $REGLAB_DATA, then the user cache."""
    binary_pair: tuple[int, int] | None = None
    """Keep two classes; the first becomes target -1, the second +1 (one output, MSE)."""
    per_class: int | None = Field(None, ge=1)
    """Training subset: the first `per_class` images of each class in a seeded permutation."""
    subset_seed: int = 42
    rest_as_validation: bool = False
    """With per_class: every training image not in the subset forms the validation set."""
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    val_size: int | None = Field(None, ge=1)
    split_seed: int = 42
    label_noise: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of training labels flipped (after the split; never validation or test)."""
    noise_seed: int | None = None
    """Seed of the label flips; None uses the run seed."""
    normalize: Literal["dataset", "none", "custom"] = "dataset"
    mean: list[float] | None = None
    std: list[float] | None = None
    augment: bool = False
    """Random crop (padding 4) and horizontal flip, batched on the device (images only)."""
    train_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.val_size is not None and self.val_fraction > 0:
            raise ValueError("data.val_size: give data.val_fraction or data.val_size, not both")
        if self.normalize == "custom" and (self.mean is None or self.std is None):
            raise ValueError("data.mean: normalize=custom needs data.mean and data.std")
        if self.rest_as_validation and self.per_class is None:
            raise ValueError("data.rest_as_validation: needs data.per_class")
        return self


class ModelConfig(_Strict):
    name: str = "mlp"
    widths: list[int] | None = None
    """MLPs: every layer width, input and output included, e.g. [784, 128, 128, 10]."""
    width_multiplier: float = Field(1.0, gt=0)
    """CNNs: multiply every conv's channels and the hidden FC widths (rounded, at least 1);
    quick presets use it to shrink the studies' networks. MLPs take explicit widths instead."""
    bias: bool = True
    batch_norm: bool = False
    activation: Literal["relu", "gelu", "tanh", "leaky_relu", "identity"] = "relu"
    init: Literal["default", "kaiming", "he_normal_conv"] = "default"
    init_scale: float = Field(1.0, gt=0)
    """Multiply every parameter by this after init (study 1's init scaling)."""
    init_norm: float | None = Field(None, gt=0)
    """Rescale each weight layer to Frobenius norm init_norm after init."""
    weight_norm: bool | Literal["rho"] = False
    """true: PaperWN, W = g V/||V||_F with one scalar g per weight layer; rho: Rho-WN, unit-norm
    layers W = V/||V||_F and one global scale rho on the output."""
    wn_g0: float | None = None
    """Initial scale: PaperWN's g (None: the layer's ||W||_F); Rho-WN's rho starts at g0^L (None:
    the product of the layers' ||W||_F)."""


class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("optim.nesterov: needs optim.name=sgd and optim.momentum > 0")
        return self


class LRScheduleConfig(_Strict):
    name: Literal["constant", "cosine", "multistep", "exponential"] = "constant"
    eta_min: float = Field(0.0, ge=0)
    milestones: list[int] = Field(default_factory=list)
    """multistep: epochs (or iterations when unit=iteration) where lr is multiplied by gamma."""
    milestone_fractions: list[float] = Field(default_factory=list)
    """multistep: milestones as fractions of the budget, each in (0, 1) (the WRN schedule:
    [0.3, 0.6, 0.9]), so one config serves every budget; instead of `milestones`."""
    gamma: float = Field(0.1, gt=0)
    unit: Literal["epoch", "iteration"] = "epoch"
    """How often the schedule steps."""

    @model_validator(mode="after")
    def _one_kind_of_milestones(self):
        if self.milestone_fractions and self.milestones:
            raise ValueError("give milestones or milestone_fractions, not both")
        bad = [f for f in self.milestone_fractions if not 0 < f < 1]
        if bad:
            raise ValueError(f"milestone_fractions must lie strictly between 0 and 1, got {bad[0]}")
        if sorted(self.milestone_fractions) != self.milestone_fractions:
            raise ValueError("milestone_fractions must be increasing")
        return self


class EarlyStoppingConfig(_Strict):
    patience: int | None = Field(None, ge=1)
    """Evaluations without improvement before stopping; None disables early stopping."""
    metric: Literal["val_loss", "val_acc"] = "val_loss"
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True


class AbortConfig(_Strict):
    """Study 1's early-abort rules, checked at each evaluation: stop a run that is not learning.
    The run ends like an early stop (status done, `stop_reason` in its summary), with its
    current weights."""

    split: Literal["train", "val", "test"] = "test"
    """The split whose accuracy the rules read (study 1 read test)."""
    zero_accuracy: bool = True
    """Stop when the accuracy is exactly 0."""
    below: float | None = Field(None, gt=0, le=1)
    """Stop when the accuracy is below this fraction ... """
    after_epochs: float | None = Field(None, ge=0)
    """... once at least this many epochs have passed (study 1: below 0.6 after 50)."""

    @model_validator(mode="after")
    def _below_needs_a_time(self):
        if (self.below is None) != (self.after_epochs is None):
            raise ValueError("below and after_epochs go together (stop when below X after N epochs)")
        return self


class TrainConfig(_Strict):
    batch_size: int = Field(128, ge=1)
    epochs: float | None = Field(None, gt=0)
    iterations: int | None = Field(None, ge=1)
    loss: Literal["auto", "cross_entropy", "mse"] = "auto"
    """auto: MSE on +-1 targets for binary tasks, cross-entropy otherwise."""
    eval_every: int = Field(1, ge=1)
    eval_unit: Literal["epoch", "iteration"] = "epoch"
    eval_at_start: bool = True
    """Evaluate the initial model (step 0) too, so curves start at initialization."""
    eval_batch_size: int = Field(4096, ge=1)
    eval_train_limit: int | None = Field(None, ge=1)
    """Evaluate training metrics on the first N training examples only (None: all)."""
    log_every: int = Field(1, ge=1)
    """Per-step metrics are written every log_every steps."""
    checkpoint_every: int = Field(1, ge=1)
    """Write the resume checkpoint every this many evaluations."""
    keep_checkpoints: Literal["all", "final"] = "all"
    """final: once the run is finished, delete its resume point and best weights (they are never
    read again; `reglab prune` does the same afterwards), keeping the final weights."""
    snapshot_every: int | None = Field(None, ge=1)
    """Keep the weights every this many evaluations (checkpoints/snap_<step>.pt): the trajectory
    that PCA landscape directions are computed from."""
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    abort: AbortConfig | None = None
    """Early-abort rules (study 1); None: none."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: the forward pass and the data loss run under torch.autocast(bfloat16); the master
    weights, optimizer state, penalties and evaluations stay float32. Not with penalties that use
    the training batch (gradient_norm, jacobian_nuclear); trains one by one, not in groups."""
    channels_last: bool = False
    """Convolutional models only: weights and input batches in channels-last memory format (the
    layout GPU convolution kernels prefer); the same numbers within float tolerance."""
    deterministic: bool = False
    """While the run trains: torch.use_deterministic_algorithms(True), cuDNN deterministic without
    benchmarking, CUBLAS_WORKSPACE_CONFIG on CUDA; recorded in the run's trained_by."""
    progress: bool = True

    @model_validator(mode="after")
    def _budget(self) -> TrainConfig:
        if self.epochs is not None and self.iterations is not None:
            raise ValueError("train.iterations: give train.epochs or train.iterations, not both")
        if self.epochs is None and self.iterations is None:
            self.epochs = 10
        return self


class ScheduleConfig(_Strict):
    """A lambda schedule; extra keys are the schedule's own options, checked by its class."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str = "constant"


def _weight_role_only() -> list[Literal["weight", "bias", "norm"]]:
    return ["weight"]


class RegularizerConfig(_Strict):
    """One regularizer: its name, strength, lambda schedule and its own options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str
    lam: float = Field(0.0, ge=0)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    roles: list[Literal["weight", "bias", "norm"]] = Field(default_factory=_weight_role_only)
    """Which parameters the regularizer acts on (where it acts on parameters at all)."""


class LandscapeConfig(_Strict):
    """A loss landscape around the final weights (see reglab.landscape)."""

    dims: Literal[1, 2] = 2
    directions: Literal["random", "pca"] = "random"
    """random: seeded Gaussian directions; pca: top principal components of the run's snapshots."""
    normalization: Literal["filter", "layer", "none"] = "filter"
    """filter: Li et al. 2018 (each filter/row scaled to its weight filter's norm); layer: per tensor."""
    range: tuple[float, float] = (-1.0, 1.0)
    resolution: int = Field(21, ge=2)
    examples: int = Field(2048, ge=1)
    """Evaluation data budget per grid point (the first N examples of the split)."""
    split: Literal["train", "val", "test"] = "train"
    seed: int = 0
    include_bias: bool = False
    """Perturb biases and normalization parameters too (excluded by default)."""

    # Each grid point is one evaluation of the network on `examples` examples, and the grids hold
    # 17 bytes a point (loss, accuracy, done mask): checked before anything is allocated.
    MAX_POINTS: ClassVar[int] = 1_000_000

    @model_validator(mode="after")
    def _bounded(self) -> LandscapeConfig:
        points = self.resolution**self.dims
        if points > self.MAX_POINTS:
            largest = round(self.MAX_POINTS ** (1 / self.dims))
            gib = points * 17 / 2**30
            raise ValueError(
                f"analysis.landscape.resolution: {self.resolution} in {self.dims}-D is {points:,} grid points, "
                f"about {gib:,.1f} GiB for the grids alone and as many evaluations of the network; at most "
                f"{self.MAX_POINTS:,} points (resolution <= {largest} in {self.dims}-D)"
            )
        return self


class MonitorConfig(_Strict):
    """A registered penalty measured at every evaluation without entering the loss (its own
    options beside the name, as for a regularizer; lam and schedules do not apply)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str
    roles: list[Literal["weight", "bias", "norm"]] = Field(default_factory=_weight_role_only)


class AnalysisConfig(_Strict):
    """What is measured on the trained network at the end of a run (and during it)."""

    margins: bool = True
    hidden_margins: bool = False
    """Linearized hidden-layer margins of Jiang et al. 2019 (one backward pass per layer)."""
    margin_limit: int | None = Field(None, ge=1)
    """At most this many examples per split for margins (None: all)."""
    spectra: bool = True
    spectra_every: int | None = Field(None, ge=1)
    """Also record ranks and spectra every this many evaluations during training."""
    sparsity: bool = True
    active_threshold: float = Field(1e-8, ge=0)
    landscape: LandscapeConfig | None = None
    monitors: list[MonitorConfig] = Field(default_factory=list)
    """Penalties recorded at each evaluation as monitor.NAME[.item] without entering the loss, so
    a baseline gets the same curves as a regularized run; stateful ones (path_energy) follow
    every step. A plain name stands for {name: NAME} with default options."""

    @field_validator("monitors", mode="before")
    @classmethod
    def _names_are_monitors(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": x} if isinstance(x, str) else x for x in v]
        return v


class WandbConfig(_Strict):
    """Weights & Biases (the `[wandb]` extra); see reglab.tracking.wandb."""

    enabled: bool = True
    project: str = "reglab"
    entity: str | None = None
    mode: Literal["offline", "online"] = "offline"
    """offline: everything stays in files (upload later with `wandb sync`); online: live."""
    dir: str | None = None
    """Where W&B keeps its files (it adds wandb/); None: the run directory."""


class MLflowConfig(_Strict):
    """MLflow (the `[mlflow]` extra); see reglab.tracking.mlflow."""

    enabled: bool = True
    tracking_uri: str | None = None
    """None: sqlite:///<results root>/mlflow.db, one store for every run under the root."""
    experiment: str | None = None
    """None: the config's name (the sweep's name)."""


class LoggingConfig(_Strict):
    """Experiment trackers that see each run's rows as they are written (reglab.tracking). Not
    part of a run's identity: switching one on or off never changes a hash. Each block has
    `enabled` (default true), so `--mlflow` can switch a block on without replacing it."""

    tensorboard: bool = False
    """Event files in <run>/tensorboard/."""
    wandb: WandbConfig | None = None
    mlflow: MLflowConfig | None = None


class RunConfig(_Strict):
    name: str = "run"
    """A label for the run or sweep; not part of the run's identity."""
    seed: int = 0
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."""
    output: str = "runs"
    """Results root; each run gets output/<hash>/."""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    lr_schedule: LRScheduleConfig = Field(default_factory=LRScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    regularizers: list[RegularizerConfig] = Field(default_factory=list)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Trackers (TensorBoard, W&B, MLflow); not part of the run's identity."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError(f"name: {v!r} is not a valid name: use {NAME_RULE}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v


# ----------------------------------------------------------------------------- run identity
#
# A run's hash names its directory, so it must not move when reglab grows. The rule, enforced by
# tests/test_run_identity.py (hashes of reference configs pinned at 0.1.0, and an inventory of
# the schema's fields at that version):
#
# 1. Fields that do not change what is computed (labels, paths, device, progress display, and
#    later logging and trackers) are in NON_IDENTITY_FIELDS and never enter the hash.
# 2. A field added after 0.1.0 is listed in IDENTITY_DEFAULTS with the value under which it
#    computes what was computed before it existed; a config holding that value hashes without
#    the field, so every existing run keeps its hash. Any other value enters the hash.
# Paths are dotted; "*" stands for every item of a list (regularizers.*.name).

# device is left out on purpose: a run resumed on another machine is the same experiment.
NON_IDENTITY_FIELDS: tuple[str, ...] = (
    "name",
    "output",
    "device",
    "data.dir",
    "train.progress",
    "train.keep_checkpoints",
    "logging",
)

# Fields added since 0.1.0 -> the value that reproduces 0.1.0's computation.
IDENTITY_DEFAULTS: dict[str, Any] = {
    "analysis.monitors": [],
    "lr_schedule.milestone_fractions": [],
    "train.abort": None,
    "train.precision": "fp32",
    "train.channels_last": False,
    "train.deterministic": False,
}

_ABSENT = object()


def _drop(d: Any, parts: list[str], only_if: Any = _ABSENT) -> None:
    """Remove the dotted path `parts` from plain data d (every list item for "*"); with only_if,
    only where the value equals it."""
    if not parts:
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        for item in d if isinstance(d, list) else []:
            _drop(item, rest, only_if)
        return
    if not isinstance(d, dict) or head not in d:
        return
    if rest:
        _drop(d[head], rest, only_if)
    elif only_if is _ABSENT or d[head] == only_if:
        del d[head]


def canonical_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain JSON data with defaults filled in, identity fields only (see above)."""
    d = cfg.model_dump(mode="json")
    for f in NON_IDENTITY_FIELDS:
        _drop(d, f.split("."))
    for f, neutral in IDENTITY_DEFAULTS.items():
        _drop(d, f.split("."), json.loads(json.dumps(neutral)))
    return d


def config_hash(cfg: RunConfig) -> str:
    blob = json.dumps(canonical_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- overrides


# A config is a few hundred values; YAML aliases (&a ... *a) can make a few hundred bytes expand
# into billions (the "billion laughs"), which would hang every step that walks the data.
MAX_YAML_VALUES = 100_000


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Number of values `node` stands for once every alias is expanded (aliases share nodes, so
    this is counted over the composed graph without expanding it)."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a node reached again through itself (a recursive alias) counts once
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    return memo[key]


def safe_yaml(text: str, where: str) -> Any:
    """yaml.safe_load, refusing documents whose aliases expand past MAX_YAML_VALUES values."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = _expanded_size(node, {})
        except RecursionError:
            raise ConfigError(where, "is nested too deeply to be a config") from None
        if size > MAX_YAML_VALUES:
            raise ConfigError(
                where,
                f"expands through YAML aliases (&name / *name) to {size:,} values, more than the "
                f"{MAX_YAML_VALUES:,} a config may hold; write the values out or use fewer aliases",
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_value(text: str) -> Any:
    """A command-line value: YAML scalars and flow lists/maps (`0.1`, `[784,128,10]`, `true`)."""
    try:
        return safe_yaml(text, "override") if text != "" else ""
    except yaml.YAMLError:
        return text


def set_dotted(d: dict, key: str, value: Any) -> None:
    """Set d[a][b][c] for key 'a.b.c'; list items by index ('regularizers.0.lam')."""
    parts = key.split(".")
    node: Any = d
    for i, p in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            idx = _index(p, node, ".".join(parts[: i + 1]))
            node = node[idx]
            continue
        if p not in node or node[p] is None:
            node[p] = [] if nxt.isdigit() else {}
        node = node[p]
    last = parts[-1]
    if isinstance(node, list):
        idx = _index(last, node, key, allow_append=True)
        if idx == len(node):
            node.append(value)
        else:
            node[idx] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(key, f"{'.'.join(parts[:-1])} is not a mapping")


def _index(p: str, node: list, where: str, allow_append: bool = False) -> int:
    if not p.isdigit():
        raise ConfigError(where, "expected a list index")
    idx = int(p)
    limit = len(node) + (1 if allow_append else 0)
    if idx >= limit:
        raise ConfigError(where, f"index {idx} out of range (list has {len(node)} items)")
    return idx


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(item, "an override must look like key=value (e.g. optim.lr=0.1)")
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(item, "empty key in override")
        out.append((key, parse_value(raw)))
    return out


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config", f"file not found: {p}")
    try:
        data = safe_yaml(p.read_text(), str(p)) or {}
    except yaml.YAMLError as e:
        raise ConfigError("config", f"{p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{p} must hold a mapping at the top level")
    return data


# Pairs of fields of which at most one may be set: an override of one clears the other,
# so `train.iterations=500` works on top of a preset that states its budget in epochs.
EXCLUSIVE = {
    "train.epochs": "train.iterations",
    "train.iterations": "train.epochs",
    "data.val_fraction": "data.val_size",
    "data.val_size": "data.val_fraction",
}
_EXCLUSIVE_RESET = {"train.epochs": None, "train.iterations": None, "data.val_fraction": 0.0, "data.val_size": None}


def merge(base: dict, overrides: list[tuple[str, Any]]) -> dict:
    """`base` with the overrides applied. One rule for the pairs in EXCLUSIVE, in a YAML file and on
    the command line alike: one source may give one field of a pair, not both; a later source's
    field replaces an earlier source's (train.iterations=500 over a preset's epochs)."""
    given = {key for key, value in overrides if key in EXCLUSIVE and value not in (None, 0, 0.0)}
    for key in sorted(given):
        if EXCLUSIVE[key] in given:
            first, second = sorted((key, EXCLUSIVE[key]))
            raise ConfigError(second, f"give {first} or {second}, not both")
    d = copy.deepcopy(base)
    for key, value in overrides:
        other = EXCLUSIVE.get(key)
        if other is not None and value not in (None, 0, 0.0):
            set_dotted(d, other, _EXCLUSIVE_RESET[other])
        set_dotted(d, key, value)
    return d


def validate_schema(raw: dict) -> RunConfig:
    """Validate raw data against the schema into a RunConfig; the first problem becomes a
    ConfigError. Names that live in registries are checked by reglab.validation."""
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            parent = ".".join(str(x) for x in err["loc"][:-1])
            allowed = _allowed_keys(parent)
            if field == "tune":  # a search's file given to train: say which command reads it
                raise ConfigError(field, "a tune: block is read by `reglab tune FILE`, not here", allowed) from None
            raise ConfigError(field, "unknown key", allowed) from None
        text = pydantic_message(err)
        if err["type"] == "value_error":
            # Cross-field checks name their field themselves: "a.b: message".
            head, sep, rest = text.partition(": ")
            if sep and " " not in head:
                raise ConfigError(head, rest) from None
        raise ConfigError(field, text) from None
    return cfg


def _allowed_keys(parent: str) -> list[str]:
    model: type[BaseModel] = RunConfig
    for p in [x for x in parent.split(".") if x]:
        if p.isdigit():
            continue
        ann = model.model_fields[p].annotation
        inner = getattr(ann, "__args__", None)
        if inner:
            ann = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return sorted(model.model_fields)


def inert_settings(cfg: RunConfig) -> list[str]:
    """Settings in this config that change nothing it computes, said in one line each. They
    are not refused: a run made with them has its own hash since 0.1.0, and a sweep may cross
    them with the setting that makes them act (wn_g0 across a weight_norm axis)."""
    notes = []
    if cfg.model.wn_g0 is not None and not cfg.model.weight_norm:
        notes.append("model.wn_g0 has no effect without model.weight_norm (true or rho)")
    return notes
