"""Training one run: `run(cfg)` builds it (reglab.build), trains it (its `Trainer` in the
loop of reglab.loop), analyses the result (reglab.analysis_stage) and marks it done.

`Trainer` is one run's bookkeeping, what the loop needs around each step: the per-step log
rows (written in blocks; the NaN/inf guard looks at them at each flush, so the hot path never
waits for the device), evaluations (logged, the best checkpoint, early stopping and abort
rules), resume points, and the summary at the end of training. A vectorized group keeps one
Trainer per run and uses the same methods.
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

import torch

from . import __version__
from .analysis_stage import analyze_trained
from .build import Setup, prepare
from .config import RunConfig, canonical_dict, config_hash
from .evaluation import evaluate
from .loop import FLUSH_EVERY, OneModelStep, train_runs
from .observers import RunInfo, RunObserver, StopTraining
from .provenance import compute_version, segment
from .prune import apply_keep_policy
from .runtime import deterministic_now
from .store import RunBusy, RunDir, RunLock
from .tracking import observers_for

__all__ = ["FLUSH_EVERY", "RunResult", "Setup", "Trainer", "config_record", "prepare", "run"]


@dataclass
class RunResult:
    path: Path
    hash: str
    status: str
    summary: dict = field(default_factory=dict)
    skipped: bool = False


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
    ends the run there with status "stopped", not done: asked for again, it resumes. The
    trackers of `cfg.logging` (reglab.tracking) join them."""
    h = config_hash(cfg)
    rd = RunDir(Path(root if root is not None else cfg.output) / h)
    if rd.done:
        return _finished(rd, h)
    observers = [*observers, *observers_for(cfg, rd.path)]  # a missing tracker package stops here
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
                analyze_trained(setup, rd, summary)
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
        """Record that training (re)starts here, on this path, device, dtype, precision and
        torch, and whether algorithms are deterministic (called inside train.deterministic's scope)."""
        dtype = next(self.s.model.parameters()).dtype
        precision, deterministic = self.s.cfg.train.precision, deterministic_now()
        self.trained_by.append(segment(path, self.s.device, dtype, self.step, group_size, precision, deterministic))

    def start_observers(self) -> None:
        """Tell the observers that training (re)starts at this step (after a resume)."""
        if self.observers:
            cfg = self.s.cfg
            info = RunInfo(self.rd.path.name, self.rd.path, cfg.name, cfg.model_dump(mode="json"))
            for o in self.observers:
                o.on_start(info, self.step)

    # ------------------------------------------------------------------ training
    def fit(self) -> dict:
        """Train this run to the end of its budget (resuming from its last checkpoint) and
        return its summary; the loop is reglab.loop's, shared with vectorized groups."""
        resumed = self.maybe_resume()
        return train_runs([self], OneModelStep(self.s), [resumed], progress=self.progress)[0]

    def save_trained_state(self) -> None:
        """Save the state at the end of training, before the analysis: a run killed during the
        analysis, or before its DONE marker, resumes here and only redoes the analysis."""
        self.save_resume_point(0.0)

    @property
    def last_eval(self) -> dict:
        """The latest evaluation row (empty before the first)."""
        return self._last_eval

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
        """Measure the network now, log the row (evals.jsonl), act on it (spectra during
        training, snapshots, the best checkpoint, early stopping) and show it to the observers."""
        s, tc = self.s, self.s.cfg.train
        row = self._measure()
        self.rd.append(self.rd.evals_path, [row])
        self.n_evals += 1
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
        for o in self.observers:  # last: one that raises StopTraining finds the books complete
            o.on_evaluation(row)
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
