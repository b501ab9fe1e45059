"""Drift: observations of stories' figures → findings. Pure.

A figure is an interval (DESIGN.md). Observations are grouped by (story,
metric, period, unit kind) and then by subject: two subjects belong together
when they name a common organisation ("Scale AI" and "Meta → Scale AI"), so
an outlet that writes the buyer too still meets one that names only the
target, while "OpenAI" and "Meta → Scale AI" stay apart. Inside a group, two
observations from different outlets diverge when the gap between their
intervals exceeds the unit kind's relative tolerance times the larger
magnitude.

Money in different currencies is compared only through the user's rate table
(``[drift.rates]``); without a rate the group is ``not_comparable``, never
diverging. Revisions — an article's own figure changing between its versions —
are a separate kind of finding.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from pipeline.models import Finding, Observation

if TYPE_CHECKING:
    from pipeline.settings import Settings

_SPLIT = re.compile(r"\s*(?:→|->|,|;|\bund\b|\band\b|&)\s*")

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def unit_kind(unit: str) -> str:
    """``money`` for a currency code (USD, EUR …); otherwise the unit itself
    (``percent``, ``count``, ``years`` …), so kinds never mix."""
    return "money" if _CURRENCY.match(unit) else unit


@functools.lru_cache(maxsize=8192)
def subject_names(subject: str | None) -> frozenset[str]:
    """The organisation names a subject string mentions, case-folded (memoised: a broad
    query meets the same subjects over and over)."""
    if not subject:
        return frozenset()
    return frozenset(p.strip().casefold() for p in _SPLIT.split(subject) if p.strip())


def gap(a: Observation, b: Observation) -> float:
    """Distance between two intervals (0 when they overlap)."""
    if a.high < b.low:
        return b.low - a.high
    if b.high < a.low:
        return a.low - b.high
    return 0.0


def _magnitude(o: Observation) -> float:
    return max(abs(o.value), abs(o.low), 0.0 if math.isinf(o.high) else abs(o.high))


def diverge(a: Observation, b: Observation, relative_tolerance: float) -> bool:
    """The gap between two intervals exceeds the tolerance relative to their larger
    magnitude (any gap, when both magnitudes are 0)."""
    apart = gap(a, b)
    if apart == 0:
        return False
    scale = max(_magnitude(a), _magnitude(b))
    return (apart / scale if scale > 0 else math.inf) > relative_tolerance


@dataclass(frozen=True)
class DriftRules:
    """How to compare: tolerances per unit kind, the metrics that count, currency rates.

    ``rates`` maps a currency code to its value in ``rates_base`` (e.g. EUR →
    1.08 with base USD), as of ``rates_date`` — the user's table, never fetched.
    """

    relative_tolerance: float = 0.01
    metrics: tuple[str, ...] | None = None
    tolerance_by_kind: Mapping[str, float] = field(default_factory=dict)
    rates: Mapping[str, float] = field(default_factory=dict)
    rates_base: str = "USD"
    rates_date: str = ""

    def tolerance(self, kind: str) -> float:
        return self.tolerance_by_kind.get(kind, self.relative_tolerance)


def drift_rules(settings: Settings) -> DriftRules:
    """The drift rules of the settings' ``[drift]`` table."""
    d = settings.drift
    return DriftRules(
        relative_tolerance=d.relative_tolerance,
        metrics=d.metrics,
        tolerance_by_kind=d.tolerance,
        rates=d.rates,
        rates_base=d.rates_base,
        rates_date=d.rates_date,
    )


def _subject_groups(obs: Sequence[Observation]) -> list[list[Observation]]:
    """Union observations whose subjects share a name; unnamed ones form their own group."""
    parent = list(range(len(obs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    unnamed: int | None = None
    for i, o in enumerate(obs):
        names = subject_names(o.subject)
        if not names:
            if unnamed is None:
                unnamed = i
            else:
                parent[find(i)] = find(unnamed)
            continue
        for n in names:
            if n in owner:
                parent[find(i)] = find(owner[n])
            else:
                owner[n] = i
    groups: dict[int, list[Observation]] = {}
    for i, o in enumerate(obs):
        groups.setdefault(find(i), []).append(o)
    return list(groups.values())


def _group_subject(group: Sequence[Observation]) -> str | None:
    """The most specific subject of a group: the one naming most organisations."""
    subjects = [o.subject for o in group if o.subject]
    if not subjects:
        return None
    return max(subjects, key=lambda s: (len(subject_names(s)), subjects.count(s), s))


def _convert(
    group: Sequence[Observation], rules: DriftRules
) -> tuple[list[Observation], str] | None:
    """The group in one currency, or None when a rate is missing."""
    units = {o.unit for o in group}
    if len(units) == 1:
        return list(group), next(iter(units))
    base = rules.rates_base
    rate = {**rules.rates, base: 1.0}
    if not units <= set(rate):
        return None

    def to_base(o: Observation) -> Observation:
        r = rate[o.unit]
        return replace(o, value=o.value * r, low=o.low * r, high=o.high * r)

    return [to_base(o) for o in group], base


def _consensus(group: Sequence[Observation]) -> tuple[float, float] | None:
    low = max(o.low for o in group)
    high = min(o.high for o in group)
    return (low, high) if low <= high else None


def _first_outlet(group: Sequence[Observation]) -> str | None:
    if not group:
        return None
    return min(group, key=lambda o: (o.observed_at, o.outlet)).outlet


def _extent(group: Sequence[Observation]) -> tuple[float, float]:
    """The largest ``gap`` between two outlets' observations, and the largest such gap
    relative to the pair's larger magnitude (``inf`` when both magnitudes are 0).

    Two outlets' observations ``diverge`` exactly when their relative gap exceeds the
    tolerance, so a group diverges when its largest one does (``_status``), and no part
    of a group whose largest one is within the tolerance can diverge (``summarise``).
    Every pair is compared, so ``gap`` is inlined here with each observation's
    magnitude taken once (a broad query over a million observations compares a
    million pairs)."""
    spread = ratio = 0.0
    items = [(o.outlet, o.low, o.high, _magnitude(o)) for o in group]
    for i, (outlet_a, low_a, high_a, mag_a) in enumerate(items):
        for outlet_b, low_b, high_b, mag_b in items[i + 1 :]:
            if outlet_a == outlet_b:
                continue
            if high_a < low_b:
                apart = low_b - high_a
            elif high_b < low_a:
                apart = low_a - high_b
            else:
                continue  # overlapping: no gap
            spread = max(spread, apart)
            scale = max(mag_a, mag_b)
            ratio = max(ratio, apart / scale if scale > 0 else math.inf)
    return spread, ratio


def _status(group: Sequence[Observation], tolerance: float) -> tuple[str, float]:
    """``diverging`` when two outlets' observations ``diverge``, and the largest ``gap``
    between two outlets'."""
    spread, ratio = _extent(group)
    return ("diverging" if ratio > tolerance else "consistent"), spread


def _current(observations: Iterable[Observation]) -> list[Observation]:
    """Only each article's newest version."""
    newest: dict[str, int] = {}
    obs = list(observations)
    for o in obs:
        newest[o.article] = max(newest.get(o.article, 0), o.version)
    return [o for o in obs if o.version == newest[o.article]]


def distinct_claims(observations: Iterable[Observation]) -> list[Observation]:
    """Each claim of an article version once, in the given order: a headline that repeats
    its body's figure in the same words is one piece of evidence, not two (the store
    keeps both observations)."""
    seen: set[tuple[object, ...]] = set()
    out = []
    for o in observations:
        claim = (o.article, o.version, o.value, o.low, o.high, o.unit, o.qualifier, o.quote)
        if claim not in seen:
            seen.add(claim)
            out.append(o)
    return out


Bucket = tuple[int, str, str, str]  # story, metric, period ("" for none), unit kind


def _buckets(
    observations: Iterable[Observation], metrics: Sequence[str] | None = None
) -> list[tuple[Bucket, list[Observation]]]:
    """Each article's newest version's observations by story, metric, period and unit
    kind (of ``metrics`` only, when given), in that order."""
    buckets: dict[Bucket, list[Observation]] = {}
    for o in _current(observations):
        if metrics is not None and o.metric not in metrics:
            continue
        buckets.setdefault((o.story_id, o.metric, o.period or "", unit_kind(o.unit)), []).append(o)
    return sorted(buckets.items())


@dataclass(frozen=True)
class Summary:
    """What a drift query needs to know of a bucket before reading it (``summarise``)."""

    story_id: int
    metric: str
    period: str  # "" for none
    kind: str
    max_ratio: float | None  # None: money in several currencies (the rate table decides)
    last_observed_at: datetime
    observations: int


def summarise(observations: Iterable[Observation]) -> list[Summary]:
    """Per bucket of ``findings``: the largest relative gap between two outlets inside
    one subject group (``_extent``), and when its newest observation was made.

    It holds no tolerance or metric list, so it stays true when the ``[drift]`` table
    changes: a bucket whose ``max_ratio`` is within a kind's tolerance has no diverging
    group, nor has any part of it (a time window, one outlet's articles), since a
    part's pairs are pairs of the whole. Kept per story by the cycle (``drift_summary``)
    so that ``drift --diverging`` reads only the buckets that may diverge.
    """
    out = []
    for (story_id, metric, period, kind), obs in _buckets(observations):
        groups = _subject_groups(obs)
        ratio = None  # money in several currencies is compared through rates: no bound
        if all(len({o.unit for o in group}) == 1 for group in groups):
            ratio = max(_extent(group)[1] for group in groups)
        out.append(
            Summary(
                story_id=story_id,
                metric=metric,
                period=period,
                kind=kind,
                max_ratio=ratio,
                last_observed_at=max(o.observed_at for o in obs),
                observations=len(obs),
            )
        )
    return out


def findings(observations: Iterable[Observation], rules: DriftRules) -> list[Finding]:
    """Disagreement findings over each article's newest version, one per group; a
    finding lists each distinct claim once (``distinct_claims``)."""
    out: list[Finding] = []
    for (story_id, metric, period, kind), obs in _buckets(observations, rules.metrics):
        for group in _subject_groups(obs):
            common = dict(
                story_id=story_id,
                subject=_group_subject(group),
                metric=metric,
                period=period or None,
                observations=tuple(distinct_claims(group)),
                first=_first_outlet(group),
            )
            converted = _convert(group, rules) if kind == "money" else (group, group[0].unit)
            if converted is None:
                units = ", ".join(sorted({o.unit for o in group}))
                out.append(
                    Finding(
                        unit=units,
                        status="not_comparable",
                        note=f"no rate in [drift.rates] for {units}",
                        **common,  # type: ignore[arg-type]
                    )
                )
                continue
            values, unit = converted
            status, spread = _status(values, rules.tolerance(kind))
            note = ""
            if len({o.unit for o in group}) > 1:
                note = f"converted to {unit} with the rates of {rules.rates_date or 'the config'}"
            out.append(
                Finding(
                    unit=unit,
                    status=status,
                    spread=spread,
                    consensus=_consensus(values),
                    note=note,
                    **common,  # type: ignore[arg-type]
                )
            )
    return out


def revisions(observations: Iterable[Observation], rules: DriftRules) -> list[Finding]:
    """An article changing its own figure between consecutive versions.

    Figures of two versions are paired by metric, period, unit kind and
    subject overlap (nearest position in the text first); a pair whose
    intervals diverge is a revision. A version that holds the feed's summary (a
    partial article) is left out: the page's full text replacing it is no edit.
    """
    by_article: dict[str, dict[int, list[Observation]]] = {}
    for o in observations:
        if rules.metrics is not None and o.metric not in rules.metrics:
            continue
        if o.summary:  # the feed's words stood in for a page not fetched yet
            continue
        by_article.setdefault(o.article, {}).setdefault(o.version, []).append(o)
    out: list[Finding] = []
    for versions in by_article.values():
        numbers = sorted(versions)
        for older, newer in itertools.pairwise(numbers):
            used: set[int] = set()
            for new in versions[newer]:
                olds = [
                    (abs(old.start - new.start), i, old)
                    for i, old in enumerate(versions[older])
                    if i not in used
                    and old.metric == new.metric
                    and (old.period or "") == (new.period or "")
                    and old.unit == new.unit
                    and (
                        subject_names(old.subject) & subject_names(new.subject)
                        or not (old.subject or new.subject)
                    )
                ]
                if not olds:
                    continue
                _, i, old = min(olds, key=lambda t: (t[0], t[1]))
                used.add(i)
                if diverge(old, new, rules.tolerance(unit_kind(new.unit))):
                    out.append(
                        Finding(
                            story_id=new.story_id,
                            subject=new.subject or old.subject,
                            metric=new.metric,
                            period=new.period,
                            unit=new.unit,
                            status="revised",
                            observations=(old, new),
                            spread=gap(old, new),
                            kind="revision",
                            first=new.outlet,
                        )
                    )
    return out


def outlets_of(finding: Finding) -> list[str]:
    return sorted({o.outlet for o in finding.observations})
