"""Claims about something other than a run's final value: derived metrics read from a run's logs
(NAME@STEP, plateau_step, last_change_step/epoch) against hand-traced values, universal claims
(every run below/above a bound) and contrasts (a - a_minus against b - b_minus, seed by seed)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy import stats

from reglab import derived
from reglab.errors import ConfigError
from reglab.verdicts import CONTRADICTED, NOT_DETERMINED, NOT_TESTABLE, REPRODUCED, Claim, judge


def write_run(path, evals, steps=None, steps_done=None, steps_per_epoch=None):
    path.mkdir(parents=True)
    (path / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    if steps is not None:
        (path / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    summary = {"steps": steps_done if steps_done is not None else evals[-1]["step"], "steps_per_epoch": steps_per_epoch}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


CURVE = [(0, 10.0), (1000, 4.0), (2000, 1.3), (3000, 1.04), (4000, 1.02), (5000, 1.0)]


def evals_of(curve, name="obj"):
    return [{"step": s, "epoch": s / 1000, name: v} for s, v in curve]


def test_value_at_step_is_the_last_evaluation_at_or_before_it(tmp_path):
    rd = write_run(tmp_path / "r", evals_of(CURVE), steps_done=5000)
    assert derived.derive_one(rd, "obj@2000") == 1.3
    assert derived.derive_one(rd, "obj@2500") == 1.3  # between evaluations: the one before
    assert derived.derive_one(rd, "obj@5000") == 1.0
    assert math.isnan(derived.derive_one(rd, "obj@6000"))  # the run never got there
    assert math.isnan(derived.derive_one(rd, "missing@1000"))


def test_plateau_step_is_the_first_evaluation_within_five_percent_of_the_final_value(tmp_path):
    rd = write_run(tmp_path / "r", evals_of(CURVE))
    # |1.04 - 1.0| = 0.04 <= 0.05 * 1.0 at step 3000; 1.3 at 2000 is 30 % away.
    assert derived.derive_one(rd, "plateau_step(obj)") == 3000
    # a curve that dips into the band and leaves it still counts its first entry (the study's reading)
    flat = write_run(tmp_path / "f", evals_of([(0, 5.0), (10, 5.0)]))
    assert derived.derive_one(flat, "plateau_step(obj)") == 0


def test_last_change_reads_the_per_step_log_and_converts_to_epochs(tmp_path):
    lam = [0.1] * 35 + [0.01] * 20 + [0.001] * 45  # changes at steps 35 and 55
    steps = [{"step": i, "epoch": i // 78, "lam.l2": v} for i, v in enumerate(lam)]
    rd = write_run(tmp_path / "r", [{"step": 99, "epoch": 1, "test_acc": 0.5}], steps, steps_per_epoch=78)
    assert derived.derive_one(rd, "last_change_step(lam.l2)") == 55
    assert derived.derive_one(rd, "last_change_epoch(lam.l2)") == pytest.approx(55 / 78)
    never = write_run(
        tmp_path / "n", [{"step": 9, "lam.l2": 0.1}], [{"step": i, "lam.l2": 0.1} for i in range(10)], 10, 5
    )
    assert derived.derive_one(never, "last_change_step(lam.l2)") == 0


def test_a_torn_last_log_line_is_skipped(tmp_path):
    rd = write_run(tmp_path / "r", evals_of(CURVE))
    with open(rd / "evals.jsonl", "a") as f:
        f.write('{"step": 6000, "obj": 0.')
    assert derived.derive_one(rd, "plateau_step(obj)") == 3000


def test_derive_adds_columns_only_for_derived_metrics(tmp_path):
    a = write_run(tmp_path / "a", evals_of(CURVE))
    frame = pd.DataFrame({"path": [str(a)], "obj": [1.0]})
    out = derived.derive(frame, ["obj", "obj@1000", "plateau_step(obj)"])
    assert list(out.columns) == ["path", "obj", "obj@1000", "plateau_step(obj)"]
    assert out.loc[0, "obj@1000"] == 4.0 and out.loc[0, "plateau_step(obj)"] == 3000
    assert "obj@1000" not in frame  # the caller's frame is left alone


@pytest.mark.parametrize("bad", ["obj@", "obj@x", "plateau(obj)", "plateau_step(obj", "obj@10@20"])
def test_a_malformed_derived_metric_is_refused_naming_the_field(bad):
    with pytest.raises(ConfigError, match=r"reproduce\.claims\.0\.metric: cannot read"):
        Claim.from_dict({"id": "c", "text": "t", "metric": bad, "a": "a", "b": "b"}, "reproduce.claims.0")


def test_a_claim_at_a_step_is_not_testable_on_shorter_runs():
    c = Claim.from_dict({"id": "c", "text": "t", "metric": "obj@30000", "expect": "less", "a": "a", "b": "b"}, "w")
    assert c.min_steps == 30000
    r = pd.DataFrame([{"setting": s, "seed": i, "steps": 20000, "obj@30000": math.nan} for s in "ab" for i in range(3)])
    v = judge(c, r)
    assert v.verdict == NOT_TESTABLE and "these runs stop at 20,000" in v.notes[0]


def universal(**kw) -> Claim:
    base = {
        "id": "u",
        "text": "every change in epoch 0",
        "metric": "m",
        "expect": "below",
        "value": 1.0,
        "a": ["x", "y"],
    }
    return Claim.from_dict({**base, **kw}, "reproduce.claims.0")


def frame(values: dict[str, list[float]], metric="m") -> pd.DataFrame:
    rows = [
        {"setting": k, "seed": i, metric: v, "steps": 10, "status": "done"}
        for k, vs in values.items()
        for i, v in enumerate(vs)
    ]
    return pd.DataFrame(rows)


def test_a_universal_claim_holds_only_when_every_run_respects_the_bound():
    v = judge(universal(), frame({"x": [0.2, 0.7], "y": [0.99, 0.1], "z": [5.0]}))
    assert v.verdict == REPRODUCED and v.n == 4 and "4 of 4 runs below 1" in v.notes[-1]
    v = judge(universal(), frame({"x": [0.2, 0.7], "y": [1.0, 0.1]}))  # 1.0 is not below 1.0
    assert v.verdict == CONTRADICTED and "3 of 4 runs below 1" in v.notes[-1]
    v = judge(universal(expect="above", value=0.15), frame({"x": [0.2, 0.7], "y": [0.99, 0.1]}))
    assert v.verdict == CONTRADICTED
    assert judge(universal(), frame({"z": [0.1]})).verdict == NOT_DETERMINED


def test_a_universal_claim_is_checked_when_read():
    with pytest.raises(ConfigError, match=r"claims\.0\.value"):
        universal(value=None)
    with pytest.raises(ConfigError, match=r"claims\.0\.b: a 'below' claim is about the runs of a alone"):
        universal(b="z")


def test_a_contrast_is_tested_on_the_per_seed_differences_of_differences():
    clean_a, noisy_a = [0.90, 0.91, 0.92, 0.89], [0.88, 0.90, 0.90, 0.88]
    clean_b, noisy_b = [0.91, 0.90, 0.93, 0.90], [0.85, 0.86, 0.88, 0.86]
    r = frame({"a1": noisy_a, "a0": clean_a, "b1": noisy_b, "b0": clean_b}, metric="test_acc")
    c = Claim.from_dict(
        {"id": "c", "text": "t", "metric": "test_acc", "expect": "greater",
         "a": "a1", "a_minus": "a0", "b": "b1", "b_minus": "b0"}, "w",
    )  # fmt: skip
    v = judge(c, r)
    d = [(na - ca) - (nb - cb) for na, ca, nb, cb in zip(noisy_a, clean_a, noisy_b, clean_b)]
    t = stats.ttest_1samp(d, 0.0)
    assert v.n == 4 and v.diff_mean == pytest.approx(sum(d) / 4) and v.p_value == pytest.approx(t.pvalue)
    assert v.a_mean == pytest.approx(sum(n - c for n, c in zip(noisy_a, clean_a)) / 4)
    assert v.verdict == REPRODUCED and v.a == "(a1 − a0)"


def test_a_contrast_needs_single_labels_and_both_sides():
    base = {"id": "c", "text": "t", "metric": "m", "a": "a1", "b": "b1"}
    with pytest.raises(ConfigError, match=r"w\.b_minus: a contrast needs both"):
        Claim.from_dict({**base, "a_minus": "a0"}, "w")
    with pytest.raises(ConfigError, match=r"w\.a: with a_minus, a must be one setting label"):
        Claim.from_dict({**base, "a": ["a1", "a2"], "a_minus": "a0", "b_minus": "b0"}, "w")
