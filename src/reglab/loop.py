"""The training loop, written once: one run, or a group of runs stepped together.

`train_runs(trainers, stepper)` drives runs that stand at the same step. Each run's
bookkeeping is its `train.Trainer` (logs, evaluation, best checkpoint, early stopping,
checkpoints, the end of training); the `Stepper` does the optimizer step itself:
`OneModelStep` below for one run, `vectorized.trainer.GroupStep` for a group whose models are
stacked and stepped with torch.func. Everything else happens here, the same for both:

    per epoch: each run draws its data order from its own generator
    per step:  stepper.step (loss + lam * R, backward, pre-step, optimizer, prox, after-step)
               -> lambda schedules that asked measure the batch (one device sync for all runs)
               -> lr schedules stepped per iteration -> the step's log row is kept
    then:      epoch rollover (lr schedules stepped per epoch); a block of log rows is written
               every FLUSH_EVERY steps (the NaN/inf guard); at each evaluation point every run
               evaluates and checkpoints; a run that diverged or stopped early finishes at once
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from .evaluation import correct
from .observers import StopTraining
from .provenance import ONE_BY_ONE
from .regularizers import StepContext
from .runtime import deterministic_algorithms
from .store import sync_to_disk

if TYPE_CHECKING:
    from .build import Setup
    from .train import Trainer

FLUSH_EVERY = 50
"""Steps between writes of the per-step log (and NaN checks)."""


@dataclass
class StepResult:
    """What one step of M runs (M = 1 one by one) leaves for the bookkeeping."""

    data_loss: torch.Tensor
    """[M]: each run's data loss on its batch (detached), in the model's precision (float32
    under train.precision bf16 too: the loss is cast up before the penalties join it)."""
    log_values: torch.Tensor
    """[M, K] float: data loss, total loss, then each penalty term's R (the log row's values)."""
    outputs: list[torch.Tensor]
    """Each run's network outputs on its batch (detached)."""
    targets: list[torch.Tensor]
    """Each run's batch targets."""
    lrs: list[float]
    """The learning rate each run stepped with."""


class Stepper(Protocol):
    path: str
    """The compute path recorded in the runs' provenance (reglab.provenance)."""

    def begin_epoch(self, perms: list[torch.Tensor | None]) -> None:
        """Each run's data order for the epoch (None for a run that has finished)."""

    def step(self, step: int, epoch: int, batch_in_epoch: int, active: list[bool]) -> StepResult:
        """One optimizer step of every run, on batch `batch_in_epoch` of its order."""

    def before_checkpoint(self, i: int) -> None:
        """Bring run i's torch objects up to date before its checkpoint is written."""


class OneModelStep:
    """The step of one run: forward, data loss, + sum of lam * R, backward, the regularization's
    hooks around the optimizer step (reglab.regularization), monitors that follow steps.

    train.precision bf16: only the forward and the data loss run under autocast (Setup's
    forward_context); the loss is cast to float32, the penalties are computed outside autocast
    on the float32 weights, and backward, optimizer and hooks see float32 parameters and
    gradients. train.channels_last: each batch is made channels-last (Setup.as_input)."""

    path = ONE_BY_ONE

    def __init__(self, setup: Setup):
        self.s = setup
        self.perm: torch.Tensor | None = None

    def begin_epoch(self, perms: list[torch.Tensor | None]) -> None:
        self.perm = perms[0]

    def step(self, step: int, epoch: int, batch_in_epoch: int, active: list[bool]) -> StepResult:
        s = self.s
        assert self.perm is not None
        bs = s.cfg.train.batch_size
        idx = self.perm[batch_in_epoch * bs : (batch_in_epoch + 1) * bs]
        x, y = s.data.x_train[idx], s.data.y_train[idx]
        if s.data.augment is not None:
            x = s.data.augment(x, s.aug_gen)
        return self.train_on(s.as_input(x), y, step, epoch)

    def train_on(self, x: torch.Tensor, y: torch.Tensor, step: int, epoch: int) -> StepResult:
        """The step on the batch (x, y)."""
        s, reg = self.s, self.s.regularization
        model, opt = s.model, s.optimizer
        if s.mixed_precision:
            with s.forward_context():
                out = model(x)
                data_loss = s.loss_fn(out, y)
            data_loss = data_loss.float()
        else:
            out = model(x)
            data_loss = s.loss_fn(out, y)
        ctx = StepContext(step, x, y, out, data_loss, s.loss_fn, epoch=epoch) if len(reg) else None
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
        if s.step_monitors:  # monitors whose measurements accumulate over steps (path energy)
            mctx = ctx or StepContext(step, x, y, out, data_loss, s.loss_fn, epoch=epoch)
            for monitor in s.step_monitors:
                monitor.after_step(model, mctx)
        row = torch.stack([v.detach().float() for v in (data_loss, total, *values)])
        return StepResult(data_loss.detach()[None], row[None], [out.detach()], [y], [lr])

    def before_checkpoint(self, i: int) -> None:
        pass


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


def step_lr_schedule(sched) -> None:
    """Step a run's lr schedule. In a group the run's torch optimizer never steps itself (the
    stacked optimizer does the work), so torch's "lr_scheduler.step() before optimizer.step()"
    warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=re.escape("Detected call of `lr_scheduler.step()` before `optimizer.step()`")
        )
        sched.step()


def train_runs(trainers: list[Trainer], stepper: Stepper, resumed: list[bool], progress: bool = False) -> list[dict]:
    """Train the runs of `trainers` (each resumed or fresh, all at the same step) to the end of
    their budgets; return each run's summary (reglab.train.Trainer.finish). With
    train.deterministic, torch runs deterministic algorithms throughout (runtime)."""
    s = trainers[0].s
    with deterministic_algorithms(s.cfg.train.deterministic, s.device):
        return _train_runs(trainers, stepper, resumed, progress)


def _train_runs(  # noqa: C901 -- the loop, read top to bottom; each branch is one line of the docstring
    trainers: list[Trainer], stepper: Stepper, resumed: list[bool], progress: bool
) -> list[dict]:
    M = len(trainers)
    steps = {tr.step for tr in trainers}
    if len(steps) != 1:
        raise ValueError(f"runs trained together must stand at the same step, got {sorted(steps)}")
    cfg = trainers[0].s.cfg
    for tr, was_resumed in zip(trainers, resumed):
        tr.start_observers()
        if not was_resumed and cfg.train.eval_at_start:
            tr.evaluate_now()
    t0 = time.perf_counter()
    for tr in trainers:
        tr.clock_start = t0
        tr.begin_segment(stepper.path, M)
    start_step = trainers[0].step
    active = [True] * M
    summaries: list[dict | None] = [None] * M

    def finish(i: int) -> None:
        tr = trainers[i]
        tr.elapsed += time.perf_counter() - t0
        tr.clock_start = None
        if not (resumed[i] and tr.step == start_step):
            stepper.before_checkpoint(i)
            tr.save_trained_state()
        summaries[i] = tr.finish()
        active[i] = False

    def finish_stopped() -> None:
        for i, tr in enumerate(trainers):
            if active[i] and (tr.diverged_at is not None or tr.stopped_early):
                finish(i)

    def flush() -> None:
        for i, tr in enumerate(trainers):
            if active[i]:
                tr.flush_log()

    finish_stopped()  # a run resumed from the state it diverged or stopped in only finishes
    first = trainers[0]
    total_steps, spe = first.s.total_steps, first.s.steps_per_epoch
    n, log_every = first.s.data.x_train.shape[0], cfg.train.log_every
    step, epoch, bie = first.step, first.epoch, first.batch_in_epoch
    bar = RunProgress(total_steps, step, enabled=progress and M == 1, label=cfg.name)
    new_epoch = True
    while step < total_steps and any(active):
        if new_epoch:
            for i, tr in enumerate(trainers):
                if tr.perm is None and active[i]:
                    tr.perm = torch.randperm(n, generator=tr.s.data_gen, device=tr.s.device)
            stepper.begin_epoch([tr.perm if active[i] else None for i, tr in enumerate(trainers)])
            new_epoch = False
        res = stepper.step(step, epoch, bie, active)
        lams = [tr.s.regularization.lams for tr in trainers]  # the step's lambdas, before any measurement
        _measure(trainers, active, res, step, bie)
        for i, tr in enumerate(trainers):
            if not active[i]:
                continue
            if tr.s.lr_sched is not None and cfg.lr_schedule.unit == "iteration":
                step_lr_schedule(tr.s.lr_sched)
            if step % log_every == 0:
                tr.pending_rows.append((step, epoch, res.lrs[i], lams[i], res.log_values[i]))
        step += 1
        bie += 1
        end_of_epoch = bie >= spe
        if end_of_epoch:
            epoch += 1
            bie = 0
            new_epoch = True
        for i, tr in enumerate(trainers):
            tr.step, tr.epoch, tr.batch_in_epoch = step, epoch, bie
            if end_of_epoch:
                tr.perm = None
                if active[i] and tr.s.lr_sched is not None and cfg.lr_schedule.unit == "epoch":
                    step_lr_schedule(tr.s.lr_sched)
        bar.update(step, first.last_eval)
        if any(active[i] and len(tr.pending_rows) >= FLUSH_EVERY for i, tr in enumerate(trainers)):
            flush()
            finish_stopped()
        if first.eval_due(end_of_epoch) or step == total_steps:
            flush()
            finish_stopped()
            saved = False
            for i, tr in enumerate(trainers):
                if not active[i]:
                    continue
                try:
                    tr.evaluate_now()
                except StopTraining:  # an observer ends the run (a pruned trial): resumable from here
                    stepper.before_checkpoint(i)
                    tr.save_resume_point(time.perf_counter() - t0)
                    raise
                if tr.n_evals % cfg.train.checkpoint_every == 0 and step < total_steps:
                    stepper.before_checkpoint(i)
                    tr.save_resume_point(time.perf_counter() - t0)
                    saved = True
            if saved and not first.rd.sync:
                sync_to_disk()  # runs whose directories do not sync each file: once for all
            finish_stopped()
    flush()
    bar.close()
    for i in range(M):
        if active[i]:
            finish(i)
    return [s for s in summaries if s is not None]


def _measure(trainers: list[Trainer], active: list[bool], res: StepResult, step: int, bie: int) -> None:
    """The lambda schedules that asked at this step see their run's batch loss and accuracy,
    read with one device sync for all runs."""
    asking = [tr.s.regularization.wanting_measurement(step, bie) if active[i] else [] for i, tr in enumerate(trainers)]
    if not any(asking):
        return
    task = trainers[0].s.data.task
    corr = torch.stack([correct(out, y, task) for out, y in zip(res.outputs, res.targets)])
    vals = torch.stack([res.data_loss.double(), corr.double()], dim=1).tolist()
    for i, tr in enumerate(trainers):
        if asking[i]:
            n = res.targets[i].shape[0]
            metrics = {"train_loss": vals[i][0], "train_acc": vals[i][1] / n, "epoch_step": bie}
            tr.s.regularization.measure(step, metrics, asking[i])


class RunProgress:
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
