"""Drift: interval comparison, subject grouping, alert planning."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

from pipeline.drift import DriftRules, findings, revisions, subject_names
from pipeline.models import Observation, Qualifier

T = datetime(2025, 6, 13, 8, tzinfo=UTC)


def obs(
    outlet: str,
    value: float,
    low: float,
    high: float,
    *,
    metric: str = "deal_value",
    subject: str | None = "Meta → Scale AI",
    unit: str = "USD",
    period: str | None = None,
    qualifier: Qualifier = Qualifier.EXACT,
    story: int = 1,
) -> Observation:
    return Observation(
        story_id=story,
        subject=subject,
        metric=metric,
        period=period,
        outlet=outlet,
        article=f"{outlet}-1",
        article_url=f"https://{outlet}/a",
        value=value,
        low=low,
        high=high,
        unit=unit,
        qualifier=qualifier,
        quote=f"{value}",
        observed_at=T,
    )


RULES = DriftRules(relative_tolerance=0.01)


def test_subject_names_split_buyer_and_target() -> None:
    assert subject_names("Meta → Scale AI") == {"meta", "scale ai"}
    assert subject_names(None) == frozenset()


def test_two_exact_figures_apart_diverge() -> None:
    [f] = findings([obs("a", 14.8e9, 14.75e9, 14.85e9), obs("b", 14.3e9, 14.25e9, 14.35e9)], RULES)
    assert f.status == "diverging"
    assert math.isclose(f.spread, 0.4e9)


def test_at_least_bound_is_consistent_with_a_higher_exact_figure() -> None:
    over = obs("a", 29e9, 29e9, math.inf, metric="valuation", qualifier=Qualifier.AT_LEAST)
    exact = obs("b", 29.1e9, 29.05e9, 29.15e9, metric="valuation")
    [f] = findings([over, exact], RULES)
    assert f.status == "consistent"


def test_nearly_overlaps_with_a_figure_just_below() -> None:
    nearly = obs("a", 15e9, 14.25e9, 15e9, qualifier=Qualifier.AT_MOST)
    [f] = findings([nearly, obs("b", 14.8e9, 14.75e9, 14.85e9)], RULES)
    assert f.status == "consistent"


def test_same_outlet_twice_is_not_a_disagreement() -> None:
    [f] = findings([obs("a", 14.8e9, 14.75e9, 14.85e9), obs("a", 14.3e9, 14.25e9, 14.35e9)], RULES)
    assert f.status == "consistent"


def test_different_subjects_are_never_compared() -> None:
    meta = obs("a", 14.3e9, 14.25e9, 14.35e9, subject="Meta → Scale AI")
    openai = obs("a", 6.5e9, 6.45e9, 6.55e9, subject="OpenAI")
    scale = obs("b", 14.8e9, 14.75e9, 14.85e9, subject="Scale AI")
    result = findings([meta, openai, scale], RULES)
    assert len(result) == 2
    by_subject = {f.subject: f for f in result}
    assert by_subject["Meta → Scale AI"].status == "diverging"
    assert by_subject["OpenAI"].status == "consistent"


def test_metrics_periods_and_units_are_kept_apart() -> None:
    prior = obs("a", 13.8e9, 13.75e9, 13.85e9, metric="prior_valuation", subject="Scale AI")
    val = obs("b", 29e9, 29e9, math.inf, metric="valuation", subject="Scale AI")
    rev24 = obs("a", 870e6, 870e6, math.inf, metric="revenue", subject="Scale AI", period="2024")
    rev25 = obs("b", 2e9, 1.5e9, 2.5e9, metric="revenue", subject="Scale AI", period="2025")
    eur = obs("b", 10e9, 9.95e9, 10.05e9, unit="EUR")
    usd = obs("a", 14.3e9, 14.25e9, 14.35e9)
    assert all(
        f.status != "diverging" for f in findings([prior, val, rev24, rev25, eur, usd], RULES)
    )


def test_a_claim_repeated_in_one_article_is_listed_once() -> None:
    headline = obs("a", 15e9, 13.5e9, 15e9, qualifier=Qualifier.AT_MOST)
    lede = dataclasses.replace(headline, start=120, figure_id=2)  # same words, further down
    reworded = dataclasses.replace(headline, quote="almost $15bn", start=400, figure_id=3)
    other = obs("b", 14.3e9, 14.25e9, 14.35e9)
    [f] = findings([headline, lede, reworded, other], RULES)
    assert f.observations == (headline, reworded, other)
    assert f.status == "consistent"


def test_metric_filter() -> None:
    rows = [obs("a", 28, 28, 28, metric="age"), obs("b", 30, 30, 30, metric="age")]
    assert findings(rows, DriftRules(0.01, metrics=("deal_value",))) == []


def test_currencies_need_a_rate_table() -> None:
    eur = obs("a", 10e9, 9.95e9, 10.05e9, unit="EUR")
    usd = obs("b", 14.3e9, 14.25e9, 14.35e9)
    [f] = findings([eur, usd], RULES)
    assert f.status == "not_comparable" and "EUR" in f.note
    rated = DriftRules(0.01, rates={"EUR": 1.43}, rates_date="2025-06-01")
    [g] = findings([eur, usd], rated)
    assert g.status == "consistent" and g.unit == "USD" and "2025-06-01" in g.note


def test_tolerance_per_unit_kind() -> None:
    a = obs("a", 49, 48.5, 49.5, metric="stake", unit="percent")
    b = obs("b", 51, 50.5, 51.5, metric="stake", unit="percent")
    assert findings([a, b], RULES)[0].status == "diverging"
    loose = DriftRules(0.01, tolerance_by_kind={"percent": 0.05})
    assert findings([a, b], loose)[0].status == "consistent"


def test_consensus_and_first_reporter() -> None:
    early = dataclasses.replace(obs("a", 29e9, 29e9, math.inf, metric="valuation"), observed_at=T)
    late = dataclasses.replace(
        obs("b", 29.1e9, 29.05e9, 29.15e9, metric="valuation"), observed_at=T + timedelta(hours=2)
    )
    [f] = findings([late, early], RULES)
    assert f.first == "a"
    assert f.consensus == (29.05e9, 29.15e9)


def test_only_the_newest_version_counts_for_disagreement_and_revisions_are_found() -> None:
    v1 = obs("a", 14.8e9, 14.75e9, 14.85e9)
    v2 = dataclasses.replace(obs("a", 14.3e9, 14.25e9, 14.35e9), version=2)
    other = dataclasses.replace(obs("b", 14.3e9, 14.25e9, 14.35e9), article="b-1")
    [f] = findings([v1, v2, other], RULES)
    assert f.status == "consistent"
    [r] = revisions([v1, v2, other], RULES)
    assert r.kind == "revision" and r.observations == (v1, v2)
    assert revisions([v1, dataclasses.replace(v1, version=2)], RULES) == []
