"""AutoL2 / AdvanceL2 lambda schedules, checked on hand-traced measurement sequences.

Every expected lambda list below was worked out by hand from the rules in
seed-studies.md §3.5 / §3.7 (the traces are in the comments), not computed by the code under
test. Unless said otherwise: lam0 = 0.1, factor 10, delay 0.1, so the first change needs
step > 0.1/0.1 = 1, and after a decay to 0.01 the next needs step > 10 + step_of_change.
Notation in comments: t<k> = k-th measurement, m = running min loss, M = running max accuracy.
"""

from __future__ import annotations

import io
import random

import pytest
import torch

from reglab.config import ScheduleConfig
from reglab.errors import ConfigError
from reglab.schedules import SCHEDULES, build_schedule


def make(name: str, lam0: float = 0.1, **opts):
    return build_schedule(ScheduleConfig(name=name, **opts), lam0)


def run(sched, seq) -> list[float]:
    """Feed (step, loss, acc[, epoch_step]) measurements; lam after each one."""
    lams = []
    for item in seq:
        step, loss, acc = item[:3]
        metrics = {"train_loss": loss, "train_acc": acc}
        metrics["epoch_step"] = item[3] if len(item) > 3 else step
        sched.observe(step, metrics)
        lams.append(sched.lam)
    return lams


def steps10(pairs):
    """Measurements at steps 9, 19, 29, ... (every = 10)."""
    return [(10 * k + 9, loss, acc) for k, (loss, acc) in enumerate(pairs)]


# ------------------------------------------------------------------------------ registry, options


def test_registered():
    assert "autol2" in SCHEDULES and "advance_l2" in SCHEDULES


def test_defaults():
    s = make("autol2")
    o = s.options
    assert (o.every, o.factor, o.delay, o.threshold, o.min_lam, o.max_lam, o.compat) == (
        10,
        10.0,
        0.1,
        0.0,
        None,
        None,
        False,
    )


@pytest.mark.parametrize(
    "opts",
    [
        {"every": 0},
        {"factor": 1.0},
        {"factor": 0.5},
        {"threshold": -1.0},
        {"delay": -0.1},
        {"min_lam": 0.1, "max_lam": 0.01},
        {"bogus": 1},
    ],
)
def test_invalid_options(opts):
    with pytest.raises(ConfigError):
        make("autol2", **opts)


def test_wants_measurement_every_k():
    s = make("autol2", every=5)
    assert [st for st in range(20) if s.wants_measurement(st)] == [4, 9, 14, 19]


def test_compat_needs_epoch_step():
    s = make("autol2", compat=True)
    with pytest.raises(ValueError, match="epoch_step"):
        s.observe(9, {"train_loss": 1.0, "train_acc": 0.5})


# ------------------------------------------------------------------------------ autol2 (official)


def test_no_decay_in_first_two_measurements_then_decay():
    # t1 (1.0, .5) n=1: nothing.  t2 (2.0, .4) n=2: worse, but n > 2 required -> refresh m=1, M=.5.
    # t3 (3.0, .3): 3 >= 1 and 2 >= 1 -> decay 0.1 -> 0.01.
    s = make("autol2")
    assert run(s, steps10([(1.0, 0.5), (2.0, 0.4), (3.0, 0.3)])) == [0.1, 0.1, 0.01]


def test_decay_after_two_non_improving_losses():
    # t2: refresh m=2.0, M=0.1.  t3 (1.0,.3): not worse -> refresh (1.5,.2): m=1.5, M=.2.
    # t4 (1.6,.25): loss 1.6>=1.5 but prev 1.0<1.5; acc .25>.2 -> refresh (1.0,.3): m=1.0, M=.3.
    # t5 (1.2,.35): loss 1.2>=1.0 and 1.6>=1.0 -> decay (accuracy .35 > .3 improved: loss alone).
    s = make("autol2")
    lams = run(s, steps10([(2.0, 0.1), (1.5, 0.2), (1.0, 0.3), (1.6, 0.25), (1.2, 0.35)]))
    assert lams == [0.1, 0.1, 0.1, 0.1, 0.01]


def test_decay_triggered_by_accuracy_alone():
    # loss falls throughout. t2: m=2.0, M=.5.  t3 (1.6,.55): .55 > .5 -> refresh (1.8,.6): M=.6.
    # t4 (1.4,.58): .58<=.6 and .55<=.6 -> decay.
    s = make("autol2")
    lams = run(s, steps10([(2.0, 0.5), (1.8, 0.6), (1.6, 0.55), (1.4, 0.58)]))
    assert lams == [0.1, 0.1, 0.1, 0.01]


def test_improvements_in_between_prevent_decay():
    # alternating worse / better: never two worse in a row for either metric.
    # t2: m=1.0, M=.5; t3 (.9,.6) better -> refresh (1.2,.4): m=1.0, M=.5
    # t4 (1.1,.45): worse, prev better -> refresh (.9,.6): m=.9, M=.6
    # t5 (.8,.7) better -> refresh (1.1,.45); t6 (1.0,.5): worse, prev (.8,.7) better.
    s = make("autol2")
    lams = run(s, steps10([(1.0, 0.5), (1.2, 0.4), (0.9, 0.6), (1.1, 0.45), (0.8, 0.7), (1.0, 0.5)]))
    assert lams == [0.1] * 6


def test_refractory_period_blocks_second_decay():
    # every=5: steps 4, 9, 14, ...; loss rises, m stays 1.0.
    # t3 step 14: decay -> 0.01, next change needs step > 0.1/0.01 + 14 = 24.
    # t4 step 19 blocked; t5 step 24 blocked (24 > 24 false); t6 step 29: decay -> 0.001,
    # next needs step > 100 + 29; t7 step 34 blocked.
    s = make("autol2", every=5)
    seq = [(5 * k + 4, 1.0 + k, 0.5) for k in range(7)]
    assert run(s, seq) == [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001]


def test_initial_refractory_uses_delay_over_lam0():
    # delay=1.0, lam0=0.1: no change until step > 10. Measurements at steps 0..3 (every=1),
    # rising loss: t3 step 2 and t4 step 3 are blocked, m keeps refreshing; ... t12 step 11 decays.
    s = make("autol2", every=1, delay=1.0)
    seq = [(k, 1.0 + k, 0.5) for k in range(12)]
    assert run(s, seq) == [0.1] * 11 + [0.01]


def test_threshold_tolerates_small_worsening():
    # accuracy rises throughout, loss 3 % above m = 1.0.
    # p=5: 1.03 >= 1.05 false -> never decays.  p=0: t3: 1.03 >= 1.0 twice -> decay at step 29;
    # t4 step 39 blocked (needs > 10 + 29).
    pairs = [(1.0, 0.5), (1.03, 0.6), (1.03, 0.7), (1.03, 0.8)]
    assert run(make("autol2", threshold=5.0), steps10(pairs)) == [0.1, 0.1, 0.1, 0.1]
    assert run(make("autol2", threshold=0.0), steps10(pairs)) == [0.1, 0.1, 0.01, 0.01]


def test_threshold_decays_on_large_worsening():
    # p=5, loss 6 % above m = 1.0: 1.06 >= 1.05 twice -> decay at t3.
    pairs = [(1.0, 0.5), (1.06, 0.6), (1.06, 0.7)]
    assert run(make("autol2", threshold=5.0), steps10(pairs)) == [0.1, 0.1, 0.01]


def test_threshold_on_accuracy():
    # p=10, loss falls. t2: M=.5. t3 (.7,.48): .48*1.1=.528 <= .5 false -> refresh from t2: M=.5
    # t4 (.6, .44): .44*1.1=.484 <= .5 but prev .48*1.1=.528 <= .5 false -> no.  t5 (.5, .45): .495 <= .5
    # and .484 <= .5 -> decay.  (p=0 would decay at t3: .48 <= .5 and .5 <= .5.)
    pairs = [(0.9, 0.5), (0.8, 0.5), (0.7, 0.48), (0.6, 0.44), (0.5, 0.45)]
    assert run(make("autol2", threshold=10.0), steps10(pairs)) == [0.1, 0.1, 0.1, 0.1, 0.01]
    assert run(make("autol2"), steps10(pairs))[:3] == [0.1, 0.1, 0.01]


def test_min_lam_clips_and_then_holds():
    # rising loss at steps 9, 19, ...: t3 step 29 -> 0.01 (next > 39); t4 step 39 blocked;
    # t5 step 49 -> 0.001 clipped to 0.005 (next > 0.1/0.005 + 49 = 69); t6, t7 blocked;
    # t8 step 79 would decay but min_lam leaves no move -> stays 0.005.
    s = make("autol2", min_lam=0.005)
    seq = [(10 * k + 9, 1.0 + k, 0.5) for k in range(8)]
    assert run(s, seq) == [0.1, 0.1, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005]


def test_history_and_measurements():
    s = make("autol2")
    run(s, steps10([(1.0, 0.5), (2.0, 0.4), (3.0, 0.3)]))
    assert s.history == [(0, 0.1), (9, 0.1), (19, 0.1), (29, 0.01)]
    assert s.measurements == [(9, 1.0, 0.5, 0.1), (19, 2.0, 0.4, 0.1), (29, 3.0, 0.3, 0.01)]


# ------------------------------------------------------------------------------ advance_l2 (official)


def test_advance_increases_then_resets_reference():
    # t2 (1.5,.4): m=2.0, M=.5.
    # t3 (1.0,.6): not worse (acc .6 > .5); loss 2>=1.0 and 2>=1.5 improved -> lam 1.0;
    #   reset m=L2=1.5, M=A2=.4 (a refresh would have kept M=.5).
    # t4 (1.6,.45) step 39 > 0.1/1 + 29: loss worse once only; acc: .4<=.45 and .4<=.6 improved
    #   -> lam 10 (needs the reset M=.4); reset m=1.0, M=.6.
    # t5 (1.2,.5): loss 1.2>=1.0 and 1.6>=1.0 -> decay to 1.0.
    s = make("advance_l2")
    lams = run(s, steps10([(2.0, 0.5), (1.5, 0.4), (1.0, 0.6)]))
    assert lams == [0.1, 0.1, 1.0]
    assert (s.m, s.M) == (1.5, 0.4)
    lams += run(s, [(39, 1.6, 0.45), (49, 1.2, 0.5)])
    assert lams == [0.1, 0.1, 1.0, 10.0, 1.0]


def test_advance_ties_worsening_wins():
    # p=0, constant measurements: both predicates hold at t3 -> decay.
    s = make("advance_l2")
    assert run(s, steps10([(1.0, 0.5)] * 3)) == [0.1, 0.1, 0.01]


def test_advance_max_lam_clips():
    # t3 (1.0,.3): improved -> 1.0 clipped to 0.5; reset m=1.5, M=.2.
    # t4 step 39 > 0.2 + 29: (0.8,.4) improved again, but max_lam leaves no move -> 0.5.
    s = make("advance_l2", max_lam=0.5)
    assert run(s, steps10([(2.0, 0.1), (1.5, 0.2), (1.0, 0.3), (0.8, 0.4)])) == [0.1, 0.1, 0.5, 0.5]


def test_advance_refractory_blocks_increase():
    # delay=5: first change needs step > 50. Improving at every measurement: t3..t5 (steps 29..49)
    # blocked; t6 step 59 increases to 1.0 (next needs step > 5/1 + 59 = 64); t7 step 69 -> 10.
    s = make("advance_l2", delay=5.0)
    pairs = [(2.0 - 0.1 * k, 0.1 + 0.05 * k) for k in range(7)]
    assert run(s, steps10(pairs)) == [0.1, 0.1, 0.1, 0.1, 0.1, 1.0, 10.0]


# ------------------------------------------------------------------------------ compat (study 3)

C01 = 0.1 * 0.1  # 0.010000000000000002: compat decays as the study's code does, lam * 0.1


def test_compat_or_then_and_differs_from_official():
    # t2: m=1.0, M=.5.  t3 (.8,.7) better -> refresh (.9,.6): m=.9, M=.6.
    # t4 (.7,.55): acc down only (.55<=.6), prev t3 not worse -> refresh (.8,.7): m=.8, M=.7.
    # t5 (.95,.8): loss up (.95>=.8), acc up.  t4 had loss down, acc down (.55<=.7).
    # official: loss twice? t4 no. acc twice? t5 no -> no decay.
    # compat: inc(t5) by loss, inc(t4) by accuracy -> decay.
    pairs = [(1.0, 0.5), (0.9, 0.6), (0.8, 0.7), (0.7, 0.55), (0.95, 0.8)]
    assert run(make("autol2"), steps10(pairs)) == [0.1, 0.1, 0.1, 0.1, 0.1]
    assert run(make("autol2", compat=True), steps10(pairs)) == [0.1, 0.1, 0.1, 0.1, C01]


def test_compat_uses_in_epoch_index():
    # every=5, 20 batches per epoch: steps 4, 9, 14, ..., in-epoch index i = step % 20; loss rises.
    # both: t3 step 14 (i 14) -> 0.01, cool-down ends at 10 + 14 = 24.
    # official: t6 step 29 > 24 -> 0.001.  compat: i never exceeds 19 -> frozen at 0.01.
    seq = [(5 * k + 4, 1.0 + k, 0.5, (5 * k + 4) % 20) for k in range(8)]
    assert run(make("autol2", every=5), seq) == [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
    assert run(make("autol2", every=5, compat=True), seq) == [0.1, 0.1] + [C01] * 6


def test_compat_measures_on_the_in_epoch_cadence():
    # 23 batches an epoch, every 5: the study measures at in-epoch i = 4, 9, 14, 19 of each epoch
    # (global steps 27, 32, ... in the second), the official rule at global steps 4, 9, ..., 44.
    comp, off = make("autol2", every=5, compat=True), make("autol2", every=5)
    steps = range(46)
    assert [st for st in steps if comp.wants_measurement(st, st % 23)] == [4, 9, 14, 19, 27, 32, 37, 42]
    assert [st for st in steps if off.wants_measurement(st, st % 23)] == list(range(4, 46, 5))


def test_compat_changes_lambda_with_the_study_arithmetic():
    # Study 3 decays with lam * 0.1: from 0.1, lam = 0.010000000000000002 then 0.0010000000000000002,
    # so 0.1 / lam = 9.999999999999998 and 99.99999999999999, and "i - i_last > 0.1 / lam" allows
    # the next decay after 10 and 100 batches.  Rising loss at every batch (every = 1, one epoch):
    # decays at i = 2, 12, 112.  With lam / 10 (0.01, 0.001: bounds exactly 10 and 100) it would be
    # 2, 13, 114.
    seq = [(k, 1.0 + k, 0.5, k) for k in range(200)]
    lams = run(make("autol2", every=1, compat=True), seq)
    changes = [i for i in range(1, len(lams)) if lams[i] != lams[i - 1]]
    assert changes == [2, 12, 112]
    assert lams[-1] == 0.1 * 0.1 * 0.1 * 0.1


def test_compat_initial_min_step_is_zero():
    # delay=1.0: official needs step > 1.0/0.1 = 10; study 3 starts with min_step = 0.
    # rising loss at steps 0, 1, 2: compat decays at t3 (i = 2 > 0), official does not.
    seq = [(k, 1.0 + k, 0.5) for k in range(3)]
    assert run(make("autol2", every=1, delay=1.0), seq) == [0.1, 0.1, 0.1]
    assert run(make("autol2", every=1, delay=1.0, compat=True), seq) == [0.1, 0.1, C01]


def test_compat_advance_freezes_reference_outside_cooldown():
    # t2 (.8,.7): m=1.0, M=.5.  t3 (1.2,.3): strictly worse in both, t2 strictly better in both:
    #   neither predicate.  official refreshes (.8,.7): m=.8, M=.7; compat keeps m=1.0, M=.5.
    # t4 (.9,.6) step 39: official: loss .9>=.8 and 1.2>=.8 -> decay to .01 (next > 10 + 39 = 49).
    #   compat: dec(t4) (1.0>=.9), inc(t3) only -> neither, m, M still 1.0, .5.
    # t5 (.95,.55) step 49: official blocked (49 > 49 false) -> refresh.
    #   compat: dec(t5) (1.0>=.95) and dec(t4) -> increase to 1.0, reset m=.9, M=.6.
    pairs = [(1.0, 0.5), (0.8, 0.7), (1.2, 0.3), (0.9, 0.6), (0.95, 0.55)]
    off = make("advance_l2")
    assert run(off, steps10(pairs)) == [0.1, 0.1, 0.1, 0.01, 0.01]
    comp = make("advance_l2", compat=True)
    lams = run(comp, steps10(pairs[:4]))
    assert (comp.m, comp.M) == (1.0, 0.5)
    lams += run(comp, [(49, *pairs[4])])
    assert lams == [0.1, 0.1, 0.1, 0.1, 1.0]
    assert (comp.m, comp.M) == (0.9, 0.6)


# ------------------------------------------------------------------------------ state round trip


def _random_seq(n: int, seed: int):
    rng = random.Random(seed)
    seq, loss, acc = [], 2.0, 0.1
    for k in range(n):
        loss = max(0.01, loss + rng.uniform(-0.15, 0.1))
        acc = min(1.0, max(0.0, acc + rng.uniform(-0.05, 0.06)))
        seq.append((5 * k + 4, loss, acc, (5 * k + 4) % 50))
    return seq


@pytest.mark.parametrize("name", ["autol2", "advance_l2"])
@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("split", [2, 5, 29, 100])
def test_state_round_trip_gives_identical_run(name, compat, split):
    """Stop after `split` measurements (before, between and after the changes of this sequence),
    save through torch.save/torch.load(weights_only=True), resume in a fresh object."""
    opts = {"every": 5, "threshold": 2.0, "min_lam": 1e-6, "compat": compat}
    seq = _random_seq(200, seed=3)
    whole = make(name, **opts)
    lams_whole = run(whole, seq)
    assert len(set(lams_whole)) > 2  # the sequence exercises several changes

    first = make(name, **opts)
    lams = run(first, seq[:split])
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    second = make(name, lam0=123.0, **opts)  # lam0 is overwritten by the state
    second.load_state_dict(state)
    lams += run(second, seq[split:])
    assert lams == lams_whole
    assert second.state_dict() == whole.state_dict()
