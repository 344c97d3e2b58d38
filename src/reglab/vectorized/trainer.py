"""The group step: M compatible runs trained at once, each run directory written exactly as
the one-by-one trainer writes it.

Every run gets its own `Setup` from `reglab.build.prepare` (its seed, its model init, its
regularizers with their setup, its lambda schedules, its torch optimizer and lr schedule, its
data generator) and its own `train.Trainer` over its own run directory. The group stacks the
models' parameters (model i's parameters become views of slice i, see
functional.StackedModels) and `GroupStep` replaces only the optimizer step: one vmapped
forward + loss + penalty, one backward, one functional optimizer step for all models. The loop
around it (data orders, measurements, lr schedules, logging, evaluation, checkpoints, the end
of training) is reglab.loop's `train_runs`, the same as one by one.

Per model and per step, in the one-by-one order: data order from the run's own generator
(a [M, B] index tensor; when every run drew the same order, as runs of one seed do, one shared
batch for all), its pre-step hooks (decoupled weight decay, a loop over models like the prox
steps), the optimizer step with the run's own lr (read from its torch optimizer, which its lr
schedule drives), then for each model its prox steps and after_step hooks (its Regularization's
own, acting on the views, in place).

A run that diverges (NaN/inf loss found at a flush, as one by one) is finished at that moment,
exactly as alone; the group keeps computing its (discarded) slice until the end.
"""

from __future__ import annotations

import time
import traceback
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..analysis_stage import analyze_trained
from ..build import Setup, prepare
from ..loop import StepResult, train_runs
from ..observers import RunObserver
from ..provenance import VECTORIZED
from ..prune import apply_keep_policy
from ..regularizers import Regularizer, StepContext
from ..store import RunDir, RunLock, sync_to_disk
from ..tracking import observers_for
from ..train import Trainer, config_record
from .functional import GroupObjective, StackedModels, VmappedStep, apply_effects, stack_state, stateful_attributes
from .grouping import why_not_group_step
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


def _overrides_after_step(reg: Regularizer) -> bool:
    return type(reg).after_step is not Regularizer.after_step


class GroupStep:
    """One optimizer step of the M runs of `setups`, through their stacked parameters (a
    reglab.loop Stepper)."""

    path = VECTORIZED

    def __init__(self, setups: list[Setup]):
        self.setups = setups
        s0 = setups[0]
        why = why_not_group_step(s0.cfg)  # plan_groups never groups these runs
        if why is not None:
            raise ValueError(f"these runs cannot train as a vectorized group: {why}")
        self.M = len(setups)
        regs0 = [t.reg for t in s0.terms]
        self.objective = GroupObjective(s0.model, regs0, s0.loss_fn)  # a template: copied before stacking
        self.stack = StackedModels([s.model for s in setups])
        self.trainable = self.stack.trainable()
        self.opt = StackedOptimizer(s0.cfg.optim, self.trainable)
        self.opt.import_from([s.optimizer for s in setups])
        self.vstep = VmappedStep(self.objective)
        self.state_attrs = [stateful_attributes(r) if r.has_penalty else [] for r in regs0]
        self.has_pre_step = any(r.has_pre_step for r in regs0)
        self.has_post_step = any(r.has_prox or _overrides_after_step(r) for r in regs0)
        self.needs_context = any(_overrides_after_step(r) for r in regs0)
        self.perms: torch.Tensor | None = None
        self.shared = False
        self._lam_rows: list[tuple[float, ...]] = []
        self._lams = self._lam_tensor()

    def _lam_tensor(self) -> torch.Tensor:
        self._lam_rows = [s.regularization.lams for s in self.setups]
        dev = self.setups[0].device
        return torch.tensor(self._lam_rows, dtype=torch.float32, device=dev).reshape(self.M, -1)

    def _states(self) -> list[dict]:
        return [
            stack_state([s.terms[k].reg for s in self.setups], attrs) if attrs else {}
            for k, attrs in enumerate(self.state_attrs)
        ]

    def begin_epoch(self, perms: list[torch.Tensor | None]) -> None:
        n, dev = self.setups[0].data.x_train.shape[0], self.setups[0].device
        self.perms = torch.stack([p if p is not None else torch.arange(n, device=dev) for p in perms])
        self.shared = bool((self.perms == self.perms[:1]).all())  # one data order for all (one seed)

    def step(self, step: int, epoch: int, batch_in_epoch: int, active: list[bool]) -> StepResult:
        assert self.perms is not None
        s0 = self.setups[0]
        x_all, y_all, bs = s0.data.x_train, s0.data.y_train, s0.cfg.train.batch_size
        if [s.regularization.lams for s in self.setups] != self._lam_rows:  # a schedule changed a lam
            self._lams = self._lam_tensor()
        i0 = batch_in_epoch * bs
        params, states = self.stack.params, self._states()
        if self.shared:
            idx = self.perms[0, i0 : i0 + bs]
            xb, yb = x_all[idx], y_all[idx]
            totals, data_loss, outs, pens, effects = self.vstep(params, xb, yb, self._lams, states, step, shared=True)
            x, y = xb.expand(self.M, *xb.shape), yb.expand(self.M, *yb.shape)  # views, per model
        else:
            idx = self.perms[:, i0 : i0 + bs]
            x, y = x_all[idx], y_all[idx]
            totals, data_loss, outs, pens, effects = self.vstep(params, x, y, self._lams, states, step)
        apply_effects(self.objective, effects, [[t.reg for t in s.terms] for s in self.setups])
        grads = torch.autograd.grad(totals.sum(), self.trainable)
        lrs = [s.optimizer.param_groups[0]["lr"] for s in self.setups]
        # the hooks around the optimizer step are each run's own Regularization's, on its slice
        if self.has_pre_step:
            for i, s in enumerate(self.setups):
                if active[i]:
                    s.regularization.before_optimizer_step(s.model, lrs[i])
        self.opt.step(list(grads), lrs)
        if self.has_post_step:
            for i, s in enumerate(self.setups):
                if not active[i]:
                    continue
                ctx = None
                if self.needs_context:
                    ctx = StepContext(step, x[i], y[i], outs[i].detach(), data_loss[i].detach(), s.loss_fn, epoch=epoch)
                s.regularization.after_optimizer_step(s.model, lrs[i], ctx)
        data_loss = data_loss.detach()
        rows = torch.cat([data_loss[:, None], totals.detach()[:, None], pens.detach()], dim=1).float()
        outs = outs.detach()
        return StepResult(data_loss, rows, [outs[i] for i in range(self.M)], [y[i] for i in range(self.M)], lrs)

    def before_checkpoint(self, i: int) -> None:
        self.opt.export_to(i, self.setups[i].optimizer)


def train_together(trainers: list[Trainer], resumed: list[bool]) -> list[dict]:
    """Train the runs of `trainers` (each resumed or fresh, all at the same step) as one group;
    return one summary per run, each marked with the group's size."""
    summaries = train_runs(trainers, GroupStep([t.s for t in trainers]), resumed)
    for summary in summaries:
        summary["vectorized"] = {"group_size": len(trainers)}
    return summaries


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
    observers: list[RunObserver] = []  # every run's trackers (reglab.tracking), closed at the end
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
                trackers = observers_for(cfg, rd.path)  # a missing tracker package stops here
                observers += trackers
                if not rd.exists():
                    rd.create(config_record(cfg))
                rd.clear_error()
                rd.remove_stale_temporaries()
                tr = Trainer(setup, rd, progress=False, observers=trackers)
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
                    summaries = train_together([m[2] for m in members], [m[3] for m in members])
                for (_h, rd, tr, _), summary in zip(members, summaries):
                    analyze_trained(tr.s, rd, summary)
                    for o in tr.observers:
                        o.on_finish(summary)
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
        for o in observers:
            with suppress(Exception):  # one tracker failing to close must not hide the runs' outcomes
                o.close()
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


__all__ = ["CompactRunDir", "GroupStep", "train_group", "train_together"]
