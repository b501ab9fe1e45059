"""Alert planning: keys, episodes, cooldown, revisions, feed health, quiet hours, digests."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipeline.alerts import (
    AlertRules,
    QuietHours,
    digest_due,
    digest_message,
    plan_alerts,
    plan_feed_alerts,
)
from pipeline.drift import DriftRules, findings
from pipeline.models import FeedState, GroupState, Observation, Qualifier

T = datetime(2025, 6, 13, 8, tzinfo=UTC)
RULES = AlertRules(min_outlets=2, cooldown=timedelta(hours=24))


def obs(outlet: str, value: float, *, article: str | None = None) -> Observation:
    return Observation(
        story_id=1,
        subject="Meta → Scale AI",
        metric="deal_value",
        period=None,
        outlet=outlet,
        article=article or f"{outlet}-1",
        article_url=f"https://{outlet}/a",
        value=value,
        low=value - 0.05e9,
        high=value + 0.05e9,
        unit="USD",
        qualifier=Qualifier.EXACT,
        quote=f"{value / 1e9:g} Milliarden",
        observed_at=T,
    )


def test_values_and_intervals_are_shown_in_one_scale() -> None:
    from dataclasses import replace

    from pipeline.alerts import format_value, interval_text

    exact = obs("a.example", 14.3e9)
    assert (format_value(exact), interval_text(exact)) == ("14.3 bn USD", "[14.25, 14.35]")
    more = replace(exact, value=900e6, low=900e6, high=float("inf"), qualifier=Qualifier.AT_LEAST)
    assert (format_value(more), interval_text(more)) == ("≥ 900 m USD", "[900, ∞]")
    stake = replace(exact, value=49.0, low=48.5, high=49.5, unit="percent")
    assert (format_value(stake), interval_text(stake)) == ("49%", "[48.5, 49.5]")
    staff = replace(exact, value=180.0, low=179.5, high=180.5, unit="count")
    assert (format_value(staff), interval_text(staff)) == ("180", "[179.5, 180.5]")


@pytest.mark.parametrize(
    ("value", "unit", "qualifier", "shown"),
    [
        (3.2e12, "USD", None, "3.2 tn USD"),
        (14.3e9, "USD", "exact", "14.3 bn USD"),
        (-2.5e9, "EUR", None, "-2.5 bn EUR"),
        (900e6, "USD", "at_least", "≥ 900 m USD"),
        (240.0, "count", "approx", "~ 240"),
        (49.0, "percent", "exact", "49%"),
        (950_000.0, "USD", "at_most", "≤ 950000 USD"),
    ],
)
def test_one_format_for_figures_everywhere(
    value: float, unit: str, qualifier: str | None, shown: str
) -> None:
    """Alerts, the demo, tables and plots share ``display_scale``; alerts and the demo
    ``format_figure``."""
    from pipeline.models import format_figure

    assert format_figure(value, unit, qualifier) == shown


def plan(observations: list[Observation], states: dict[str, GroupState], now: datetime):  # type: ignore[no-untyped-def]
    alerts, changed = plan_alerts(
        findings(observations, DriftRules(0.01)), states, RULES, {1: "Meta/Scale"}, now
    )
    new_states = {**states, **{s.key: s for s in changed}}
    return alerts, new_states


def test_a_disagreement_alerts_once_with_evidence() -> None:
    alerts, states = plan([obs("a.example", 14.8e9), obs("b.example", 14.3e9)], {}, T)
    [alert] = alerts
    assert alert.key == "1|Meta → Scale AI|deal_value||disagreement#1"
    assert "a.example" in alert.body and "b.example" in alert.body and "14.8 bn USD" in alert.body
    assert "https://a.example/a" in alert.body and "“14.3 Milliarden”" in alert.body
    again, _ = plan(
        [obs("a.example", 14.8e9), obs("b.example", 14.3e9)], states, T + timedelta(hours=1)
    )
    assert again == []


def test_a_third_outlet_agreeing_with_one_side_does_not_refire() -> None:
    _, states = plan([obs("a", 14.8e9), obs("b", 14.3e9)], {}, T)
    alerts, _ = plan(
        [obs("a", 14.8e9), obs("b", 14.3e9), obs("c", 14.3e9)], states, T + timedelta(hours=2)
    )
    assert alerts == []


def test_resolved_then_reopened_alerts_again_only_after_the_cooldown() -> None:
    _, states = plan([obs("a", 14.8e9), obs("b", 14.3e9)], {}, T)
    _, states = plan([obs("a", 14.3e9), obs("b", 14.3e9)], states, T + timedelta(hours=1))
    assert next(iter(states.values())).status == "consistent"
    early, states = plan([obs("a", 14.9e9), obs("b", 14.3e9)], states, T + timedelta(hours=2))
    assert early == []  # episode 2 waits for the cooldown
    late, states = plan([obs("a", 14.9e9), obs("b", 14.3e9)], states, T + timedelta(hours=25))
    assert [a.key.rsplit("#", 1)[1] for a in late] == ["2"]


def test_fewer_outlets_than_the_minimum_raise_nothing() -> None:
    rules = AlertRules(min_outlets=3)
    alerts, _ = plan_alerts(
        findings([obs("a", 14.8e9), obs("b", 14.3e9)], DriftRules()), {}, rules, {}, T
    )
    assert alerts == []


def test_revision_alert_names_both_versions() -> None:
    import dataclasses

    from pipeline.drift import revisions

    v1 = obs("a", 14.8e9)
    v2 = dataclasses.replace(obs("a", 14.3e9), version=2)
    found = revisions([v1, v2], DriftRules())
    [alert], _ = plan_alerts(found, {}, RULES, {1: "Meta/Scale"}, T)
    assert alert.kind == "revision" and alert.key.endswith("|revision|a-1#v2")
    assert "version 1" in alert.body and "version 2" in alert.body


def feed(status: str, failing_since: datetime | None) -> FeedState:
    return FeedState(
        id=7,
        url="https://a.example/feed",
        outlet="A",
        lang="de",
        interval_minutes=30,
        etag=None,
        last_modified=None,
        status=status,
        last_error="HTTP 500",
        last_error_at=failing_since,
        last_success_at=None,
        next_due_at=None,
        failing_since=failing_since,
    )


def test_feed_broken_for_a_day_alerts_once_per_outage() -> None:
    assert plan_feed_alerts([feed("error", T)], {}, RULES, T + timedelta(hours=5))[0] == []
    alerts, changed = plan_feed_alerts([feed("error", T)], {}, RULES, T + timedelta(days=1))
    assert [a.kind for a in alerts] == ["feed_health"]
    states = {s.key: s for s in changed}
    assert plan_feed_alerts([feed("error", T)], states, RULES, T + timedelta(days=2))[0] == []
    _, healed = plan_feed_alerts([feed("ok", None)], states, RULES, T + timedelta(days=3))
    states = {s.key: s for s in healed}
    again, _ = plan_feed_alerts(
        [feed("error", T + timedelta(days=4))], states, RULES, T + timedelta(days=6)
    )
    assert again[0].key == "feed|7#2"


def test_quiet_hours_wrap_midnight_in_local_time() -> None:
    quiet = QuietHours(time(22), time(7), ZoneInfo("Europe/Berlin"))
    assert quiet.contains(datetime(2025, 6, 13, 21, 30, tzinfo=UTC))  # 23:30 in Berlin
    assert quiet.contains(datetime(2025, 6, 13, 4, 0, tzinfo=UTC))  # 06:00 in Berlin
    assert not quiet.contains(datetime(2025, 6, 13, 6, 0, tzinfo=UTC))  # 08:00 in Berlin


def test_digest() -> None:
    assert digest_due(None, timedelta(hours=1), T)
    assert not digest_due(T, timedelta(hours=1), T + timedelta(minutes=30))
    assert digest_due(T, None, T)
    title, body = digest_message([("a", "1"), ("b", "2")])
    assert title == "newsdrift digest: 2 alerts" and "## a\n1" in body and "## b\n2" in body


def test_extraction_yield_collapse_alerts_once_and_recovers() -> None:
    from pipeline.alerts import OutletYield, plan_yield_alerts

    healthy = OutletYield(
        "a.example", recent_total=8, recent_partial=0, before_total=30, before_partial=1
    )
    assert plan_yield_alerts([healthy], {}, T) == ([], [])
    collapsed = OutletYield(
        "a.example", recent_total=8, recent_partial=6, before_total=30, before_partial=1
    )
    [alert], changed = plan_yield_alerts([collapsed], {}, T)
    assert (
        alert.kind == "feed_health" and "6 of 8" in alert.body and alert.key == "yield|a.example#1"
    )
    states = {s.key: s for s in changed}
    assert plan_yield_alerts([collapsed], states, T)[0] == []  # once per collapse
    _, back = plan_yield_alerts([healthy], states, T)
    assert back[0].status == "ok"
    always_partial = OutletYield(
        "b.example", recent_total=8, recent_partial=8, before_total=30, before_partial=30
    )
    assert plan_yield_alerts([always_partial], {}, T)[0] == []  # a paywalled outlet is no news
