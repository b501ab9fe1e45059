"""Drift: observations of one story's figures → findings. Pure.

A figure is an interval (DESIGN.md). Observations are grouped by (story,
metric, period, unit) and then by subject: two subjects belong together when
they name a common organisation ("Scale AI" and "Meta → Scale AI"), so an
outlet that writes the buyer too still meets one that names only the target,
while "OpenAI" and "Meta → Scale AI" stay apart. Inside a group, two
observations from different outlets diverge when the gap between their
intervals exceeds ``relative_tolerance`` times the larger magnitude.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.models import Finding, Observation

_SPLIT = re.compile(r"\s*(?:→|->|,|;|\bund\b|\band\b|&)\s*")


def subject_names(subject: str | None) -> frozenset[str]:
    """The organisation names a subject string mentions, case-folded."""
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
    scale = max(_magnitude(a), _magnitude(b))
    return gap(a, b) > relative_tolerance * scale


def _subject_groups(obs: Sequence[Observation]) -> list[list[Observation]]:
    """Union observations whose subjects share a name; unnamed ones form their own group."""
    parent = list(range(len(obs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    names = [subject_names(o.subject) for o in obs]
    owner: dict[str, int] = {}
    unnamed: int | None = None
    for i, ns in enumerate(names):
        if not ns:
            if unnamed is None:
                unnamed = i
            else:
                parent[find(i)] = find(unnamed)
            continue
        for n in ns:
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


@dataclass(frozen=True)
class DriftRules:
    relative_tolerance: float = 0.01
    metrics: tuple[str, ...] | None = None


def findings(observations: Iterable[Observation], rules: DriftRules) -> list[Finding]:
    """Group observations and decide consistent / diverging per group."""
    buckets: dict[tuple[int, str, str, str], list[Observation]] = {}
    for o in observations:
        if rules.metrics is not None and o.metric not in rules.metrics:
            continue
        buckets.setdefault((o.story_id, o.metric, o.period or "", o.unit), []).append(o)
    out: list[Finding] = []
    for (story_id, metric, period, unit), obs in sorted(buckets.items()):
        for group in _subject_groups(obs):
            status, spread = "consistent", 0.0
            for i, a in enumerate(group):
                for b in group[i + 1 :]:
                    if a.outlet == b.outlet:
                        continue
                    spread = max(spread, gap(a, b))
                    if diverge(a, b, rules.relative_tolerance):
                        status = "diverging"
            out.append(
                Finding(
                    story_id=story_id,
                    subject=_group_subject(group),
                    metric=metric,
                    period=period or None,
                    unit=unit,
                    status=status,
                    observations=tuple(group),
                    spread=spread,
                )
            )
    return out


def outlets_of(finding: Finding) -> list[str]:
    return sorted({o.outlet for o in finding.observations})
