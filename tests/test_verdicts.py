"""Verdicts on claims from constructed results: every branch, and the statistics against
independent computations (scipy's paired t-test, the noncentral t power of the detectable
difference, Holm's procedure by hand)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reglab.errors import ConfigError
from reglab.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_DETERMINED,
    NOT_TESTABLE,
    REPRODUCED,
    Claim,
    _detectable,
    _seeds_needed,
    holm,
    judge,
    judge_all,
    parse_claims,
)


def runs(
    settings: dict[str, list[float]], metric: str = "test_acc", steps: int = 1000, extra: dict | None = None
) -> pd.DataFrame:
    rows = []
    for label, values in settings.items():
        for seed, v in enumerate(values):
            row = {"setting": label, "seed": seed, metric: v, "steps": steps}
            for k, vals in (extra or {}).get(label, {}).items():
                row[k] = vals[seed]
            rows.append(row)
    return pd.DataFrame(rows)


def claim(**kw) -> Claim:
    base = {"id": "c", "text": "a beats b", "metric": "test_acc", "expect": "greater", "a": "a", "b": "b"}
    return Claim.from_dict({**base, **kw}, "reproduce.claims.0")


BASE = [0.90, 0.92, 0.91, 0.93, 0.89]
NOISE = [0.001, -0.002, 0.0015, -0.001, 0.0005]


def shifted(by: float, noise=NOISE) -> list[float]:
    return [b + by + e for b, e in zip(BASE, noise)]


def test_reproduced_greater_and_the_paired_statistics_match_scipy():
    r = runs({"a": shifted(0.01), "b": BASE})
    v = judge(claim(), r)
    assert v.verdict == REPRODUCED and v.n == 5 and (v.a, v.b) == ("a", "b")
    t = stats.ttest_rel(r[r.setting == "a"]["test_acc"], r[r.setting == "b"]["test_acc"])
    assert v.p_value == pytest.approx(t.pvalue, rel=1e-9)
    d = np.array(shifted(0.01)) - np.array(BASE)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (v.diff_lo, v.diff_hi) == pytest.approx((d.mean() - half, d.mean() + half))


def test_contradicted_when_the_interval_excludes_zero_the_other_way():
    assert judge(claim(), runs({"a": shifted(-0.01), "b": BASE})).verdict == CONTRADICTED
    assert judge(claim(expect="less"), runs({"a": shifted(0.01), "b": BASE})).verdict == CONTRADICTED


def test_less_reproduced():
    assert judge(claim(expect="less"), runs({"a": shifted(-0.01), "b": BASE})).verdict == REPRODUCED


def test_inconclusive_reports_the_detectable_difference_and_the_seeds_needed():
    noisy = [0.02, -0.03, 0.025, -0.01, 0.0]
    v = judge(claim(study_a=0.973, study_b=0.969), runs({"a": shifted(0.001, noisy), "b": BASE}))
    assert v.verdict == INCONCLUSIVE
    sd = float(np.std(noisy, ddof=1))
    assert v.detectable == pytest.approx(_detectable(sd, 5))
    # Independent check of the detectable difference: a paired t-test has ~80 % power there
    # (noncentral t with noncentrality delta sqrt(n) / sd).
    for n in (5, 10, 30):
        delta = _detectable(sd, n)
        crit = stats.t.ppf(0.975, n - 1)
        nc = delta * math.sqrt(n) / sd
        power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
        assert 0.75 < power < 0.85, (n, power)
    need = v.seeds_needed
    assert need is not None and _detectable(sd, need) <= 0.004 < _detectable(sd, need - 1)
    assert v.study_diff_inside is True  # the study's +0.4 point lies in our wide interval


def test_equivalence_branches():
    eq = {"expect": "equivalent", "margin": 0.01}
    assert judge(claim(**eq), runs({"a": shifted(0.0), "b": BASE})).verdict == REPRODUCED
    assert judge(claim(**eq), runs({"a": shifted(0.03), "b": BASE})).verdict == CONTRADICTED
    assert judge(claim(**eq), runs({"a": shifted(-0.03), "b": BASE})).verdict == CONTRADICTED
    wide = [0.02, -0.03, 0.025, -0.01, 0.0]
    v = judge(claim(**eq), runs({"a": shifted(0.0, wide), "b": BASE}))
    assert v.verdict == INCONCLUSIVE
    # TOST p: the larger of the two one-sided p-values
    d = np.array(shifted(0.0, wide)) - np.array(BASE)
    se = d.std(ddof=1) / math.sqrt(5)
    p = max(stats.t.sf((d.mean() + 0.01) / se, 4), stats.t.cdf((d.mean() - 0.01) / se, 4))
    assert v.p_value == pytest.approx(p)


def test_not_testable_at_this_budget_is_kept_apart():
    v = judge(claim(min_steps=100_000), runs({"a": shifted(0.01), "b": BASE}, steps=30_000))
    assert v.verdict == NOT_TESTABLE and "100,000" in v.notes[0]
    assert judge(claim(min_steps=30_000), runs({"a": shifted(0.01), "b": BASE}, steps=30_000)).verdict == REPRODUCED


def test_not_determined_without_two_paired_seeds_or_without_runs():
    assert judge(claim(), runs({"a": [0.9], "b": [0.8]})).verdict == NOT_DETERMINED
    assert judge(claim(), runs({"a": shifted(0.01)})).verdict == NOT_DETERMINED


def test_the_best_of_a_list_is_chosen_on_validation_never_on_test():
    # b1 has the better test accuracy, b2 the better validation accuracy: b2 stands for the list.
    r = runs(
        {"a": shifted(0.02), "b1": shifted(0.015), "b2": BASE},
        extra={"a": {"val_acc": BASE}, "b1": {"val_acc": [0.5] * 5}, "b2": {"val_acc": [0.95] * 5}},
    )
    r["val_acc"] = r["val_acc"].astype(float)
    v = judge(claim(b=["b1", "b2"], select_by="val_acc"), r)
    assert v.b == "b2" and v.verdict == REPRODUCED


def test_holm_against_the_procedure_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, math.nan, 0.6]) == pytest.approx([1.0, math.nan, 1.0], nan_ok=True)
    vs = judge_all([claim(id="x"), claim(id="y", expect="less")], runs({"a": shifted(0.01), "b": BASE}))
    assert vs[0].p_holm == pytest.approx(min(1.0, 2 * min(v.p_value for v in vs)))


def test_study_scale_converts_our_numbers_to_the_studys():
    c = claim(metric="nuclear_norm_sum", expect="less", study_a=582, study_b=880, scale=2)
    assert c.study_diff == pytest.approx(-149)
    v = judge(
        c,
        runs({"a": [291 + e for e in (1, -2, 0, 1, 0)], "b": [440 + e for e in (0, 1, -1, 2, 0)]}, "nuclear_norm_sum"),
    )
    assert v.verdict == REPRODUCED and v.study_diff_inside is True


def test_seeds_needed_edge_cases():
    assert _seeds_needed(0.0, 0.01) == 2
    assert _seeds_needed(1.0, 0.0) is None
    assert _seeds_needed(1.0, 1e-9, limit=1000) is None


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"colour": "red"}, "reproduce.claims.0.colour"),
        ({"expect": "bigger"}, "reproduce.claims.0.expect"),
        ({"expect": "equivalent"}, "reproduce.claims.0.margin"),
        ({"a": []}, "reproduce.claims.0.a"),
        ({"study_a": float("inf")}, "reproduce.claims.0.study_a"),
        ({"min_steps": -3}, "reproduce.claims.0.min_steps"),
    ],
)
def test_malformed_claims_are_config_errors_naming_the_field(bad, field):
    with pytest.raises(ConfigError) as e:
        claim(**bad)
    assert e.value.field == field


def test_parse_claims_accepts_the_legacy_single_claim_and_refuses_duplicate_ids():
    legacy = {"claim": {"text": "t", "metric": "m", "expect": "less", "a": ["x"], "b": ["y"]}}
    (c,) = parse_claims(legacy)
    assert c.id == "claim" and c.a == ("x",)
    one = {"id": "d", "text": "t", "metric": "m", "a": "x", "b": "y"}
    with pytest.raises(ConfigError, match="used twice"):
        parse_claims({"claims": [one, one]})


def test_diverged_runs_are_left_out_and_said():
    r = runs({"a": shifted(0.01), "b": BASE})
    r["status"] = "done"
    r.loc[(r.setting == "a") & (r.seed == 1), "status"] = "diverged"
    v = judge(claim(), r)
    assert v.n == 4 and v.verdict == REPRODUCED
    assert v.notes[0] == "1 diverged run(s) of a left out"
