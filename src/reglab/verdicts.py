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
- below / above (a claim about every run of `a`, no `b`): `reproduced` when every finished run's
  value lies below (above) `value`, `contradicted` when any does not: one counter-example refutes
  a universal claim;
- `not testable at this budget` when the runs are shorter than the regime the claim is about
  (`min_steps`, or STEP of a `NAME@STEP` metric), kept apart from inconclusive; `not determined`
  when fewer than two seeds pair up.

With `a_minus` (and `b_minus`) the claim is about a contrast: a's value is, seed by seed, the
metric of `a` minus that of `a_minus` (study 1: the accuracy lost to label noise is the clean
run's accuracy minus the noisy run's). The metric may be derived from the logs (reglab.derived).

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

from . import derived
from .errors import ConfigError

EXPECT = ("greater", "less", "equivalent", "below", "above")
UNIVERSAL = ("below", "above")
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
    value: float | None = None
    """below / above: the bound every run of `a` must respect."""
    a_minus: str | None = None
    b_minus: str | None = None
    """Contrasts: a's value is metric(a) - metric(a_minus), seed by seed (likewise b)."""

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
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", "unknown key", sorted(cls.__dataclass_fields__))
        r = _ClaimReader(d, where)
        expect = r.choice("expect", "greater", EXPECT, "direction")
        universal = expect in UNIVERSAL
        for key in ("id", "text", "metric", "a") + (() if universal else ("b",)):
            r.require(key)
        margin = r.number("margin")
        if expect == "equivalent" and not (margin is not None and margin > 0):
            raise ConfigError(f"{where}.margin", "an equivalence claim needs a margin > 0 (metric units)")
        value = r.number("value")
        if universal:
            if "b" in d:
                raise ConfigError(f"{where}.b", f"a {expect!r} claim is about the runs of a alone")
            if value is None:
                raise ConfigError(
                    f"{where}.value", f"a {expect!r} claim needs a finite value to compare every run with"
                )
        metric = str(d["metric"])
        try:
            derived.parse(metric)
        except ValueError as e:
            raise ConfigError(f"{where}.metric", str(e)) from None
        scale = r.number("scale")
        if scale is not None and scale <= 0:
            raise ConfigError(f"{where}.scale", "must be > 0")
        min_steps = d.get("min_steps")
        if min_steps is not None and not (isinstance(min_steps, int) and min_steps > 0):
            raise ConfigError(f"{where}.min_steps", "must be a positive integer")
        a, b = r.labels("a"), (() if universal else r.labels("b"))
        a_minus, b_minus = r.contrast(universal, a, b)
        return cls(
            id=str(d["id"]),
            text=str(d["text"]),
            metric=metric,
            expect=expect,
            a=a,
            b=b,
            kind=r.choice("kind", "outcome", KINDS, "kind"),
            margin=margin,
            select_by=d.get("select_by"),
            study_a=r.number("study_a"),
            study_b=r.number("study_b"),
            scale=1.0 if scale is None else scale,
            study_note=str(d.get("study_note", "")),
            min_steps=min_steps if min_steps is not None else derived.required_steps(metric),
            value=value,
            a_minus=a_minus,
            b_minus=b_minus,
        )


class _ClaimReader:
    """Checked reads of one claim's YAML mapping; errors name `where`.field."""

    def __init__(self, d: dict, where: str):
        self.d, self.where = d, where

    def require(self, key: str) -> None:
        if key not in self.d:
            raise ConfigError(f"{self.where}.{key}", "is required")

    def choice(self, key: str, default: str, allowed: tuple[str, ...], what: str) -> str:
        v = self.d.get(key, default)
        if v not in allowed:
            raise ConfigError(f"{self.where}.{key}", f"unknown {what} {v!r}", allowed)
        return v

    def number(self, key: str) -> float | None:
        v = self.d.get(key)
        if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
            raise ConfigError(f"{self.where}.{key}", f"must be a finite number, got {v!r}")
        return None if v is None else float(v)

    def labels(self, key: str) -> tuple[str, ...]:
        v = self.d.get(key, [])
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{self.where}.{key}", "must be a setting label or a list of them")
        return tuple(v)

    def contrast(self, universal: bool, a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str | None, str | None]:
        """(a_minus, b_minus): both or neither, each one label, with a and b one label each."""
        out: list[str | None] = []
        for key, side, of in (("a_minus", a, "a"), ("b_minus", b, "b")):
            v = self.d.get(key)
            if v is not None:
                if not isinstance(v, str) or universal:
                    raise ConfigError(f"{self.where}.{key}", "must be one setting label (and the claim a comparison)")
                if len(side) != 1:
                    raise ConfigError(f"{self.where}.{of}", f"with {key}, {of} must be one setting label")
            out.append(v)
        if (out[0] is None) != (out[1] is None):
            raise ConfigError(f"{self.where}.b_minus", "a contrast needs both a_minus and b_minus")
        return out[0], out[1]


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


def _per_seed(runs: pd.DataFrame, metric: str, label: str, minus: str | None = None) -> pd.Series:
    """A setting's metric by seed (one run per seed), or its contrast with `minus` seed by seed."""
    r = runs[runs["setting"] == label].drop_duplicates("seed").set_index("seed")[metric]
    r = pd.to_numeric(r, errors="coerce")
    if minus is not None:
        r = r - _per_seed(runs, metric, minus)
    return r.dropna().sort_index()


def _paired(runs: pd.DataFrame, claim: Claim, a: str, b: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(a by seed, b by seed, per-seed differences a - b over the seeds both have)."""
    ra = _per_seed(runs, claim.metric, a, claim.a_minus)
    rb = _per_seed(runs, claim.metric, b, claim.b_minus)
    both = ra.index.intersection(rb.index)
    return ra, rb, (ra[both] - rb[both]).dropna().sort_index()


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


def _testable(claim: Claim, runs: pd.DataFrame, labels: list[str], v: Verdict) -> bool:
    """False (and v says why) when the runs stop short of the steps the claim is about."""
    if claim.min_steps is None or "steps" not in runs.columns:
        return True
    longest = pd.to_numeric(runs.loc[runs["setting"].isin(labels), "steps"], errors="coerce").max()
    if longest >= claim.min_steps:
        return True
    v.verdict = NOT_TESTABLE
    stop = "never ran" if pd.isna(longest) else f"stop at {int(longest):,}"
    v.notes.append(f"the claim is about {claim.min_steps:,} steps; these runs {stop}")
    return False


def _judge_universal(claim: Claim, runs: pd.DataFrame) -> Verdict:
    """below / above: every finished run of every setting in `a` against claim.value."""
    v = Verdict(claim, NOT_DETERMINED, a=", ".join(claim.a))
    if not _testable(claim, runs, list(claim.a), v):
        return v
    mine = runs[runs["setting"].isin(claim.a)]
    values = pd.to_numeric(mine[claim.metric], errors="coerce") if claim.metric in mine else pd.Series(dtype=float)
    values = values.dropna()
    if values.empty:
        v.notes.append(f"no finished run of {v.a} has {claim.metric}")
        return v
    bound = float(claim.value)  # type: ignore[arg-type]
    holds = values < bound if claim.expect == "below" else values > bound
    v.n = len(values)
    v.a_mean = float(values.mean())
    v.verdict = REPRODUCED if bool(holds.all()) else CONTRADICTED
    v.notes.append(
        f"{int(holds.sum())} of {v.n} runs {claim.expect} {bound:g} (range {values.min():g} to {values.max():g})"
    )
    return v


def _test_equivalence(claim: Claim, v: Verdict, se: float) -> None:
    """TOST against ±margin: reproduced when the 95 % CI lies inside it."""
    m, mean, dof = float(claim.margin or 0.0), v.diff_mean, v.n - 1
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


def _test_direction(claim: Claim, v: Verdict, sd: float, se: float) -> None:
    """Paired two-sided t: reproduced / contradicted when the CI excludes 0 on one side."""
    mean, dof = v.diff_mean, v.n - 1
    v.p_value = (0.0 if mean != 0 else 1.0) if se == 0 else float(2 * stats.t.sf(abs(mean) / se, dof))
    sign = 1 if claim.expect == "greater" else -1
    if sign * v.diff_lo > 0 and sign * v.diff_hi > 0:
        v.verdict = REPRODUCED
    elif sign * v.diff_lo < 0 and sign * v.diff_hi < 0:
        v.verdict = CONTRADICTED
    else:
        v.verdict = INCONCLUSIVE
    v.detectable = _detectable(sd, v.n)
    if sd == 0 and mean == 0:
        v.notes.append(f"identical in every one of the {v.n} seed pairs")
    effect = claim.study_diff
    if v.verdict == INCONCLUSIVE and effect is not None:
        v.seeds_needed = _seeds_needed(sd, effect)


def _judge(claim: Claim, runs: pd.DataFrame) -> Verdict:
    if claim.expect in UNIVERSAL:
        return _judge_universal(claim, runs)
    pick_max = claim.expect != "less"
    by = claim.select_by or claim.metric
    v = Verdict(claim, NOT_DETERMINED, a=", ".join(claim.a), b=", ".join(claim.b))
    if not _testable(claim, runs, list(claim.a + claim.b), v):
        return v
    a = _best(runs, claim.a, by, pick_max)
    b = _best(runs, claim.b, by, pick_max)
    if a is None or b is None:
        missing = ", ".join(claim.a if a is None else claim.b)
        return Verdict(claim, NOT_DETERMINED, notes=[f"no finished run of {missing} has {by}"])
    v.a, v.b = a, b
    if claim.metric not in runs.columns:
        v.notes.append(f"no run has {claim.metric}")
        return v
    ra, rb, d = _paired(runs, claim, a, b)
    if claim.a_minus is not None:
        v.a, v.b = f"({a} − {claim.a_minus})", f"({b} − {claim.b_minus})"
    v.n = len(d)
    v.a_mean, v.b_mean = float(ra.mean()), float(rb.mean())
    if v.n < 2:
        v.notes.append(f"{v.n} seed(s) pair up between {a} and {b}; a paired test needs 2")
        return v
    mean, sd = float(d.mean()), float(d.std(ddof=1)) if d.nunique() > 1 else 0.0
    se = sd / math.sqrt(v.n)
    half = float(stats.t.ppf(1 - ALPHA / 2, v.n - 1)) * se
    v.diff_mean, v.diff_lo, v.diff_hi = mean, mean - half, mean + half
    if claim.expect == "equivalent":
        _test_equivalence(claim, v, se)
    else:
        _test_direction(claim, v, sd, se)
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
