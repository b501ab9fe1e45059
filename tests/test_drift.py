"""Drift: interval comparison, subject grouping, alert planning."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from pipeline.alerts import AlertRules, plan_alerts
from pipeline.drift import DriftRules, findings, subject_names
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
        f.status == "consistent" for f in findings([prior, val, rev24, rev25, eur, usd], RULES)
    )


def test_metric_filter() -> None:
    rows = [obs("a", 28, 28, 28, metric="age"), obs("b", 30, 30, 30, metric="age")]
    assert findings(rows, DriftRules(0.01, metrics=("deal_value",))) == []


def test_alert_names_values_outlets_and_quotes() -> None:
    result = findings(
        [obs("a.example", 14.8e9, 14.75e9, 14.85e9), obs("b.example", 14.3e9, 14.25e9, 14.35e9)],
        RULES,
    )
    [alert] = plan_alerts(result, AlertRules(min_outlets=2), {1: "Meta buys into Scale AI"}, T)
    assert alert.key == "1|Meta → Scale AI|deal_value||disagreement"
    assert "a.example" in alert.body and "b.example" in alert.body
    assert "14.8 bn USD" in alert.body and "14.3 bn USD" in alert.body
    assert "https://a.example/a" in alert.body


def test_consistent_or_single_outlet_groups_raise_no_alert() -> None:
    consistent = findings(
        [
            obs("a", 49, 48.5, 49.5, metric="stake", unit="percent"),
            obs("b", 49, 48.5, 49.5, metric="stake", unit="percent"),
        ],
        RULES,
    )
    assert plan_alerts(consistent, AlertRules(), {}, T) == []
    diverging = findings(
        [obs("a", 14.8e9, 14.75e9, 14.85e9), obs("b", 14.3e9, 14.25e9, 14.35e9)], RULES
    )
    assert plan_alerts(diverging, AlertRules(min_outlets=3), {}, T) == []
