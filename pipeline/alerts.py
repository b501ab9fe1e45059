"""Plan alerts from findings. Pure: decides what to say, never sends.

An alert's key is (story, subject, metric, period, kind) — never a content
hash — so an edited headline or a re-run cannot fire it again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pipeline.drift import outlets_of
from pipeline.models import Alert, Finding, Observation


@dataclass(frozen=True)
class AlertRules:
    min_outlets: int = 2


def format_value(o: Observation) -> str:
    unit = "%" if o.unit == "percent" else f" {o.unit}"
    if o.unit == "percent":
        shown = f"{o.value:g}"
    elif abs(o.value) >= 1e9:
        shown = f"{o.value / 1e9:g} bn"
    elif abs(o.value) >= 1e6:
        shown = f"{o.value / 1e6:g} m"
    else:
        shown = f"{o.value:g}"
    bound = {"at_least": "≥ ", "at_most": "≤ ", "approx": "~ "}.get(str(o.qualifier), "")
    return f"{bound}{shown}{unit}"


def interval_text(o: Observation) -> str:
    high = "∞" if math.isinf(o.high) else f"{o.high:.6g}"
    return f"[{o.low:.6g}, {high}]"


def plan_alerts(
    findings: Iterable[Finding], rules: AlertRules, titles: dict[int, str], now: datetime
) -> list[Alert]:
    """One alert per diverging group reported by at least ``min_outlets`` outlets."""
    alerts = []
    for f in findings:
        if f.status != "diverging" or len(outlets_of(f)) < rules.min_outlets:
            continue
        story = titles.get(f.story_id, f"story {f.story_id}")
        what = f"{f.metric}" + (f" ({f.period})" if f.period else "")
        title = f"newsdrift: outlets disagree on {what} of {f.subject or story}"
        lines = [
            f"Story {f.story_id}: {story}",
            f"Metric: {f.metric}; subject: {f.subject or '-'}; period: {f.period or '-'}",
            "Observations:",
        ]
        for o in sorted(f.observations, key=lambda o: (o.value, o.outlet)):
            lines.append(
                f"- {o.outlet}: {format_value(o)} {interval_text(o)} — “{o.quote}” "
                f"({o.article_url})"
            )
        alerts.append(
            Alert(
                key=f.key,
                kind="disagreement",
                title=title,
                body="\n".join(lines),
                story_id=f.story_id,
                created_at=now,
            )
        )
    return alerts
