"""The group trainer: M compatible runs trained at once, each run directory written exactly as
the one-by-one trainer (`train.Trainer`) writes it.

How it reuses train.py: every run gets its own `Setup` from `train.prepare` (its seed, its model
init, its regularizers with their setup, its lambda schedules, its torch optimizer and lr
schedule, its data generator) and its own `train.Trainer` over its own run directory. The group
stacks the models' parameters (model i's parameters become views of slice i, see
functional.StackedModels) and replaces only the inner step: one vmapped forward + loss + penalty,
one backward, one functional optimizer step for all models. Everything around the step is the
run's own Trainer, through its public methods: per-step rows go through its `pending_rows` /
`flush_log` (same NaN guard), and evaluation (`evaluate_now`), best tracking, checkpoints
(`save_resume_point`, with the functional optimizer's state exported into the run's torch
optimizer first), resume (`maybe_resume`) and the end of run (`finish`: final metrics, analysis,
final checkpoint) are its methods, called on model i. No private member is reached into.

Per model and per step, in the one-by-one order: data order from the run's own generator
(a [M, B] index tensor; when every run drew the same order, as runs of one seed do, one shared
batch for all), its pre-step hooks (decoupled weight decay, a loop over models like the prox
steps), the optimizer step with the run's own lr (read from its torch optimizer,
which its lr schedule drives), then for each model its prox steps and after_step hooks (a Python
loop over models acting on the views, in place), its lambda schedules' measurements (one
`.tolist()` for all models), its lr schedule step.

A run that diverges (NaN/inf loss found at a flush, as one by one) is finished at that moment,
exactly as alone; the group keeps computing its (discarded) slice until the end.
"""

from __future__ import annotations

import re
import time
import traceback
import warnings
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..evaluation import correct
from ..provenance import VECTORIZED
from ..prune import apply_keep_policy
from ..regularizers import Regularizer, StepContext
from ..store import RunDir, RunLock, sync_to_disk
from ..train import FLUSH_EVERY, Setup, Trainer, config_record, prepare
from .functional import GroupObjective, StackedModels, VmappedStep, apply_effects, stack_state, stateful_attributes
from .optim import StackedOptimizer

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..data import TaskData


def _compact(obj):
    """Clone every tensor (a view of a stacked parameter would otherwise save the whole stack)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _compact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_compact(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_compact(v) for v in obj)
    return obj


class CompactRunDir(RunDir):
    """A RunDir whose checkpoints hold compact copies of the tensors (same files, same format).
    The group writes its runs' files without an fsync each and syncs once at the points that
    matter (after resume checkpoints, before and after the DONE markers): an fsync per file,
    ~8 a run, would cost a quarter of a small group's time."""

    def __init__(self, path: Path):
        super().__init__(path, sync=False)

    def save_checkpoint(self, which: str, obj: dict) -> None:
        super().save_checkpoint(which, _compact(obj))


def _sched_step(sched) -> None:
    """Step a run's lr schedule. Its torch optimizer never steps itself (the stacked optimizer
    does the work), so torch's "lr_scheduler.step() before optimizer.step()" warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=re.escape("Detected call of `lr_scheduler.step()` before `optimizer.step()`")
        )
        sched.step()


def _overrides_after_step(reg: Regularizer) -> bool:
    return type(reg).after_step is not Regularizer.after_step


class GroupTrainer:
    """Train the runs of `trainers` (one train.Trainer each, already resumed or fresh, all at the
    same step) together. `fit()` returns one summary per run (None for none)."""

    def __init__(self, trainers: list[Trainer], resumed: list[bool]):
        self.trainers = trainers
        self.resumed = resumed
        self.setups: list[Setup] = [t.s for t in trainers]
        s0 = self.setups[0]
        self.cfg = s0.cfg
        self.M = len(trainers)
        steps = {t.step for t in trainers}
        if len(steps) != 1:
            raise ValueError(f"the runs of a group must start at the same step, got {sorted(steps)}")
        regs0 = [t.reg for t in s0.terms]
        self.objective = GroupObjective(s0.model, regs0, s0.loss_fn)  # a template: copied before stacking
        self.stack = StackedModels([s.model for s in self.setups])
        self.params = self.stack.params
        self.opt = StackedOptimizer(self.cfg.optim, self.stack.trainable())
        self.opt.import_from([s.optimizer for s in self.setups])
        self.vstep = VmappedStep(self.objective)
        self.state_attrs = [stateful_attributes(r) if r.has_penalty else [] for r in regs0]
        self.prox_terms = [k for k, r in enumerate(regs0) if r.has_prox]
        self.pre_step_terms = [k for k, r in enumerate(regs0) if r.has_pre_step]
        self.hook_terms = [k for k, r in enumerate(regs0) if _overrides_after_step(r)]
        self.active = [True] * self.M
        self.start_steps = [tr.step for tr in self.trainers]
        self.summaries: list[dict | None] = [None] * self.M

    # ------------------------------------------------------------------ helpers
    def _lams(self) -> torch.Tensor:
        dev = self.setups[0].device
        return torch.tensor(
            [[t.sched.lam for t in s.terms] for s in self.setups], dtype=torch.float32, device=dev
        ).reshape(self.M, -1)

    def _states(self) -> list[dict]:
        out = []
        for k, attrs in enumerate(self.state_attrs):
            out.append(stack_state([s.terms[k].reg for s in self.setups], attrs) if attrs else {})
        return out

    def _lrs(self) -> list[float]:
        return [s.optimizer.param_groups[0]["lr"] for s in self.setups]

    def _sync(self, step, epoch, batch_in_epoch) -> None:
        for t in self.trainers:
            t.step, t.epoch, t.batch_in_epoch = step, epoch, batch_in_epoch

    def _perms(self, n: int) -> torch.Tensor:
        dev = self.setups[0].device
        rows = []
        for i, (t, s) in enumerate(zip(self.trainers, self.setups)):
            if t.perm is None and self.active[i]:
                t.perm = torch.randperm(n, generator=s.data_gen, device=s.device)
            rows.append(t.perm if t.perm is not None else torch.arange(n, device=dev))
        return torch.stack(rows)

    def _finish_run(self, i: int, t0: float) -> None:
        tr = self.trainers[i]
        tr.elapsed += time.perf_counter() - t0
        tr.clock_start = None
        if not (self.resumed[i] and tr.step == self.start_steps[i]):
            self.opt.export_to(i, self.setups[i].optimizer)
            tr.save_trained_state()
        summary = tr.finish()
        summary["vectorized"] = {"group_size": self.M}
        self.summaries[i] = summary
        self.active[i] = False

    def _check_diverged(self, t0: float) -> None:
        for i, tr in enumerate(self.trainers):
            if self.active[i] and tr.diverged_at is not None:
                self._finish_run(i, t0)

    def _flush_all(self) -> None:
        for i, tr in enumerate(self.trainers):
            if self.active[i]:
                tr.flush_log()

    # ------------------------------------------------------------------ main loop
    # The one-step redesign (issue 16) replaces this loop with the trainer's own step; until then
    # it mirrors Trainer.fit branch for branch, hence the complexity.
    def fit(self) -> list[dict | None]:  # noqa: C901
        cfg = self.cfg
        s0 = self.setups[0]
        for tr, resumed in zip(self.trainers, self.resumed):
            tr.start_observers()
            if not resumed and cfg.train.eval_at_start:
                tr.evaluate_now()
        t0 = time.perf_counter()
        for tr in self.trainers:
            tr.clock_start = t0
            tr.begin_segment(VECTORIZED, self.M)
        self._check_diverged(t0)  # a run resumed from the state it diverged in only finishes
        x_all, y_all = s0.data.x_train, s0.data.y_train
        n, bs = x_all.shape[0], cfg.train.batch_size
        total_steps, spe = s0.total_steps, s0.steps_per_epoch
        tr0 = self.trainers[0]
        step, epoch, bie = tr0.step, tr0.epoch, tr0.batch_in_epoch
        perms = None
        shared = False
        task = s0.data.task
        params = self.params
        trainable = self.stack.trainable()
        lams = self._lams()
        saved = False
        while step < total_steps and any(self.active):
            if perms is None:
                perms = self._perms(n)
                shared = bool((perms == perms[:1]).all())  # one data order for all (one seed)
            i0 = bie * bs
            # ---- one step for all models
            if shared:
                idx = perms[0, i0 : i0 + bs]
                xb, yb = x_all[idx], y_all[idx]
                totals, data_loss, outs, pens, effects = self.vstep(
                    params, xb, yb, lams, self._states(), step, shared=True
                )
                x, y = xb.expand(self.M, *xb.shape), yb.expand(self.M, *yb.shape)  # views, per model
            else:
                idx = perms[:, i0 : i0 + bs]
                x, y = x_all[idx], y_all[idx]
                totals, data_loss, outs, pens, effects = self.vstep(params, x, y, lams, self._states(), step)
            apply_effects(self.objective, effects, [[t.reg for t in s.terms] for s in self.setups])
            grads = torch.autograd.grad(totals.sum(), trainable)
            lrs = self._lrs()
            # the per-model hooks around the optimizer step are the one-by-one trainer's own
            # (reglab.regularization), called on each model's slice
            if self.pre_step_terms:
                for i, s in enumerate(self.setups):
                    if self.active[i]:
                        s.regularization.before_optimizer_step(s.model, lrs[i])
            self.opt.step(list(grads), lrs)
            if self.prox_terms or self.hook_terms:
                for i, s in enumerate(self.setups):
                    if not self.active[i]:
                        continue
                    ctx = None
                    if self.hook_terms:
                        ctx = StepContext(
                            step, x[i], y[i], outs[i].detach(), data_loss[i].detach(), s.loss_fn, epoch=epoch
                        )
                    s.regularization.after_optimizer_step(s.model, lrs[i], ctx)
            rows = torch.cat([data_loss.detach()[:, None], totals.detach()[:, None], pens.detach()], dim=1).float()
            step_lams = [tuple(t.sched.lam for t in s.terms) for s in self.setups]  # before any measurement
            asking = [s.regularization.wanting_measurement(step, bie) for s in self.setups]
            lam_changed = False
            if any(asking):  # one device sync for all models measuring at this step
                corr = torch.stack([correct(outs[i].detach(), y[i], task) for i in range(self.M)])
                vals = torch.stack([data_loss.detach().double(), corr.double()], dim=1).tolist()
                for i, s in enumerate(self.setups):
                    if self.active[i] and asking[i]:
                        metrics = {"train_loss": vals[i][0], "train_acc": vals[i][1] / y.shape[1], "epoch_step": bie}
                        s.regularization.measure(step, metrics, asking[i])
                        lam_changed |= s.regularization.lams != step_lams[i]
            if lam_changed:
                lams = self._lams()
            if cfg.lr_schedule.name != "constant" and cfg.lr_schedule.unit == "iteration":
                for i, s in enumerate(self.setups):
                    if self.active[i]:
                        _sched_step(s.lr_sched)
            if step % cfg.train.log_every == 0:
                for i, tr in enumerate(self.trainers):
                    if self.active[i]:
                        tr.pending_rows.append((step, epoch, lrs[i], step_lams[i], rows[i]))
            step += 1
            bie += 1
            end_of_epoch = bie >= spe
            if end_of_epoch:
                epoch += 1
                bie = 0
                perms = None
                for i, (tr, s) in enumerate(zip(self.trainers, self.setups)):
                    tr.perm = None
                    if self.active[i] and s.lr_sched is not None and cfg.lr_schedule.unit == "epoch":
                        _sched_step(s.lr_sched)
            self._sync(step, epoch, bie)
            if len(tr0.pending_rows) >= FLUSH_EVERY or any(len(tr.pending_rows) >= FLUSH_EVERY for tr in self.trainers):
                self._flush_all()
                self._check_diverged(t0)
            if tr0.eval_due(end_of_epoch) or step == total_steps:
                self._flush_all()
                self._check_diverged(t0)
                for i, (tr, s) in enumerate(zip(self.trainers, self.setups)):
                    if not self.active[i]:
                        continue
                    tr.evaluate_now()
                    if tr.n_evals % cfg.train.checkpoint_every == 0 and step < total_steps:
                        self.opt.export_to(i, s.optimizer)
                        tr.save_resume_point(time.perf_counter() - t0)
                        saved = True
                if saved:
                    sync_to_disk()
                    saved = False
        self._flush_all()
        self._check_diverged(t0)
        for i in range(self.M):
            if self.active[i]:
                self._finish_run(i, t0)
        return self.summaries


# ---------------------------------------------------------------------- entry point


def _outcome(h: str, status: str, wall: float = 0.0, error: str | None = None) -> dict:
    return {"hash": h, "status": status, "wall": wall, "error": error}


# Locks, resume, failure and sync paths of one group in one place; issue 16 splits it with the trainer.
def train_group(runs: list, root: Path, data_dir: str | None = None) -> list[dict]:  # noqa: C901
    """Train planned runs (sweep.grid.PlannedRun: `.config`, `.hash`) that `plan_groups` put in
    one group, into `<root>/<hash>/`, and say how each went, like `sweep.executors.execute_run`:
    {"hash", "status" (done | diverged | skipped | busy | failed), "wall", "error"}, in the order
    of `runs`. Runs already DONE are skipped; runs whose lock another process holds are "busy".
    Runs resume from their own last checkpoint; runs at different checkpoint steps train in
    sub-groups by step (a sub-group of one trains one by one). `wall` is the group's wall time
    divided by its size (each run's share). Never raises for a failing run: the error is recorded
    in each affected run directory (error.json) and returned."""
    from .grouping import group_key

    if len({group_key(r.config) for r in runs}) > 1:
        raise ValueError(
            "train_group: the runs differ in more than seed, optim.lr and regularizer lambdas; use plan_groups"
        )
    root = Path(root)
    out: dict[str, dict] = {}
    locks: list[RunLock] = []
    ready: list[tuple] = []  # (hash, cfg, rd)
    try:
        for r in runs:
            cfg = r.config.model_copy(update={"output": str(root)})
            h = r.hash
            rd = CompactRunDir(root / h)
            if rd.done:
                out[h] = _outcome(h, "skipped")
                continue
            lock = RunLock(rd.path)
            if not lock.acquire(blocking=False):
                out[h] = _outcome(h, "busy")
                continue
            locks.append(lock)
            if rd.done:
                out[h] = _outcome(h, "skipped")
                continue
            ready.append((h, cfg, rd))
        prepared = []
        tasks: dict[tuple, TaskData] = {}  # each distinct dataset built once (see `_task_key`)
        for h, cfg, rd in ready:
            try:
                key = _task_key(cfg, data_dir)
                setup = prepare(cfg, data_dir, data=tasks.get(key))
                tasks.setdefault(key, setup.data)
                if not rd.exists():
                    rd.create(config_record(cfg))
                rd.clear_error()
                rd.remove_stale_temporaries()
                tr = Trainer(setup, rd, progress=False)
                resumed = tr.maybe_resume()
                prepared.append((h, rd, tr, resumed))
            except Exception as e:
                _record_failure(rd, e)
                out[h] = _outcome(h, "failed", error=f"{type(e).__name__}: {e}")
        by_step: dict[int, list] = {}
        for item in prepared:
            by_step.setdefault(item[2].step, []).append(item)
        for members in by_step.values():
            t0 = time.perf_counter()
            try:
                if len(members) == 1:
                    h, rd, tr, _ = members[0]
                    summaries = [tr.fit()]  # fit() resumes again from the same checkpoint: idempotent
                else:
                    summaries = GroupTrainer([m[2] for m in members], [m[3] for m in members]).fit()
            except Exception as e:
                for h, rd, _tr, _ in members:
                    _record_failure(rd, e)
                    out[h] = _outcome(
                        h, "failed", (time.perf_counter() - t0) / len(members), f"{type(e).__name__}: {e}"
                    )
                continue
            for (_h, rd, _tr, _), summary in zip(members, summaries):
                rd.write_summary(summary)
            sync_to_disk()  # every file of these runs is on disk before any DONE says so
            for _h, rd, tr, _ in members:
                rd.mark_done()
                apply_keep_policy(rd, tr.s.cfg.train.keep_checkpoints)
            sync_to_disk()
            share = (time.perf_counter() - t0) / len(members)
            for (h, _rd, _tr, _), summary in zip(members, summaries):
                out[h] = _outcome(h, summary["status"], share)
    finally:
        for lock in locks:
            lock.release()
    return [out[r.hash] for r in runs]


def _task_key(cfg: RunConfig, data_dir: str | None) -> tuple:
    """Runs with equal keys have identical task data: `prepare` normalizes the whole dataset per
    run (~0.2 s for MNIST), so a group builds it once and hands it to the others. Label noise
    drawn from the run seed (noise_seed unset) makes the data depend on the seed."""
    seeded = cfg.data.label_noise > 0 and cfg.data.noise_seed is None
    return (cfg.data.model_dump_json(), cfg.seed if seeded else None, cfg.device, str(data_dir))


def _record_failure(rd: RunDir, e: Exception) -> None:
    with suppress(OSError):
        rd.write_error({"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()})


__all__ = ["CompactRunDir", "GroupTrainer", "train_group"]
