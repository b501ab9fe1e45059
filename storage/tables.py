"""SQLAlchemy 2 typed tables. ORM classes never leave ``storage/``.

Every write is made idempotent by a unique key; all times are stored as UTC
(``UTCDateTime`` restores the tzinfo SQLite drops).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; use UTC-aware values")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class OutletRow(Base):
    __tablename__ = "outlets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    lang: Mapped[str] = mapped_column(String(8))
    homepage: Mapped[str | None] = mapped_column(String(2000))


class FeedRow(Base):
    __tablename__ = "feeds"
    __table_args__ = (Index("ux_feeds_config_url", "config_url", unique=True),)  # (0008)

    id: Mapped[int] = mapped_column(primary_key=True)
    outlet_id: Mapped[int] = mapped_column(ForeignKey("outlets.id"))
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    # The URL feeds.toml lists for a feed it manages (``url`` moves with a permanent
    # redirect, this does not); NULL for one added by `feeds add` or `feeds import`.
    config_url: Mapped[str | None] = mapped_column(String(2000))
    lang: Mapped[str] = mapped_column(String(8))
    interval_minutes: Mapped[int] = mapped_column(Integer, default=30)
    on_topic: Mapped[bool] = mapped_column(Boolean, default=False)
    extra_terms: Mapped[list[str]] = mapped_column(JSON, default=list)
    etag: Mapped[str | None] = mapped_column(String(1000))
    last_modified: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="new")
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ttl_minutes: Mapped[int | None] = mapped_column(Integer)  # the feed's <ttl>
    redirect_to: Mapped[str | None] = mapped_column(String(2000))
    redirect_seen: Mapped[int] = mapped_column(Integer, default=0)
    # `newsdrift worker`: the worker polling this feed now, and when its claim lapses.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


_STALE_SUMMARY = "drift_summary_epoch IS NULL OR drift_summary_epoch <> drift_epoch"


class StoryRow(Base):
    __tablename__ = "stories"
    __table_args__ = (
        # the stories whose drift summary is out of date (migration 0009): few, once kept
        Index(
            "ix_stories_drift_stale",
            "id",
            sqlite_where=text(_STALE_SUMMARY),
            postgresql_where=text(_STALE_SUMMARY),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("stories.id"))
    # changes to the story's articles; the one its drift summary was made from
    drift_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    drift_summary_epoch: Mapped[int | None] = mapped_column(Integer)


class DriftSummaryRow(Base):
    """Per story, metric, period and unit kind: the widest relative gap between two
    outlets' current figures (NULL: money in several currencies) and the newest
    observation (``pipeline.drift.summarise``; migration 0009)."""

    __tablename__ = "drift_summary"
    __table_args__ = (
        Index("ix_drift_summary_observed", "last_observed_at"),
        Index("ix_drift_summary_metric_observed", "metric", "last_observed_at"),
    )

    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    period: Mapped[str] = mapped_column(String(20), primary_key=True)  # "" for none
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    max_ratio: Mapped[float | None] = mapped_column(Float)
    last_observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    observations: Mapped[int] = mapped_column(Integer)


class ArticleRow(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(2000), unique=True)
    url: Mapped[str] = mapped_column(String(2000), index=True)
    guid: Mapped[str | None] = mapped_column(String(2000), index=True)
    outlet_id: Mapped[int] = mapped_column(ForeignKey("outlets.id"))
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("feeds.id"))
    lang: Mapped[str] = mapped_column(String(8))
    published: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="kept")  # kept | skipped | partial
    topic_score: Mapped[float | None] = mapped_column(Float)
    topic_terms: Mapped[list[str]] = mapped_column(JSON, default=list)
    topic_stage: Mapped[str | None] = mapped_column(String(10))
    story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id"), index=True)
    story_level: Mapped[str | None] = mapped_column(String(10))
    story_score: Mapped[float | None] = mapped_column(Float)
    fingerprint: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Re-fetch ladder: which rung comes next, when, and the page's validators.
    refetch_step: Mapped[int] = mapped_column(Integer, default=0)
    next_refetch_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    etag: Mapped[str | None] = mapped_column(String(1000))
    last_modified: Mapped[str | None] = mapped_column(String(200))


# Repo.window_size counts the articles published inside the story window (migration 0005);
# story_id makes the count an index-only scan.
Index(
    "ix_articles_window",
    func.coalesce(ArticleRow.published, ArticleRow.first_seen),
    ArticleRow.story_id,
)


class ArticleVersionRow(Base):
    __tablename__ = "article_versions"
    __table_args__ = (
        UniqueConstraint("article_id", "content_hash"),
        # the newest-version test and the versions of the drift queries, read from the
        # index alone: SQLite stores method and observed_at after the text and page, in
        # the row's overflow pages (migrations 0003, 0010)
        Index("ix_article_versions_newest", "article_id", "number", "observed_at", "method"),
        Index("ix_article_versions_observed", "observed_at", "article_id", "number", "method"),
        # the same text under another URL (Repo.find_by_content, migration 0005)
        Index("ix_article_versions_content_hash", "content_hash"),
        # the versions that still hold their page, by fetch time: what prune drops (0010)
        Index(
            "ix_article_versions_html_fetched",
            "fetched_at",
            sqlite_where=text("html_gz IS NOT NULL"),
            postgresql_where=text("html_gz IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    html_gz: Mapped[bytes | None] = mapped_column(LargeBinary)
    method: Mapped[str] = mapped_column(String(40))
    # How the page's bytes were decoded: http (charset header), bom, meta, detected.
    decoded_by: Mapped[str | None] = mapped_column(String(20))
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When newsdrift learnt what this version says: the publication time for a
    # first version, the fetch time for later ones. `drift --as-of` filters on it.
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class StoryKeyRow(Base):
    """Inverted index for candidate generation: blocking key -> article."""

    __tablename__ = "story_keys"
    __table_args__ = (
        # covering: Repo.candidates reads each key's newest postings from the index alone
        Index("ix_story_keys_postings", "key", "published", "article_id"),  # (0006)
        Index("ix_story_keys_article", "article_id"),  # re-attach deletes by article (0005)
        Index("ix_story_keys_published", "published"),  # WindowCounter's edges (0007)
    )

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), primary_key=True)
    published: Mapped[datetime] = mapped_column(UTCDateTime)


class StoryMergeRow(Base):
    __tablename__ = "story_merges"
    __table_args__ = (UniqueConstraint("from_story", "into_story"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    from_story: Mapped[int] = mapped_column(ForeignKey("stories.id"))
    into_story: Mapped[int] = mapped_column(ForeignKey("stories.id"))
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class FigureRow(Base):
    __tablename__ = "figures"
    __table_args__ = (
        UniqueConstraint("version_id", "start", "end", "unit"),
        # a version's observations without visiting its other figures (migration 0003)
        Index("ix_figures_version_metric", "version_id", "metric", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("article_versions.id"), index=True)
    value: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)  # NULL = unbounded
    unit: Mapped[str] = mapped_column(String(16))
    qualifier: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(12))
    metric: Mapped[str | None] = mapped_column(String(40), index=True)
    subject: Mapped[str | None] = mapped_column(String(300))
    period: Mapped[str | None] = mapped_column(String(20))
    quote: Mapped[str] = mapped_column(Text)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)


class AlertRow(Base):
    """The outbox: written in the transaction that found the cause."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(1000), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id"))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(10), default="pending", index=True)


class DeliveryRow(Base):
    """One alert to one channel: sent once, retried with backoff while it fails."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("alert_id", "channel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    channel: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AlertStateRow(Base):
    """Per drift group: open/resolved, and which episode was alerted when."""

    __tablename__ = "alert_state"

    group_key: Mapped[str] = mapped_column(String(1000), primary_key=True)
    story_id: Mapped[int | None] = mapped_column(Integer, index=True)
    metric: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))
    episode: Mapped[int] = mapped_column(Integer, default=0)
    alerted_episode: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_alert_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChannelStateRow(Base):
    """Per channel: when the last digest went out."""

    __tablename__ = "channel_state"

    channel: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_digest_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CrawlDomainRow(Base):
    """Per registrable domain, shared by every worker: when the next request may start,
    and until when a Retry-After holds (`newsdrift worker`; see storage/claims.py)."""

    __tablename__ = "crawl_domains"

    domain: Mapped[str] = mapped_column(String(300), primary_key=True)
    next_start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    min_gap_s: Mapped[float] = mapped_column(Float, default=0.0)


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
