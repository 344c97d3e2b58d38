"""The training loop. Reads top to bottom: prepare, then step until the budget is spent.

One step: slice a batch from tensors on the device -> (augment) -> forward -> data loss
-> + sum of lam_i * R_i over penalty regularizers -> backward -> optimizer step -> proximal
steps (tau = lam_i * lr) -> regularizer after_step hooks -> lambda schedules observe.

Per-step scalars stay on the device and are written in blocks, so the hot path never waits
for the device; the NaN/inf guard looks at them at each block flush.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from . import __version__
from .config import RunConfig, canonical_dict, config_hash
from .errors import ConfigError
from .evaluation import LossFn, correct, evaluate, make_loss_fn
from .observers import RunInfo, RunObserver, StopTraining
from .optim import build_lr_schedule, build_optimizer
from .provenance import ONE_BY_ONE, compute_version, segment
from .prune import apply_keep_policy
from .regularization import Regularization, Term
from .regularizers import Regularizer, StepContext, build_regularizer
from .runtime import keep_freed_memory, resolve_device, seed_everything
from .schedules import build_schedule
from .store import RunBusy, RunDir, RunLock

if TYPE_CHECKING:  # reglab.data is imported when a run is prepared, not with this module
    from .data import TaskData

FLUSH_EVERY = 50
"""Steps between writes of the per-step log (and NaN checks)."""


@dataclass
class Setup:
    cfg: RunConfig
    device: torch.device
    data: TaskData
    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_sched: LRScheduler | None
    """None for a constant learning rate."""
    regularization: Regularization
    loss_fn: LossFn
    steps_per_epoch: int
    total_steps: int
    data_gen: torch.Generator
    aug_gen: torch.Generator
    monitors: list[tuple[str, Regularizer]] = field(default_factory=list)
    """(key, regularizer) measured at each evaluation without entering the loss."""

    @property
    def terms(self) -> list[Term]:
        return self.regularization.terms

    @property
    def step_monitors(self) -> list[Regularizer]:
        """The monitors that follow every step (their measurements accumulate: path energy)."""
        return [reg for _, reg in self.monitors if reg.follows_steps]


@dataclass
class RunResult:
    path: Path
    hash: str
    status: str
    summary: dict = field(default_factory=dict)
    skipped: bool = False


def prepare(cfg: RunConfig, data_dir: str | None = None, data: TaskData | None = None) -> Setup:
    """Build everything a run needs, in memory. User errors surface here, before any file.

    `data`: the run's task data when the caller has already built it (runs of a vectorized group
    share one); it must be what `build_task` gives for this config and seed."""
    from .data import build_task, data_dir_for
    from .models import build_model
    from .models.registry import check_model_size

    keep_freed_memory()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if data is None:
        location = data_dir_for(cfg.data.dataset, cfg.data.dir or data_dir)
        data = build_task(cfg.data, run_seed=cfg.seed, device=device, data_dir=location)
    check_model_size(cfg.model, data.input_shape, data.num_outputs, device)
    seed_everything(cfg.seed)  # the model's init does not depend on how much data loading drew
    model = build_model(cfg.model, data.input_shape, data.num_outputs).to(device)
    optimizer = build_optimizer(cfg.optim, model)

    n = data.x_train.shape[0]
    bs = cfg.train.batch_size
    steps_per_epoch = math.ceil(n / bs)  # the last, partial batch is trained on too
    if cfg.train.iterations is not None:
        total = cfg.train.iterations
    else:
        assert cfg.train.epochs is not None  # TrainConfig sets epochs when iterations is not given
        total = math.ceil(cfg.train.epochs * steps_per_epoch)
    horizon = total if cfg.lr_schedule.unit == "iteration" else math.ceil(total / steps_per_epoch)
    lr_sched = build_lr_schedule(cfg.lr_schedule, optimizer, cfg.optim.lr, horizon)

    if cfg.train.abort is not None and cfg.train.abort.split == "val" and data.x_val is None:
        raise ConfigError(
            "train.abort.split",
            "val needs a validation set: set data.val_fraction, data.val_size or data.rest_as_validation",
        )
    if cfg.train.early_stopping.patience is not None and data.x_val is None:
        raise ConfigError(
            "train.early_stopping.patience",
            "early stopping needs a validation set: set data.val_fraction, data.val_size or data.rest_as_validation",
        )

    terms = []
    for i, rc in enumerate(cfg.regularizers):
        reg = build_regularizer(rc, f"regularizers.{i}")
        try:
            reg.setup(model)
        except ConfigError as e:  # an option that does not fit this model: name it fully
            from .regularizers import prefixed

            raise prefixed(e, f"regularizers.{i}") from None
        except ValueError as e:
            raise ConfigError(
                f"regularizers.{i}.name", f"{rc.name} cannot act on model {cfg.model.name}: {e}"
            ) from None
        sched = build_schedule(rc.schedule, rc.lam, f"regularizers.{i}.schedule")
        key = rc.name if sum(r.name == rc.name for r in cfg.regularizers) == 1 else f"{rc.name}.{i}"
        terms.append(Term(key, reg, sched))

    monitors = []
    for i, mc in enumerate(cfg.analysis.monitors):
        where = f"analysis.monitors.{i}"
        reg = build_regularizer(mc, where)
        try:
            reg.setup(model)
        except ValueError as e:
            raise ConfigError(f"{where}.name", f"{mc.name} cannot measure model {cfg.model.name}: {e}") from None
        monitors.append((mc.name, reg))

    data_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    loss_fn = make_loss_fn(cfg.train.loss, data.task)
    return Setup(
        cfg,
        device,
        data,
        model,
        optimizer,
        lr_sched,
        Regularization(terms),
        loss_fn,
        steps_per_epoch,
        total,
        data_gen,
        aug_gen,
        monitors,
    )


def config_record(cfg: RunConfig) -> dict:
    return {
        "hash": config_hash(cfg),
        "canonical": canonical_dict(cfg),
        "config": cfg.model_dump(mode="json"),
        "reglab_version": __version__,
    }


def run(
    cfg: RunConfig,
    data_dir: str | None = None,
    progress: bool | None = None,
    root: str | Path | None = None,
    wait: bool = False,
    observers: Sequence[RunObserver] = (),
) -> RunResult:
    """Train one run into <root>/<hash>/. A finished run (DONE) is not redone; an unfinished one
    resumes from its last checkpoint. If another process is training the same run, raise
    RunBusy (or, with wait=True, wait for it and return its result).

    `observers` (reglab.observers) see every row as it is written; one that raises StopTraining
    ends the run there with status "stopped", not done: asked for again, it resumes."""
    h = config_hash(cfg)
    rd = RunDir(Path(root if root is not None else cfg.output) / h)
    if rd.done:
        return _finished(rd, h)
    setup = prepare(cfg, data_dir)
    lock = RunLock(rd.path)
    if not lock.acquire(blocking=wait):
        raise RunBusy(str(rd.path))
    try:
        with lock:
            if rd.done:  # finished by another process while we prepared or waited
                return _finished(rd, h)
            if not rd.exists():
                rd.create(config_record(cfg))
            rd.clear_error()
            rd.remove_stale_temporaries()
            show = cfg.train.progress if progress is None else progress
            try:
                summary = Trainer(setup, rd, show, observers).fit()
            except StopTraining as e:
                return RunResult(rd.path, h, "stopped", {"stop_reason": str(e)})
            except Exception as e:
                # On a full disk or a lost mount the record cannot be written: the original error is the one to report.
                with contextlib.suppress(OSError):
                    rd.write_error({"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()})
                raise
            for o in observers:
                o.on_finish(summary)
            rd.write_summary(summary)
            rd.mark_done()
            apply_keep_policy(rd, cfg.train.keep_checkpoints)
    finally:
        for o in observers:
            o.close()
    return RunResult(rd.path, h, summary["status"], summary)


def _finished(rd: RunDir, h: str) -> RunResult:
    s = rd.read_summary() or {}
    return RunResult(rd.path, h, s.get("status", "done"), s, skipped=True)


def backward_with_known_data_grads(
    weighted: list[torch.Tensor], data_grads: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """Gradients of data_loss + sum(weighted) when a penalty already computed d data_loss / d p:
    backpropagate the weighted penalties only, then add the known data gradients (one backward
    of the batch's graph fewer; same sum)."""
    penalties = [w for w in weighted if w.requires_grad]
    if penalties:
        sum(penalties[1:], penalties[0]).backward()
    with torch.no_grad():
        for p, g in data_grads:
            if p.grad is None:
                p.grad = g.detach()  # a fresh tensor of autograd.grad, used nowhere else
            else:
                p.grad.add_(g)


class Trainer:
    def __init__(self, s: Setup, rd: RunDir, progress: bool = False, observers: Sequence[RunObserver] = ()):
        self.s = s
        self.rd = rd
        self.progress = progress
        self.observers = list(observers)
        """Told of every row as it is written (reglab.observers)."""
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.perm: torch.Tensor | None = None
        self.best_value: float | None = None
        self.best_step = -1
        self.best_state: dict | None = None
        self.evals_since_best = 0
        self.n_evals = 0
        self.stopped_early = False
        self.stop_reason: str | None = None
        """Why training stopped before its budget: early stopping, or an abort rule."""
        self.diverged_at: int | None = None
        self.elapsed = 0.0
        self.pending_rows: list[tuple[int, int, float, tuple[float, ...], torch.Tensor]] = []
        """Per-step log rows (step, epoch, lr, lams, values) not yet written; `flush_log` writes
        them. The vectorized trainer appends its models' rows here too."""
        self.clock_start: float | None = None
        """perf_counter() at the start of the current training segment (None between segments):
        evaluations add the time since then to `elapsed`."""
        self._last_eval: dict = {}
        self.trained_by: list[dict] = []
        """One provenance segment per start of training (see reglab.provenance)."""

    def begin_segment(self, path: str, group_size: int = 1) -> None:
        """Record that training (re)starts here, on this path, device, dtype and torch."""
        dtype = next(self.s.model.parameters()).dtype
        self.trained_by.append(segment(path, self.s.device, dtype, self.step, group_size))

    def start_observers(self) -> None:
        """Tell the observers that training (re)starts at this step (after a resume)."""
        if self.observers:
            cfg = self.s.cfg
            info = RunInfo(self.rd.path.name, self.rd.path, cfg.name, cfg.model_dump(mode="json"))
            for o in self.observers:
                o.on_start(info, self.step)

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict:
        s, cfg = self.s, self.s.cfg
        resumed = self.maybe_resume()
        self.start_observers()
        if not resumed and cfg.train.eval_at_start:
            self.evaluate_now()
        self.begin_segment(ONE_BY_ONE)
        start_step = self.step
        t0 = self.clock_start = time.perf_counter()
        bar = _Progress(s.total_steps, self.step, enabled=self.progress, label=cfg.name)
        model = s.model
        model.train()
        x_all, y_all = s.data.x_train, s.data.y_train
        n, bs = x_all.shape[0], cfg.train.batch_size
        while self.step < s.total_steps and not self.stopped_early and self.diverged_at is None:
            if self.perm is None:
                self.perm = torch.randperm(n, generator=s.data_gen, device=s.device)
            i = self.batch_in_epoch * bs
            idx = self.perm[i : i + bs]
            x, y = x_all[idx], y_all[idx]
            if s.data.augment is not None:
                x = s.data.augment(x, s.aug_gen)
            self._train_step(x, y)
            self.step += 1
            self.batch_in_epoch += 1
            bar.update(self.step, self._last_eval)
            end_of_epoch = self.batch_in_epoch >= s.steps_per_epoch
            if end_of_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                self.perm = None
                if s.lr_sched is not None and cfg.lr_schedule.unit == "epoch":
                    s.lr_sched.step()
            if len(self.pending_rows) >= FLUSH_EVERY:
                self.flush_log()
            if self.eval_due(end_of_epoch) or self.step == s.total_steps:
                self.flush_log()
                if self.diverged_at is None:
                    self.evaluate_now()
                    if self.n_evals % cfg.train.checkpoint_every == 0 and self.step < s.total_steps:
                        self.save_resume_point(time.perf_counter() - t0)
        self.flush_log()
        bar.close()
        self.elapsed += time.perf_counter() - t0
        self.clock_start = None
        if not (resumed and self.step == start_step):
            self.save_trained_state()
        return self.finish()

    def save_trained_state(self) -> None:
        """Save the state at the end of training, before the analysis: a run killed during the
        analysis, or before its DONE marker, resumes here and only redoes the analysis."""
        self.save_resume_point(0.0)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step: the loss, the regularization around the optimizer (see
        reglab.regularization for the order), monitors, schedule measurements and the log row."""
        s, reg = self.s, self.s.regularization
        model, opt = s.model, s.optimizer
        out = model(x)
        data_loss = s.loss_fn(out, y)
        ctx = StepContext(self.step, x, y, out, data_loss, s.loss_fn, epoch=self.epoch) if len(reg) else None
        values, weighted = reg.penalties(model, ctx) if ctx is not None else ([], [])
        total = data_loss
        for w in weighted:
            total = total + w
        opt.zero_grad(set_to_none=True)
        if ctx is not None and ctx.data_grads is not None:
            backward_with_known_data_grads(weighted, ctx.data_grads)
        else:
            total.backward()
        lr = opt.param_groups[0]["lr"]
        reg.before_optimizer_step(model, lr)
        opt.step()
        reg.after_optimizer_step(model, lr, ctx)
        if s.step_monitors:
            self._follow_monitors(ctx or StepContext(self.step, x, y, out, data_loss, s.loss_fn, epoch=self.epoch))
        row = [data_loss.detach(), total.detach(), *values]
        lams = reg.lams  # the step's lambdas, before a measurement changes them
        measure = reg.wanting_measurement(self.step, self.batch_in_epoch)
        if measure:  # one device sync for all schedules measuring at this step
            acc = correct(out.detach(), y, s.data.task).item() / y.shape[0]
            metrics = {"train_loss": data_loss.item(), "train_acc": acc, "epoch_step": self.batch_in_epoch}
            reg.measure(self.step, metrics, measure)
        if s.lr_sched is not None and s.cfg.lr_schedule.unit == "iteration":
            s.lr_sched.step()
        if self.step % s.cfg.train.log_every == 0:
            self.pending_rows.append((self.step, self.epoch, lr, lams, torch.stack([v.float() for v in row])))

    def _follow_monitors(self, ctx: StepContext) -> None:
        """Monitors whose measurements accumulate over steps (path energy) see every step."""
        for reg in self.s.step_monitors:
            reg.after_step(self.s.model, ctx)

    # ------------------------------------------------------------------ logging
    def flush_log(self) -> None:
        """Write pending per-step rows; stop the run if any loss is NaN or inf."""
        if not self.pending_rows:
            return
        vals = torch.stack([p[4] for p in self.pending_rows]).cpu()
        names = ["loss", "total_loss"] + [f"penalty.{t.key}" for t in self.s.terms if t.reg.has_penalty]
        lam_names = [f"lam.{t.key}" for t in self.s.terms]
        rows = []
        for (step, epoch, lr, lams, _), v in zip(self.pending_rows, vals.tolist()):
            rows.append({"step": step, "epoch": epoch, "lr": lr, **dict(zip(names, v)), **dict(zip(lam_names, lams))})
        finite = torch.isfinite(vals[:, :2]).all(dim=1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            self.diverged_at = self.pending_rows[bad][0]
            rows = rows[: bad + 1]
        self.rd.append(self.rd.steps_path, rows)
        self.pending_rows.clear()
        for o in self.observers:
            o.on_steps(rows)

    # ------------------------------------------------------------------ evaluation
    def eval_due(self, end_of_epoch: bool) -> bool:
        tc = self.s.cfg.train
        if tc.eval_unit == "iteration":
            return self.step % tc.eval_every == 0
        return end_of_epoch and self.epoch % tc.eval_every == 0

    def evaluate_now(self) -> dict:
        """Measure the network now, log the row (evals.jsonl) and act on it (spectra during
        training, snapshots, the best checkpoint)."""
        s, tc = self.s, self.s.cfg.train
        row = self._measure()
        self.rd.append(self.rd.evals_path, [row])
        self.n_evals += 1
        for o in self.observers:
            o.on_evaluation(row)
        ac = s.cfg.analysis
        if ac.spectra_every is not None and (self.n_evals - 1) % ac.spectra_every == 0:
            from .analysis import spectra_rows

            (self.rd.path / "analysis").mkdir(exist_ok=True)
            self.rd.append(self.rd.ranks_during_path, spectra_rows(s.model, self.step))
        se = tc.snapshot_every
        if se is not None and (self.n_evals - 1) % se == 0:
            self.rd.save_checkpoint(f"snap_{self.step:08d}", {"model": s.model.state_dict(), "step": self.step})
        self._last_eval = row
        self._track_best(row)
        self._check_abort(row)
        return row

    def _measure(self) -> dict:
        """One evaluation row of the network as it is now (losses and accuracies per split,
        lambdas, regularizer reports, monitors), without logging it."""
        s, tc = self.s, self.s.cfg.train
        d = s.data
        row: dict = {"step": self.step, "epoch": self.step / s.steps_per_epoch}
        xt, yt = d.x_train, d.y_train
        if tc.eval_train_limit is not None:
            xt, yt = xt[: tc.eval_train_limit], yt[: tc.eval_train_limit]
        splits = [("train", xt, yt), ("val", d.x_val, d.y_val), ("test", d.x_test, d.y_test)]
        for name, x, y in splits:
            if x is None:
                continue
            assert y is not None  # x_val and y_val are set together
            m = evaluate(s.model, x, y, s.loss_fn, d.task, tc.eval_batch_size)
            row[f"{name}_loss"], row[f"{name}_acc"] = m["loss"], m["acc"]
        for t in s.terms:
            row[f"lam.{t.key}"] = t.sched.lam
            for k, v in t.reg.report(s.model).items():
                row[f"{t.key}.{k}"] = v
                if k.startswith("objective_") and "train_loss" in row:
                    # a regularizer value R reported as an objective: also log the training
                    # objective train_loss + lam * R (study 4's "wd objective"), for every algorithm
                    row[f"{t.key}.train_{k}"] = row["train_loss"] + t.sched.lam * v
        row.update(self._monitor_values())
        row["lr"] = s.optimizer.param_groups[0]["lr"]
        row["time"] = self.elapsed + (time.perf_counter() - self.clock_start if self.clock_start is not None else 0.0)
        return row

    @torch.no_grad()
    def _monitor_values(self) -> dict[str, float]:
        """monitor.KEY (the penalty's value, without lam) and monitor.KEY.ITEM (its report); a
        monitor that follows steps is read through its report only, as its penalty would move
        its state."""
        model, out = self.s.model, {}
        for key, reg in self.s.monitors:
            if reg.has_penalty and not reg.follows_steps:
                out[f"monitor.{key}"] = float(reg.penalty(model, None))
            for k, v in reg.report(model).items():
                out[f"monitor.{key}.{k}"] = v
        return out

    def _selection(self, row: dict) -> tuple[str, float, bool]:
        """(metric name, value, higher_is_better) used for the best checkpoint."""
        es = self.s.cfg.train.early_stopping
        if "val_loss" in row:
            return es.metric, row[es.metric], es.metric == "val_acc"
        return "train_loss", row["train_loss"], False

    def _track_best(self, row: dict) -> None:
        name, value, higher = self._selection(row)
        if not math.isfinite(value):
            return
        es = self.s.cfg.train.early_stopping
        if self.best_value is None:
            improved = True
        else:
            gain = (value - self.best_value) if higher else (self.best_value - value)
            improved = gain > es.min_delta
        if improved:
            self.best_value, self.best_step = value, self.step
            self.best_state = {k: v.detach().clone() for k, v in self.s.model.state_dict().items()}
            self.evals_since_best = 0
            self.rd.save_checkpoint(
                "best", {"model": self.best_state, "step": self.step, "metric": name, "value": value}
            )
        else:
            self.evals_since_best += 1
            if es.patience is not None and self.evals_since_best >= es.patience:
                self.stopped_early = True
                self.stop_reason = f"early stopping: {es.patience} evaluations without improvement of {name}"

    def _check_abort(self, row: dict) -> None:
        """train.abort: stop a run that is not learning (study 1's rules), keeping its weights."""
        ab = self.s.cfg.train.abort
        if ab is None or self.stopped_early:
            return
        acc = row.get(f"{ab.split}_acc")
        if acc is None:
            return
        epochs = self.step / self.s.steps_per_epoch
        if ab.zero_accuracy and acc == 0.0:
            self.stop_reason = f"aborted: {ab.split} accuracy 0 at step {self.step}"
        elif ab.below is not None and ab.after_epochs is not None and epochs >= ab.after_epochs and acc < ab.below:
            self.stop_reason = (
                f"aborted: {ab.split} accuracy {acc:.4f} < {ab.below} after {epochs:g} epochs (step {self.step})"
            )
        else:
            return
        self.stopped_early = True

    # ------------------------------------------------------------------ end of run
    def finish(self) -> dict:
        s, cfg = self.s, self.s.cfg
        status = "diverged" if self.diverged_at is not None else "done"
        restored = False
        es = cfg.train.early_stopping
        aborted = (self.stop_reason or "").startswith("aborted")
        if (
            status == "done"
            and not aborted
            and es.patience is not None
            and es.restore_best
            and self.best_state is not None
        ):
            s.model.load_state_dict(self.best_state)
            restored = True
        final = self._final_metrics(restored)
        if status == "done":
            final.update(self._analyze())
        s.model.eval()
        self.rd.save_checkpoint("final", {"model": s.model.state_dict(), "step": self.step})
        summary = {
            "status": status,
            "steps": self.step,
            "epochs": self.step / s.steps_per_epoch,
            "steps_per_epoch": s.steps_per_epoch,
            "diverged_step": self.diverged_at,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "restored_best": restored,
            "best_step": self.best_step,
            "best_metric": self._selection(self._last_eval)[0] if self._last_eval else None,
            "best_value": self.best_value,
            "wall_time": self.elapsed,
            "device": str(s.device),
            "num_params": sum(p.numel() for p in s.model.parameters()),
            "data": s.data.meta,
            "final": final,
            "trained_by": self.trained_by,
            "compute_version": compute_version({"trained_by": self.trained_by}),
        }
        return summary

    def _analyze(self) -> dict:
        """Margins, spectra and sparsity of the final network (analysis/), and a landscape when
        the config asks for one. Returns the scalars that join the run's final metrics."""
        from .analysis import analyze_final

        s = self.s
        ac = s.cfg.analysis
        out = self.rd.path / "analysis"
        bias_in_units = any(getattr(t.reg.options, "regularize_bias", False) for t in s.terms)
        scalars = analyze_final(s.model, s.data, ac, out, self.step, include_bias=bias_in_units, sync=self.rd.sync)
        if ac.landscape is not None:
            from .landscape.run_landscape import landscape_in_run

            meta = {
                "run_hash": self.rd.path.name,
                "run_dir": str(self.rd.path),
                "step": self.step,
                "model": s.cfg.model.name,
                "dataset": s.cfg.data.dataset,
            }
            landscape_in_run(
                self.rd,
                s.model,
                s.data,
                s.loss_fn,
                ac.landscape,
                out / "landscape",
                meta,
                s.cfg.train.eval_batch_size,
                s.device,
            )
        return scalars

    def _final_metrics(self, restored: bool) -> dict:
        if self.diverged_at is not None:
            return {k: v for k, v in self._last_eval.items() if k not in ("time",)}
        if not restored:
            return {k: v for k, v in self._last_eval.items() if k != "time"}
        # Restored: the weights are the best evaluation's again. Measure them (the reports of
        # stateful regularizers describe the whole run, not the best step) without logging a
        # row: the log already holds the best step's row, and a second row at the stopping
        # step would carry other weights' numbers.
        row = self._measure()
        row["step"], row["epoch"] = self.best_step, self.best_step / self.s.steps_per_epoch
        return {k: v for k, v in row.items() if k != "time"}

    # ------------------------------------------------------------------ resume
    def save_resume_point(self, run_elapsed: float) -> None:
        s = self.s
        state = {
            "model": s.model.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "lr_sched": s.lr_sched.state_dict() if s.lr_sched is not None else None,
            "terms": s.regularization.state_dict(),
            "monitors": [reg.state_dict() for _, reg in s.monitors],
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "perm": self.perm,
            "data_gen": s.data_gen.get_state(),
            "aug_gen": s.aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "py_rng": random.getstate(),
            "best": {
                "value": self.best_value,
                "step": self.best_step,
                "since": self.evals_since_best,
                "state": self.best_state,
            },
            "n_evals": self.n_evals,
            "elapsed": self.elapsed + run_elapsed,
            "last_eval": self._last_eval,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "diverged_at": self.diverged_at,
            "trained_by": self.trained_by,
        }
        self.rd.save_checkpoint("last", state)

    def maybe_resume(self) -> bool:
        s = self.s
        ck = self.rd.load_checkpoint("last", map_location=s.device)
        if ck is None:
            self.rd.truncate_logs(-1)  # started, never checkpointed: start over cleanly
            return False
        s.model.load_state_dict(ck["model"])
        s.optimizer.load_state_dict(ck["optimizer"])
        if s.lr_sched is not None and ck["lr_sched"] is not None:
            s.lr_sched.load_state_dict(ck["lr_sched"])
        s.regularization.load_state_dict(ck["terms"])
        for (_, reg), st in zip(s.monitors, ck.get("monitors", [])):
            reg.load_state_dict(st)
        self.step, self.epoch, self.batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        self.perm = ck["perm"]
        s.data_gen.set_state(ck["data_gen"].cpu() if s.device.type == "cpu" else ck["data_gen"])
        s.aug_gen.set_state(ck["aug_gen"].cpu() if s.device.type == "cpu" else ck["aug_gen"])
        torch.set_rng_state(ck["torch_rng"].cpu())
        random.setstate(_as_tuple(ck["py_rng"]))
        b = ck["best"]
        self.best_value, self.best_step, self.evals_since_best, self.best_state = (
            b["value"],
            b["step"],
            b["since"],
            b["state"],
        )
        self.n_evals = ck["n_evals"]
        self.elapsed = ck["elapsed"]
        self._last_eval = ck["last_eval"]
        self.stopped_early = ck.get("stopped_early", False)  # absent in checkpoints of reglab <= 0.1.0
        self.stop_reason = ck.get("stop_reason")
        self.diverged_at = ck.get("diverged_at")
        self.trained_by = list(ck.get("trained_by", []))
        self.rd.truncate_logs(self.step)
        return True


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


class _Progress:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, total: int, start: int, enabled: bool, label: str):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=True,
        )
        self.p.start()
        self.task = self.p.add_task(label, total=total, completed=start, info="")
        self._last = 0.0

    def update(self, step: int, last_eval: dict) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        info = " ".join(f"{k}={last_eval[k]:.4g}" for k in ("train_loss", "test_acc") if k in last_eval)
        self.p.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.enabled:
            self.p.stop()
