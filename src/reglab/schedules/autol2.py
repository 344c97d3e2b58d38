"""AutoL2 and AdvanceL2 lambda schedules (seed-studies.md §3.5, §3.7).

Notation. A *measurement* t is (L_t, A_t): the bare training loss and the accuracy (0..1) of the
batch just used, taken after every ``every``-th optimizer step (when ``(step + 1) % every == 0``).
n counts the measurements so far, the newest included. m is the running minimum of the loss and
M the running maximum of the accuracy; both are *refreshed from the previous measurement*
(m <- min(m, L_{t-1}), M <- max(M, A_{t-1}); on first use m = L_{t-1}, M = A_{t-1}), so they are
undefined until the 2nd measurement. p = ``threshold`` (a percentage), q = 1 + p/100.

Per-metric predicates (the losses are assumed non-negative, as cross-entropy and MSE are):

- loss_worse(L)    := L >= m * q           acc_worse(A)    := A * q <= M
- loss_improved(L) := m >= L * q           acc_improved(A) := M * q <= A

With p = 0, ties count both as "worse" and as "improved", exactly as in the official code
(m <= L, M >= A) and in study 3 (dec uses >= / <=). A threshold p > 0 makes a change *harder*:
the loss must have worsened (improved) by p % relative to m, or the accuracy by p % relative to M.

Two ways to combine them over the newest two measurements:

- official (``compat: false``, google/autol2): per metric, two in a row:
  worsened := (loss_worse(L_t) and loss_worse(L_{t-1})) or (acc_worse(A_t) and acc_worse(A_{t-1}))
  improved := (loss_improved(L_t) and loss_improved(L_{t-1}))
              or (acc_improved(A_t) and acc_improved(A_{t-1}))
- study 3 (``compat: true``): OR inside each measurement, then AND across the two:
  worsened := inc_p(t) and inc_p(t-1), inc_p := loss_worse(L) or acc_worse(A)
  improved := dec_p(t) and dec_p(t-1), dec_p := loss_improved(L) or acc_improved(A)
  (more permissive: "loss up at t, accuracy down at t-1" counts as worsened).

Refractory period: a change is allowed only when clock > cooldown_end. Each change sets
cooldown_end <- delay / lam_new + clock (lam_new after clipping), so between changes this is
"clock > delay / lam + clock_last" with lam the current value. At the start, official mode has
clock_last = 0, i.e. cooldown_end = delay / lam0 (official code); compat mode has study 3's
min_step = 0. The clock is the global optimizer step (the `step` given to `observe`) in official
mode and the *in-epoch* batch index (``metrics["epoch_step"]``) in compat mode, as in study 3.
With lam = 0 nothing can change (lam / factor = lam * factor = 0).

Bounds: a change sets lam <- clip(new, min_lam, max_lam). A change that the bounds would turn
into no move (or a move in the wrong direction, possible only when lam0 lies outside the bounds)
does not happen: lam, the cool-down and the references stay, and the step is treated as one where
no change fired. A config whose starting lam lies outside the bounds is refused (config.py); built
directly, the initial lam0 is not clipped.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from .base import SCHEDULES, LambdaSchedule, ScheduleOptions

Measurement = tuple[float, float]
"""(train_loss, train_acc) of one measurement."""


# ----------------------------------------------------------------------------------------------
# predicates (the math)
# ----------------------------------------------------------------------------------------------


def _q(p: float) -> float:
    """1 + p/100 for a percentage threshold p."""
    return 1.0 + p / 100.0


def loss_worse(loss: float, m: float, p: float) -> bool:
    """L >= m * (1 + p/100): the loss did not improve on the running minimum m (by more than p %)."""
    return loss >= m * _q(p)


def acc_worse(acc: float, M: float, p: float) -> bool:
    """A * (1 + p/100) <= M: the accuracy did not improve on the running maximum M (tolerance p %)."""
    return acc * _q(p) <= M


def loss_improved(loss: float, m: float, p: float) -> bool:
    """m >= L * (1 + p/100): the loss is at or below the running minimum m (by at least p %)."""
    return m >= loss * _q(p)


def acc_improved(acc: float, M: float, p: float) -> bool:
    """M * (1 + p/100) <= A: the accuracy is at or above the running maximum M (by at least p %)."""
    return M * _q(p) <= acc


def worsened_official(cur: Measurement, prev: Measurement, m: float, M: float, p: float) -> bool:
    """Official AutoL2: the loss worse twice in a row, or the accuracy worse twice in a row."""
    return (loss_worse(cur[0], m, p) and loss_worse(prev[0], m, p)) or (
        acc_worse(cur[1], M, p) and acc_worse(prev[1], M, p)
    )


def improved_official(cur: Measurement, prev: Measurement, m: float, M: float, p: float) -> bool:
    """Per-metric counterpart for increases: the loss improved twice in a row, or the accuracy."""
    return (loss_improved(cur[0], m, p) and loss_improved(prev[0], m, p)) or (
        acc_improved(cur[1], M, p) and acc_improved(prev[1], M, p)
    )


def inc_p(meas: Measurement, m: float, M: float, p: float) -> bool:
    """Study 3's inc_p(L, A) := (L >= m q) or (A q <= M): loss or error got worse."""
    return loss_worse(meas[0], m, p) or acc_worse(meas[1], M, p)


def dec_p(meas: Measurement, m: float, M: float, p: float) -> bool:
    """Study 3's dec_p(L, A) := (m >= L q) or (M q <= A): loss or error improved."""
    return loss_improved(meas[0], m, p) or acc_improved(meas[1], M, p)


def worsened_compat(cur: Measurement, prev: Measurement, m: float, M: float, p: float) -> bool:
    """Study 3: inc_p(t) and inc_p(t-1) (OR within a measurement, AND across the two)."""
    return inc_p(cur, m, M, p) and inc_p(prev, m, M, p)


def improved_compat(cur: Measurement, prev: Measurement, m: float, M: float, p: float) -> bool:
    """Study 3: dec_p(t) and dec_p(t-1)."""
    return dec_p(cur, m, M, p) and dec_p(prev, m, M, p)


def _cooldown_end(delay: float, lam: float, clock: float) -> float:
    """delay / lam + clock: the clock must exceed this before the next change (inf when lam == 0)."""
    return delay / lam + clock if lam > 0.0 else float("inf")


def clip(lam: float, lo: float | None, hi: float | None) -> float:
    """lam clipped to [lo, hi]; a None bound is open."""
    if lo is not None:
        lam = max(lam, lo)
    if hi is not None:
        lam = min(lam, hi)
    return lam


# ----------------------------------------------------------------------------------------------
# options
# ----------------------------------------------------------------------------------------------


class AutoL2Options(ScheduleOptions):
    every: int = Field(10, ge=1)
    """Measure after every k-th optimizer step: when (step + 1) % every == 0."""
    factor: float = Field(10.0, gt=1.0, allow_inf_nan=False)
    """Decay lam <- lam / factor; increase (advance_l2) lam <- lam * factor."""
    delay: float = Field(0.1, ge=0.0, allow_inf_nan=False)
    """Refractory period in units of 1/lam steps: no change until clock > delay/lam + clock_last."""
    threshold: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    """Percentage p: a metric must worsen (improve) by p % to count; 0 = the plain rule."""
    min_lam: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    max_lam: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    compat: bool = False
    """Reproduce study 3's code exactly (predicates, in-epoch refractory clock, refresh rules)."""

    @model_validator(mode="after")
    def _bounds_ordered(self):
        if self.min_lam is not None and self.max_lam is not None and self.min_lam > self.max_lam:
            raise ValueError(f"min_lam ({self.min_lam}) must be <= max_lam ({self.max_lam})")
        return self


# ----------------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------------


@SCHEDULES.register("autol2")
class AutoL2(LambdaSchedule):
    """Decrease-only AutoL2 (Lewkowycz & Gur-Ari 2020; official rule of google/autol2, §3.7).

    At each measurement t (n counted with it):
      if n > 2 and clock > cooldown_end and worsened(t, t-1):
          lam <- lam / factor, cooldown_end <- delay/lam + clock
      elif n >= 2:
          m <- min(m, L_{t-1}), M <- max(M, A_{t-1})
    with ``worsened`` = ``worsened_official`` (or ``worsened_compat`` under ``compat``) and the
    thresholds of the module docstring. With threshold p > 0 this is study 3's "method 1".

    ``compat: true`` reproduces study 3's code (§3.5 item 1/2): OR-then-AND predicate and the
    in-epoch batch index (``metrics["epoch_step"]``) as the refractory clock, initial cool-down 0
    instead of delay/lam0. That clock is a bug of
    the study (§3.9 bug 2): once delay/lam exceeds the number of batches per epoch (lam <= 1e-4 with
    delay 0.1 and 391 batches) no change can ever happen again, so lam freezes at about 1e-4. Use
    compat only to reproduce the study's curves (its preset sets every=5; factor 10 is the default).
    The measurement cadence is the study's too: (i + 1) % every == 0 with i the batch's 0-based
    index in its epoch (which restarts each epoch, unlike the global step when the batches per
    epoch are not a multiple of ``every``), and lam changes as the study computes them (lam * 0.1,
    lam / 0.1 for factor 10), whose rounding decides some refractory comparisons.

    State (all in state_dict): lam, history [(step, lam after the measurement)], measurements
    [(step, L, A, lam after)], n, m, M, prev (L_{t-1}, A_{t-1}), clock_last (clock of the last
    change, 0 before any), cooldown_end.
    """

    name = "autol2"
    Options: ClassVar[type[ScheduleOptions]] = AutoL2Options
    options: AutoL2Options

    def __init__(self, lam0: float, options: AutoL2Options):
        super().__init__(lam0, options)
        self.measurements: list[tuple[int, float, float, float]] = []
        """(step, train_loss, train_acc, lam after the update) at every measurement."""
        self.n = 0
        self.m: float | None = None
        self.M: float | None = None
        self.prev: Measurement | None = None
        self.clock_last: float = 0.0
        self.cooldown_end: float = 0.0 if options.compat else _cooldown_end(options.delay, self.lam, 0.0)

    # -------------------------------------------------------------- protocol
    def wants_measurement(self, step: int, epoch_step: int | None = None) -> bool:
        """True when (step + 1) % every == 0; with compat, on the study's in-epoch cadence
        (epoch_step + 1) % every == 0 when the trainer gives the batch's index in its epoch."""
        counter = epoch_step if self.options.compat and epoch_step is not None else step
        return (counter + 1) % self.options.every == 0

    def _decayed(self) -> float:
        """lam / factor; compat multiplies by 1/factor as the study's code does (lam * 0.1), whose
        rounding decides some refractory comparisons (0.1 / (0.1 * 0.1 * 0.1) < 100)."""
        return self.lam * (1.0 / self.options.factor) if self.options.compat else self.lam / self.options.factor

    def _raised(self) -> float:
        """lam * factor; compat divides by 1/factor as the study's code does (lam / 0.1)."""
        return self.lam / (1.0 / self.options.factor) if self.options.compat else self.lam * self.options.factor

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        """Count the measurement, apply the rule (`_update`), then remember it as the previous one."""
        cur = (float(metrics["train_loss"]), float(metrics["train_acc"]))
        clock = self._clock(step, metrics)
        self.n += 1
        self._update(clock, cur)
        self.prev = cur
        self.history.append((step, self.lam))
        self.measurements.append((step, cur[0], cur[1], self.lam))

    # -------------------------------------------------------------- the rule
    def _update(self, clock: float, cur: Measurement) -> None:
        """Decay when allowed and worsened; otherwise refresh m, M (from n >= 2)."""
        if self._may_change(clock) and self._worsened(cur) and self._change(clock, self._decayed()):
            return
        if self.n >= 2:
            self._refresh()

    # -------------------------------------------------------------- pieces
    def _clock(self, step: int, metrics: dict[str, float]) -> float:
        """The refractory clock: the global step, or the in-epoch index under compat."""
        if not self.options.compat:
            return float(step)
        i = metrics.get("epoch_step")
        if i is None:
            raise ValueError(
                f"schedule {self.name} with compat: true needs metrics['epoch_step'] (in-epoch batch index)"
            )
        return float(i)

    def _may_change(self, clock: float) -> bool:
        """n > 2 and clock > cooldown_end (never when lam == 0: nothing to scale)."""
        if self.n <= 2 or self.lam <= 0.0:
            return False
        return clock > self.cooldown_end

    def _worsened(self, cur: Measurement) -> bool:
        # Asked only when n > 2: prev, m and M were set by the earlier measurements.
        assert self.prev is not None and self.m is not None and self.M is not None
        rule = worsened_compat if self.options.compat else worsened_official
        return rule(cur, self.prev, self.m, self.M, self.options.threshold)

    def _improved(self, cur: Measurement) -> bool:
        assert self.prev is not None and self.m is not None and self.M is not None  # as in _worsened
        rule = improved_compat if self.options.compat else improved_official
        return rule(cur, self.prev, self.m, self.M, self.options.threshold)

    def _change(self, clock: float, new: float) -> bool:
        """Set lam <- clip(new), clock_last <- clock, cooldown_end <- delay/lam + clock, unless the
        bounds leave no move in the direction of `new` (then nothing changes; returns False)."""
        target = clip(new, self.options.min_lam, self.options.max_lam)
        same_direction = (target < self.lam) if new < self.lam else (target > self.lam)
        if not same_direction:
            return False
        self.lam = target
        self.clock_last = clock
        self.cooldown_end = _cooldown_end(self.options.delay, target, clock)
        return True

    def _refresh(self) -> None:
        """m <- min(m, L_{t-1}), M <- max(M, A_{t-1}); the first refresh sets them."""
        assert self.prev is not None  # refreshed from n >= 2 on, after a first measurement
        loss, acc = self.prev
        self.m = loss if self.m is None else min(self.m, loss)
        self.M = acc if self.M is None else max(self.M, acc)

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            measurements=[list(x) for x in self.measurements],
            n=self.n,
            m=self.m,
            M=self.M,
            prev=None if self.prev is None else list(self.prev),
            clock_last=self.clock_last,
            cooldown_end=self.cooldown_end,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.measurements = [
            (int(s), float(loss), float(acc), float(lam)) for s, loss, acc, lam in state["measurements"]
        ]
        self.n = int(state["n"])
        self.m = None if state["m"] is None else float(state["m"])
        self.M = None if state["M"] is None else float(state["M"])
        self.prev = None if state["prev"] is None else (float(state["prev"][0]), float(state["prev"][1]))
        self.clock_last = float(state["clock_last"])
        self.cooldown_end = float(state["cooldown_end"])


@SCHEDULES.register("advance_l2")
class AdvanceL2(AutoL2):
    """AdvanceL2 (study 3, methods 2 and 3): AutoL2 that can also raise lam.

    Official mode (``compat: false``), at each measurement t:
      if n > 2 and clock > cooldown_end:
          if worsened(t, t-1):   lam <- lam / factor                                (no refresh)
          elif improved(t, t-1): lam <- lam * factor, m <- L_{t-1}, M <- A_{t-1}    (reset)
          (a change also sets cooldown_end <- delay/lam_new + clock)
      if no change happened and n >= 2: m <- min(m, L_{t-1}), M <- max(M, A_{t-1})
    When both predicates hold (possible with ties at p = 0), worsening wins: lam decays.
    Thresholds as in the module docstring (p > 0 is study 3's method 3).

    ``compat: true`` follows study 3's code literally (§3.5 item 3): OR-then-AND predicates,
    in-epoch refractory clock, and m, M are refreshed only while the refractory period blocks
    (or n = 2): once a change is allowed and neither predicate holds, nothing is refreshed (the
    reference freezes, §3.9 bug 3). See AutoL2 for the compat lam freeze at about 1e-4.
    """

    name = "advance_l2"

    def _update(self, clock: float, cur: Measurement) -> None:
        if self._may_change(clock):
            if self._worsened(cur):
                if self._change(clock, self._decayed()):
                    return
            elif self._improved(cur) and self._change(clock, self._raised()):
                self._reset_reference()
                return
            if self.options.compat:
                return
        if self.n >= 2:
            self._refresh()

    def _reset_reference(self) -> None:
        """After an increase: m <- L_{t-1}, M <- A_{t-1} (as study 3 does)."""
        assert self.prev is not None  # an increase needs n > 2
        self.m, self.M = self.prev
