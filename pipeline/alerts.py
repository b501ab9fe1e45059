"""Plan alerts from findings. Pure: decides what to say and when, never sends.

Alert keys are (story, subject, metric, period, kind) plus an episode number —
never a content hash — so an edited headline or a re-run cannot fire an alert
again. A group that diverges opens an episode; the episode is alerted once.
When it resolves and later diverges again, a new episode opens, and it is
alerted once the cooldown of its (story, metric) has passed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta, tzinfo

from pipeline.drift import outlets_of
from pipeline.models import (
    Alert,
    FeedState,
    Finding,
    GroupState,
    Observation,
    display_scale,
    format_figure,
)

ALERT_KINDS = ("disagreement", "revision", "feed_health")


@dataclass(frozen=True)
class AlertRules:
    min_outlets: int = 2
    metrics: tuple[str, ...] | None = None
    cooldown: timedelta = timedelta(hours=24)
    revisions: bool = True
    feed_broken_after: timedelta = timedelta(days=1)


def format_value(o: Observation) -> str:
    """``14.3 bn USD``, ``≥ 900 m USD``, ``49%``."""
    return format_figure(o.value, o.unit, o.qualifier)


def interval_text(o: Observation) -> str:
    """The interval an observation stands for, in the scale of its value:
    ``[14.25, 14.35]`` for 14.3 bn, ``[900, ∞]`` for "more than $900 million"."""
    div = 1.0 if o.unit == "percent" else display_scale(o.value)[0]
    high = "∞" if math.isinf(o.high) else f"{o.high / div:.6g}"
    return f"[{o.low / div:.6g}, {high}]"


def _evidence(observations: Iterable[Observation]) -> list[str]:
    """One line per claim (a finding's observations are distinct claims already)."""
    return [
        f"- {o.outlet}: {format_value(o)} {interval_text(o)} — “{o.quote}” ({o.article_url})"
        for o in sorted(observations, key=lambda o: (o.value, o.outlet))
    ]


def _disagreement_alert(f: Finding, episode: int, story: str, now: datetime) -> Alert:
    what = f.metric + (f" ({f.period})" if f.period else "")
    lines = [
        f"Story {f.story_id}: {story}",
        f"Metric: {f.metric}; subject: {f.subject or '-'}; period: {f.period or '-'}",
        f"Outlets: {', '.join(outlets_of(f))}; first to report: {f.first or '-'}",
    ]
    if f.note:
        lines.append(f"Note: {f.note}")
    lines += ["Observations:", *_evidence(f.observations)]
    return Alert(
        key=f"{f.key}#{episode}",
        kind="disagreement",
        title=f"newsdrift: outlets disagree on {what} of {f.subject or story}",
        body="\n".join(lines),
        story_id=f.story_id,
        created_at=now,
    )


def _revision_alert(f: Finding, story: str, now: datetime) -> Alert:
    old, new = f.observations
    lines = [
        f"Story {f.story_id}: {story}",
        f"{new.outlet} changed {f.metric} of {f.subject or '-'} in a later version of its article:",
        f"- version {old.version}: {format_value(old)} — “{old.quote}”",
        f"- version {new.version}: {format_value(new)} — “{new.quote}”",
        f"Article: {new.article_url}",
    ]
    return Alert(
        key=f"{f.key}#v{new.version}",
        kind="revision",
        title=f"newsdrift: {new.outlet} revised {f.metric} of {f.subject or story}",
        body="\n".join(lines),
        story_id=f.story_id,
        created_at=now,
    )


def _last_alert(states: Mapping[str, GroupState], story_id: int, metric: str) -> datetime | None:
    """The newest alert of any group of this (story, metric): the cooldown's scope."""
    times = [
        s.last_alert_at
        for s in states.values()
        if s.story_id == story_id and s.metric == metric and s.last_alert_at is not None
    ]
    return max(times) if times else None


def plan_alerts(
    findings: Iterable[Finding],
    states: Mapping[str, GroupState],
    rules: AlertRules,
    titles: Mapping[int, str],
    now: datetime,
) -> tuple[list[Alert], list[GroupState]]:
    """Alerts to queue and the group states to store, from this cycle's findings."""
    alerts: list[Alert] = []
    changed: dict[str, GroupState] = {}
    current = dict(states)
    for f in findings:
        story = titles.get(f.story_id, f"story {f.story_id}")
        if rules.metrics is not None and f.metric not in rules.metrics:
            continue
        if f.kind == "revision":
            if rules.revisions:
                alerts.append(_revision_alert(f, story, now))
            continue
        prev = current.get(f.key)
        eligible = f.status == "diverging" and len(outlets_of(f)) >= rules.min_outlets
        if not eligible:
            status = "consistent" if f.status == "diverging" else f.status
            if prev is None or prev.status != status:
                state = GroupState(
                    key=f.key,
                    story_id=f.story_id,
                    metric=f.metric,
                    status=status,
                    episode=prev.episode if prev else 0,
                    alerted_episode=prev.alerted_episode if prev else 0,
                    opened_at=prev.opened_at if prev else None,
                    last_alert_at=prev.last_alert_at if prev else None,
                )
                changed[f.key] = current[f.key] = state
            continue
        if prev is not None and prev.status == "diverging":
            state = prev
        else:
            state = GroupState(
                key=f.key,
                story_id=f.story_id,
                metric=f.metric,
                status="diverging",
                episode=(prev.episode if prev else 0) + 1,
                alerted_episode=prev.alerted_episode if prev else 0,
                opened_at=now,
                last_alert_at=prev.last_alert_at if prev else None,
            )
        if state.episode > state.alerted_episode:
            last = _last_alert(current, f.story_id, f.metric)
            if last is None or now - last >= rules.cooldown:
                alerts.append(_disagreement_alert(f, state.episode, story, now))
                state = replace(state, alerted_episode=state.episode, last_alert_at=now)
        if state != prev:
            changed[f.key] = current[f.key] = state
    return alerts, list(changed.values())


def plan_feed_alerts(
    feeds: Sequence[FeedState],
    states: Mapping[str, GroupState],
    rules: AlertRules,
    now: datetime,
) -> tuple[list[Alert], list[GroupState]]:
    """A feed broken for ``feed_broken_after`` raises one feed-health alert per outage."""
    alerts: list[Alert] = []
    changed: list[GroupState] = []
    for feed in feeds:
        key = f"feed|{feed.id}"
        prev = states.get(key)
        broken_since = feed.failing_since
        broken = (
            feed.status in ("error", "gone")
            and broken_since is not None
            and now - broken_since >= rules.feed_broken_after
        )
        if not broken:
            if prev is not None and prev.status != "ok":
                changed.append(replace(prev, status="ok"))
            continue
        if prev is not None and prev.status == "broken":
            continue
        episode = (prev.episode if prev else 0) + 1
        assert broken_since is not None
        alerts.append(
            Alert(
                key=f"{key}#{episode}",
                kind="feed_health",
                title=(
                    f"newsdrift: feed of {feed.outlet} broken since "
                    f"{broken_since:%Y-%m-%d %H:%M} UTC"
                ),
                body=(
                    f"Feed: {feed.url}\nOutlet: {feed.outlet}\nStatus: {feed.status}\n"
                    f"Last error: {feed.last_error or '-'}\n"
                    f"Last success: {_iso_or(feed.last_success_at, 'never')}"
                ),
                created_at=now,
            )
        )
        changed.append(_alerted_health(key, "broken", episode, broken_since, now))
    return alerts, changed


def _alerted_health(
    key: str, status: str, episode: int, opened_at: datetime, now: datetime
) -> GroupState:
    """The state of a health problem whose episode was just alerted."""
    return GroupState(
        key=key,
        story_id=None,
        metric=None,
        status=status,
        episode=episode,
        alerted_episode=episode,
        opened_at=opened_at,
        last_alert_at=now,
    )


def _iso_or(when: datetime | None, default: str) -> str:
    return when.isoformat(timespec="seconds") if when else default


@dataclass(frozen=True)
class OutletYield:
    """How many of an outlet's articles came out whole, recently and before."""

    outlet: str
    recent_total: int
    recent_partial: int
    before_total: int
    before_partial: int


# An outlet's extraction yield has collapsed when at least this many recent articles
# came out, at least this share of them only partial, while before it was under the
# healthy share. Chosen by hand (no labelled data): a page redesign or a new paywall
# turns most articles partial at once.
YIELD_MIN_RECENT = 5
YIELD_COLLAPSED_SHARE = 0.5
YIELD_HEALTHY_SHARE = 0.2


def plan_yield_alerts(
    yields: Sequence[OutletYield], states: Mapping[str, GroupState], now: datetime
) -> tuple[list[Alert], list[GroupState]]:
    """One feed-health alert per outlet whose extraction yield collapsed."""
    alerts: list[Alert] = []
    changed: list[GroupState] = []
    for y in yields:
        key = f"yield|{y.outlet}"
        prev = states.get(key)
        collapsed = (
            y.recent_total >= YIELD_MIN_RECENT
            and y.recent_partial >= YIELD_COLLAPSED_SHARE * y.recent_total
            and y.before_total >= YIELD_MIN_RECENT
            and y.before_partial < YIELD_HEALTHY_SHARE * y.before_total
        )
        healthy = y.recent_total >= YIELD_MIN_RECENT and (
            y.recent_partial < YIELD_HEALTHY_SHARE * y.recent_total
        )
        if prev is not None and prev.status == "collapsed":
            if healthy:
                changed.append(replace(prev, status="ok"))
            continue
        if not collapsed:
            continue
        episode = (prev.episode if prev else 0) + 1
        alerts.append(
            Alert(
                key=f"{key}#{episode}",
                kind="feed_health",
                title=f"newsdrift: extraction from {y.outlet} has collapsed",
                body=(
                    f"Outlet: {y.outlet}\n"
                    f"Recently {y.recent_partial} of {y.recent_total} articles came out only "
                    f"partial (feed summary), before {y.before_partial} of {y.before_total}.\n"
                    "A page redesign, a consent wall or a new paywall is the usual cause; "
                    "see `newsdrift articles` for the partial ones."
                ),
                created_at=now,
            )
        )
        changed.append(_alerted_health(key, "collapsed", episode, now, now))
    return alerts, changed


# --- when to deliver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QuietHours:
    """A daily window (local time of ``tz``) in which nothing is sent; may wrap midnight."""

    start: time
    end: time
    tz: tzinfo

    def contains(self, when: datetime) -> bool:
        local = when.astimezone(self.tz).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def digest_due(last: datetime | None, period: timedelta | None, now: datetime) -> bool:
    return period is None or last is None or now - last >= period


def digest_message(items: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """One message from several (title, body) alerts."""
    title = f"newsdrift digest: {len(items)} alert{'s' if len(items) != 1 else ''}"
    body = "\n\n".join(f"## {t}\n{b}" for t, b in items)
    return title, body
