"""Records that cross every boundary of the pipeline.

Frozen dataclasses only; every datetime is timezone-aware UTC. ORM rows never
leave ``storage/``; the stages take and return these values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit


def utc(dt: datetime) -> datetime:
    """Return ``dt`` as an aware UTC datetime (naive values are taken as UTC)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Qualifier(StrEnum):
    """How sure the wording of a figure is."""

    EXACT = "exact"
    APPROX = "approx"
    AT_LEAST = "at_least"
    AT_MOST = "at_most"


# Metric keys of DESIGN.md (extend, don't rename).
METRICS: tuple[str, ...] = (
    "deal_value",
    "valuation",
    "prior_valuation",
    "stake",
    "revenue",
    "cash",
    "funding_total",
    "market_cap",
    "employees",
    "users",
    "age",
)


@dataclass(frozen=True)
class Figure:
    """One reported number: a point value, the interval it stands for, and context.

    ``value`` is in base units (14.8e9 for "14,8 Milliarden"); ``low``/``high``
    bound what the wording allows (``high`` may be ``math.inf`` for "über").
    ``kind`` is ``absolute`` for amounts, ``multiplier`` for "verdoppelt"/"2x".
    ``start``/``end`` are character offsets of ``quote`` in the text.
    """

    value: float
    unit: str
    qualifier: Qualifier
    low: float
    high: float
    metric: str | None
    subject: str | None
    period: str | None
    quote: str
    start: int
    end: int
    kind: str = "absolute"

    def to_json(self) -> dict[str, object]:
        return {
            "value": self.value,
            "unit": self.unit,
            "qualifier": str(self.qualifier),
            "metric": self.metric,
            "subject": self.subject,
            "period": self.period,
            "quote": self.quote,
            "start": self.start,
            "end": self.end,
            "low": self.low,
            "high": None if math.isinf(self.high) else self.high,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class Document:
    """An article's text as the analysis stages see it (no I/O, no ids)."""

    title: str
    text: str
    lang: str
    published: datetime | None = None
    outlet: str = ""
    url: str = ""


@dataclass(frozen=True)
class Extracted:
    """What extraction got out of one HTML page."""

    title: str
    text: str
    published: datetime | None
    lang: str | None
    site: str | None
    method: str
    canonical_url: str | None = None


@dataclass(frozen=True)
class FeedEntry:
    """One item of a parsed feed."""

    url: str
    guid: str | None
    title: str
    summary: str
    published: datetime | None


@dataclass(frozen=True)
class IngestItem:
    """An already-fetched article given to `newsdrift ingest`."""

    id: str | None
    url: str
    outlet: str
    lang: str
    published: datetime
    title: str
    text: str | None
    html: str | None


@dataclass(frozen=True)
class Outlet:
    name: str
    lang: str
    homepage: str | None = None


def is_http_url(url: str) -> bool:
    """True for an absolute http(s) URL with a host and no whitespace (what a feed needs)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # "http://[::1" and other malformed netlocs
        return False
    return parts.scheme in ("http", "https") and bool(host) and not any(c.isspace() for c in url)


@dataclass(frozen=True)
class FeedConfig:
    """A feed as configured (feeds.toml or `feeds add`)."""

    url: str
    outlet: str
    lang: str
    interval_minutes: int = 30
    on_topic: bool = False
    extra_terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedState:
    """A stored feed with its HTTP validators and health."""

    id: int
    url: str
    outlet: str
    lang: str
    interval_minutes: int
    etag: str | None
    last_modified: str | None
    status: str
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None
    next_due_at: datetime | None
    on_topic: bool = False
    failing_since: datetime | None = None
    ttl_minutes: int | None = None
    in_feeds_file: bool = False  # managed by feeds.toml, not added by `feeds add`/`import`


@dataclass(frozen=True)
class RefetchDue:
    """An article due for a re-fetch on the edit ladder, with what the request needs."""

    id: int
    url: str
    outlet: str
    etag: str | None
    last_modified: str | None
    step: int  # the ladder rung it is due for
    status: str  # "kept", or "partial" while it holds only the feed's summary
    published: datetime  # its publication time (first seen when the feed gave none)
    lang: str
    feed_id: int | None  # the feed it came from (None: ingested, or the feed was removed)


@dataclass(frozen=True)
class StoredArticle:
    """An article with its newest version, as storage hands it to the stages."""

    id: int
    version_id: int
    key: str  # the input id where one was given, else the URL
    url: str
    outlet: str
    lang: str
    published: datetime | None
    title: str
    text: str
    story_id: int | None = None


@dataclass(frozen=True)
class Observation:
    """One figure of one article version inside one story: a drift-table row."""

    story_id: int
    subject: str | None
    metric: str
    period: str | None
    outlet: str
    article: str
    article_url: str
    value: float
    low: float
    high: float
    unit: str
    qualifier: Qualifier
    quote: str
    observed_at: datetime
    figure_id: int = 0
    version_id: int = 0
    version: int = 1
    article_id: int = 0
    start: int = 0
    # from the feed's summary, stored while the page could not be fetched: its later full
    # text is no revision of it
    summary: bool = False


# How a figure is shown to people (tables, alerts, the demo, plots): divided by the largest
# of these its magnitude reaches, the word after the number, the unit beside it.
DISPLAY_SCALES = ((1e12, "tn"), (1e9, "bn"), (1e6, "m"))
_BOUNDS = {"at_least": "≥ ", "at_most": "≤ ", "approx": "~ "}


def display_scale(magnitude: float) -> tuple[float, str]:
    """(divisor, word) to show a number of this magnitude: (1e9, "bn") for 1.43e10,
    (1.0, "") below a million. Percentages are shown as they are (callers skip them)."""
    for factor, word in DISPLAY_SCALES:
        if abs(magnitude) >= factor:
            return factor, word
    return 1.0, ""


def format_figure(value: float, unit: str, qualifier: str | None = None) -> str:
    """``14.3 bn USD``, ``≥ 900 m USD``, ``49%``, ``180`` (a count has no unit shown)."""
    bound = _BOUNDS.get(str(qualifier), "")
    if unit == "percent":
        return f"{bound}{value:g}%"
    div, word = display_scale(value)
    number = f"{value / div:g}" + (f" {word}" if word else "")
    return bound + number + (f" {unit}" if unit != "count" else "")


# The method of a version that holds the feed's summary instead of the page's text.
FEED_SUMMARY = "feed-summary"


@dataclass(frozen=True)
class Finding:
    """The status of one (story, subject, metric, period) group, or one revision.

    ``kind`` is ``disagreement`` (outlets at a time) or ``revision`` (one
    outlet's article changing its own figure between versions). ``consensus``
    is the interval every observation allows, when there is one; ``first``
    names the outlet that reported first.
    """

    story_id: int
    subject: str | None
    metric: str
    period: str | None
    unit: str
    status: str  # "consistent" | "diverging" | "not_comparable"
    observations: tuple[Observation, ...]
    spread: float = 0.0
    kind: str = "disagreement"
    consensus: tuple[float, float] | None = None
    first: str | None = None
    note: str = ""

    @property
    def key(self) -> str:
        """Stable identity of the group: never a content hash."""
        parts = [str(self.story_id), self.subject or "", self.metric, self.period or "", self.kind]
        if self.kind == "revision" and self.observations:
            parts.append(self.observations[-1].article)
        return "|".join(parts)


@dataclass(frozen=True)
class GroupState:
    """What the alert planner remembers of one group between cycles."""

    key: str
    story_id: int | None
    metric: str | None
    status: str
    episode: int = 0
    alerted_episode: int = 0
    opened_at: datetime | None = None
    last_alert_at: datetime | None = None


@dataclass(frozen=True)
class Alert:
    """A message to deliver, keyed so that it is sent once."""

    key: str
    kind: str
    title: str
    body: str
    story_id: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
