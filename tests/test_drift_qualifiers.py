"""Qualifier logic end to end: the words of two outlets, through figure extraction,
into the drift decision (issue "Drift and alerts")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.drift import DriftRules, findings
from pipeline.figures import extract_figures
from pipeline.models import Figure, Observation

T = datetime(2025, 6, 13, 8, tzinfo=UTC)


def observe(outlet: str, text: str, lang: str, metric: str) -> Observation:
    figs: list[Figure] = [f for f in extract_figures(text, lang, T) if f.metric == metric]
    assert figs, f"no {metric} figure in {text!r}"
    f = figs[0]
    return Observation(
        story_id=1,
        subject="Scale AI",
        metric=metric,
        period=f.period,
        outlet=outlet,
        article=f"{outlet}-1",
        article_url=f"https://{outlet}/1",
        value=f.value,
        low=f.low,
        high=f.high,
        unit=f.unit,
        qualifier=f.qualifier,
        quote=f.quote,
        observed_at=T,
    )


CASES = [
    (
        "Der Konzern bewertet Scale AI dabei mit über 29 Mrd. Dollar.",
        "de",
        "Meta's deal values Scale AI at $29.1bn.",
        "en",
        "valuation",
        "consistent",
    ),
    (
        "Meta is paying nearly $15 billion for its stake in Scale AI.",
        "en",
        "Meta is paying $14.8 billion for its stake in Scale AI.",
        "en",
        "deal_value",
        "consistent",
    ),
    (
        "Meta is paying $14.3 billion for its stake in Scale AI.",
        "en",
        "Meta zahlt für die Beteiligung an Scale AI 14,8 Milliarden Dollar.",
        "de",
        "deal_value",
        "diverging",
    ),
    (
        "Meta übernimmt 49 Prozent der Anteile an Scale AI.",
        "de",
        "Meta übernimmt knapp die Hälfte der Anteile an Scale AI.",
        "de",
        "stake",
        "consistent",
    ),
]


@pytest.mark.parametrize(("a", "lang_a", "b", "lang_b", "metric", "expected"), CASES)
def test_qualifiers_decide_consistency(
    a: str, lang_a: str, b: str, lang_b: str, metric: str, expected: str
) -> None:
    obs = [observe("one.example", a, lang_a, metric), observe("two.example", b, lang_b, metric)]
    [finding] = findings(obs, DriftRules(relative_tolerance=0.01))
    assert finding.status == expected, [(o.quote, o.low, o.high) for o in obs]
