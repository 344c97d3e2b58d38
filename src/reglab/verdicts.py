"""Verdicts on a study's claims, from runs paired by seed.

A claim compares two settings on one metric: `a` is expected greater than, less than, or
equivalent to (within ±margin of) `b`. When `a` or `b` lists several settings, the best one by
`select_by` (a validation metric, never the test metric it is judged on, unless the preset says
so) stands for the list. Runs of the two settings that share a seed share their initialization and
data order, so the claim is tested on the per-seed differences d = a - b (paired t, two-sided,
alpha = 0.05):

- greater / less: `reproduced` when the 95 % CI of the mean difference excludes 0 on the claimed
  side, `contradicted` when it excludes 0 on the other side, `inconclusive` otherwise;
- equivalent: `reproduced` when the CI lies inside (-margin, margin), `contradicted` when it lies
  entirely outside it, `inconclusive` otherwise (p from the two one-sided tests);
- `not testable at this budget` when the runs are shorter than the regime the claim is about
  (`min_steps`), kept apart from inconclusive; `not determined` when fewer than two seeds pair up.

An inconclusive verdict says the smallest difference the run could have detected (80 % power at
the observed spread) and how many seeds would detect the study's own effect. With several claims,
Holm-adjusted p-values are given beside the raw ones. Study numbers are in the study's units;
`scale` converts ours to them (study 2 counts spectral energy as 2 x the nuclear norms: scale 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from scipy import stats

from .errors import ConfigError

EXPECT = ("greater", "less", "equivalent")
KINDS = ("outcome", "mechanism")
ALPHA = 0.05
POWER = 0.8

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_TESTABLE = "not testable at this budget"
NOT_DETERMINED = "not determined"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    metric: str
    expect: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    kind: str = "outcome"
    margin: float | None = None
    """equivalent: the largest |a - b| (metric units) still counted as no difference."""
    select_by: str | None = None
    """Metric that picks the best setting of a list (default: the claim's metric)."""
    study_a: float | None = None
    study_b: float | None = None
    """The study's own numbers for a and b, in the study's units."""
    scale: float = 1.0
    """Our metric x scale is in the study's units."""
    study_note: str = ""
    min_steps: int | None = None
    """The claim is about runs of at least this many steps."""

    @property
    def study_diff(self) -> float | None:
        """The study's effect a - b, in our units."""
        if self.study_a is None or self.study_b is None:
            return None
        return (self.study_a - self.study_b) / self.scale

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Claim:
        """A claim from a preset's YAML, every field checked (errors name `where`.field)."""
        if not isinstance(d, dict):
            raise ConfigError(where, "must be a mapping with id, text, metric, expect, a and b")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", "unknown key", sorted(known))
        for key in ("id", "text", "metric", "a", "b"):
            if key not in d:
                raise ConfigError(f"{where}.{key}", "is required")
        expect = d.get("expect", "greater")
        if expect not in EXPECT:
            raise ConfigError(f"{where}.expect", f"unknown direction {expect!r}", EXPECT)
        kind = d.get("kind", "outcome")
        if kind not in KINDS:
            raise ConfigError(f"{where}.kind", f"unknown kind {kind!r}", KINDS)
        margin = d.get("margin")
        if expect == "equivalent" and not (isinstance(margin, int | float) and margin > 0):
            raise ConfigError(f"{where}.margin", "an equivalence claim needs a margin > 0 (metric units)")

        def labels(key: str) -> tuple[str, ...]:
            v = d[key]
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{where}.{key}", "must be a setting label or a list of them")
            return tuple(v)

        def number(key: str) -> float | None:
            v = d.get(key)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v)):
                raise ConfigError(f"{where}.{key}", f"must be a finite number, got {v!r}")
            return None if v is None else float(v)

        scale = number("scale")
        if scale is not None and scale <= 0:
            raise ConfigError(f"{where}.scale", "must be > 0")
        min_steps = d.get("min_steps")
        if min_steps is not None and not (isinstance(min_steps, int) and min_steps > 0):
            raise ConfigError(f"{where}.min_steps", "must be a positive integer")
        return cls(
            id=str(d["id"]),
            text=str(d["text"]),
            metric=str(d["metric"]),
            expect=expect,
            a=labels("a"),
            b=labels("b"),
            kind=kind,
            margin=None if margin is None else float(margin),
            select_by=d.get("select_by"),
            study_a=number("study_a"),
            study_b=number("study_b"),
            scale=1.0 if scale is None else scale,
            study_note=str(d.get("study_note", "")),
            min_steps=min_steps,
        )


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    a: str = ""
    b: str = ""
    n: int = 0
    a_mean: float = math.nan
    b_mean: float = math.nan
    diff_mean: float = math.nan
    diff_lo: float = math.nan
    diff_hi: float = math.nan
    p_value: float = math.nan
    p_holm: float = math.nan
    detectable: float | None = None
    """Smallest |difference| these seeds detect with 80 % power at the observed spread."""
    seeds_needed: int | None = None
    """Seeds that would detect the study's own effect with 80 % power at the observed spread."""
    study_diff_inside: bool | None = None
    """Whether the study's difference lies inside our 95 % CI."""
    notes: list[str] = field(default_factory=list)


def _best(runs: pd.DataFrame, labels: tuple[str, ...], by: str, pick_max: bool) -> str | None:
    have = runs[runs["setting"].isin(labels)]
    if have.empty or by not in have.columns:
        return None
    means = have.groupby("setting")[by].apply(lambda s: pd.to_numeric(s, errors="coerce").mean()).dropna()
    if means.empty:
        return None
    return str(means.idxmax() if pick_max else means.idxmin())


def _paired(runs: pd.DataFrame, metric: str, a: str, b: str) -> pd.Series:
    """Per-seed differences a - b over the seeds both settings finished (one run per seed each)."""
    ra = runs[runs["setting"] == a].drop_duplicates("seed").set_index("seed")[metric]
    rb = runs[runs["setting"] == b].drop_duplicates("seed").set_index("seed")[metric]
    both = ra.index.intersection(rb.index)
    d = pd.to_numeric(ra[both], errors="coerce") - pd.to_numeric(rb[both], errors="coerce")
    return d.dropna().sort_index()


def _detectable(sd: float, n: int) -> float:
    if n < 2:
        return math.nan
    return float((stats.t.ppf(1 - ALPHA / 2, n - 1) + stats.t.ppf(POWER, n - 1)) * sd / math.sqrt(n))


def _seeds_needed(sd: float, effect: float, limit: int = 100_000) -> int | None:
    """Smallest n >= 2 whose detectable difference is at most |effect| (None when beyond limit);
    the detectable difference falls as n grows, so the search is a bisection."""
    if effect == 0 or not math.isfinite(effect):
        return None
    if sd == 0:
        return 2
    if _detectable(sd, limit) > abs(effect):
        return None
    lo, hi = 2, limit  # invariant: detectable(hi) <= |effect|
    if _detectable(sd, lo) <= abs(effect):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _detectable(sd, mid) <= abs(effect):
            hi = mid
        else:
            lo = mid
    return hi


def judge(claim: Claim, runs: pd.DataFrame) -> Verdict:
    """The verdict on one claim from labelled runs (columns: setting, seed, the metrics, steps,
    and status: diverged runs are left out, and the verdict says how many)."""
    left_out: list[str] = []
    if "status" in runs.columns:
        bad = runs[(runs["status"] != "done") & runs["setting"].isin(claim.a + claim.b)]
        for label, n in bad.groupby("setting").size().items():
            left_out.append(f"{n} {bad[bad['setting'] == label]['status'].iloc[0]} run(s) of {label} left out")
        runs = runs[runs["status"] == "done"]
    v = _judge(claim, runs)
    v.notes = left_out + v.notes
    return v


def _judge(claim: Claim, runs: pd.DataFrame) -> Verdict:
    pick_max = claim.expect != "less"
    by = claim.select_by or claim.metric
    a = _best(runs, claim.a, by, pick_max)
    b = _best(runs, claim.b, by, pick_max)
    if a is None or b is None:
        missing = ", ".join(claim.a if a is None else claim.b)
        return Verdict(claim, NOT_DETERMINED, notes=[f"no finished run of {missing} has {by}"])
    v = Verdict(claim, NOT_DETERMINED, a=a, b=b)
    if claim.min_steps is not None and "steps" in runs.columns:
        mine = runs[runs["setting"].isin([a, b])]
        longest = pd.to_numeric(mine["steps"], errors="coerce").max()
        if not longest >= claim.min_steps:
            v.verdict = NOT_TESTABLE
            v.notes.append(f"the claim is about {claim.min_steps:,} steps; these runs stop at {int(longest):,}")
            return v
    if claim.metric not in runs.columns:
        v.notes.append(f"no run has {claim.metric}")
        return v
    d = _paired(runs, claim.metric, a, b)
    v.n = len(d)
    v.a_mean = float(pd.to_numeric(runs.loc[runs["setting"] == a, claim.metric], errors="coerce").mean())
    v.b_mean = float(pd.to_numeric(runs.loc[runs["setting"] == b, claim.metric], errors="coerce").mean())
    if v.n < 2:
        v.notes.append(f"{v.n} seed(s) pair up between {a} and {b}; a paired test needs 2")
        return v
    mean, sd = float(d.mean()), float(d.std(ddof=1)) if d.nunique() > 1 else 0.0
    se = sd / math.sqrt(v.n)
    half = float(stats.t.ppf(1 - ALPHA / 2, v.n - 1)) * se
    v.diff_mean, v.diff_lo, v.diff_hi = mean, mean - half, mean + half
    dof = v.n - 1
    if claim.expect == "equivalent":
        m = float(claim.margin or 0.0)
        if se == 0:
            v.p_value = 0.0 if abs(mean) < m else 1.0
        else:
            v.p_value = float(max(stats.t.sf((mean + m) / se, dof), stats.t.cdf((mean - m) / se, dof)))
        if v.diff_lo > -m and v.diff_hi < m:
            v.verdict = REPRODUCED
        elif v.diff_lo >= m or v.diff_hi <= -m:
            v.verdict = CONTRADICTED
        else:
            v.verdict = INCONCLUSIVE
            v.notes.append(f"the 95 % CI does not fit inside the ±{m:g} margin ({claim.metric} units)")
    else:
        v.p_value = (0.0 if mean != 0 else 1.0) if se == 0 else float(2 * stats.t.sf(abs(mean) / se, dof))
        sign = 1 if claim.expect == "greater" else -1
        if sign * v.diff_lo > 0 and sign * v.diff_hi > 0:
            v.verdict = REPRODUCED
        elif sign * v.diff_lo < 0 and sign * v.diff_hi < 0:
            v.verdict = CONTRADICTED
        else:
            v.verdict = INCONCLUSIVE
        v.detectable = _detectable(sd, v.n)
        effect = claim.study_diff
        if v.verdict == INCONCLUSIVE and effect is not None:
            v.seeds_needed = _seeds_needed(sd, effect)
    if claim.study_diff is not None:
        v.study_diff_inside = v.diff_lo <= claim.study_diff <= v.diff_hi
    return v


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values (NaN stays NaN and does not count)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(order)
    out = [math.nan] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def judge_all(claims: list[Claim], runs: pd.DataFrame) -> list[Verdict]:
    """Verdicts on every claim of a study, with Holm-adjusted p-values across them."""
    verdicts = [judge(c, runs) for c in claims]
    for v, p in zip(verdicts, holm([v.p_value for v in verdicts])):
        v.p_holm = p
    return verdicts


def parse_claims(meta: dict, where: str = "reproduce") -> list[Claim]:
    """The claims of a preset's reproduce block (`claims:` list; a single legacy `claim:` too)."""
    raw = meta.get("claims")
    if raw is None and "claim" in meta:
        one = dict(meta["claim"])
        one.setdefault("id", "claim")
        return [Claim.from_dict(one, f"{where}.claim")]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}.claims", "must be a non-empty list of claims")
    claims = [Claim.from_dict(c, f"{where}.claims.{i}") for i, c in enumerate(raw)]
    ids = [c.id for c in claims]
    dup = next((x for x in ids if ids.count(x) > 1), None)
    if dup is not None:
        raise ConfigError(f"{where}.claims", f"claim id {dup!r} is used twice")
    return claims
