"""The repository: every read and write the pipeline makes, in pipeline records.

``Store`` owns the engine; ``Store.unit()`` opens one transaction and yields a
``Repo`` bound to it. One unit per item (a feed, an article) keeps failures
isolated: a failed item rolls back alone and the cycle goes on.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Engine,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.selectable import ScalarSelect

from pipeline.alerts import OutletYield
from pipeline.drift import Summary
from pipeline.errors import LeaseHeld, StorageError
from pipeline.models import (
    FEED_SUMMARY,
    Alert,
    FeedConfig,
    FeedState,
    Figure,
    GroupState,
    Observation,
    Outlet,
    Qualifier,
    RefetchDue,
    StoredArticle,
)
from storage.db import create_db_engine, upgrade
from storage.pages import gzip_html
from storage.tables import (
    AlertRow,
    AlertStateRow,
    ArticleRow,
    ArticleVersionRow,
    ChannelStateRow,
    DeliveryRow,
    DriftSummaryRow,
    FeedRow,
    FigureRow,
    LeaseRow,
    OutletRow,
    RunRow,
    StoryKeyRow,
    StoryMergeRow,
    StoryRow,
    UTCDateTime,
)

INF = float("inf")
# Tables written row by row in bulk, through Core (the ORM's bulk path costs more).
_FIGURES: Table = FigureRow.__table__  # type: ignore[assignment]
_SUMMARY: Table = DriftSummaryRow.__table__  # type: ignore[assignment]
_STORY_KEYS: Table = StoryKeyRow.__table__  # type: ignore[assignment]
# The open upper end of a time window.
MAX_TIME = datetime(9999, 12, 31, tzinfo=UTC)

# Statements run once or more for every article, built once with bound parameters:
# building a statement and its cache key costs more Python than SQLite takes to run it
# (docs/performance.md, fourth round). The rest are built where they are used.
_ARTICLES: Table = ArticleRow.__table__  # type: ignore[assignment]
_VERSIONS: Table = ArticleVersionRow.__table__  # type: ignore[assignment]
_STORIES: Table = StoryRow.__table__  # type: ignore[assignment]
_A, _V, _S, _K = _ARTICLES.c, _VERSIONS.c, _STORIES.c, _STORY_KEYS.c
_KEYS: BindParameter[Any] = bindparam("keys", expanding=True)
_SINCE, _UNTIL = bindparam("since", type_=UTCDateTime()), bindparam("until", type_=UTCDateTime())
_WINDOW_KEYS = (_K.key.in_(_KEYS), _K.published >= _SINCE, _K.published <= _UNTIL)

_ARTICLE_BY_KEY = select(_A.id).where(_A.key == bindparam("key"))
_ARTICLE_BY_KEYS = select(_A.id).where(or_(_A.key.in_(_KEYS), _A.url.in_(_KEYS))).limit(1)
_ARTICLE_BY_CONTENT = (
    select(_V.article_id)
    .join(_ARTICLES, _A.id == _V.article_id)
    .join(OutletRow.__table__, OutletRow.id == _A.outlet_id)
    .where(OutletRow.name == bindparam("outlet"), _V.content_hash == bindparam("digest"))
    .limit(1)
)
_SCHEDULE_REFETCH = (
    update(_ARTICLES)
    .where(_A.id == bindparam("article_id"))
    .values(
        refetch_step=bindparam("step"),
        next_refetch_at=bindparam("at", type_=UTCDateTime()),
        # A 304 may come without validators: the stored ones stay.
        etag=func.coalesce(bindparam("etag", type_=String()), _A.etag),
        last_modified=func.coalesce(bindparam("last_modified", type_=String()), _A.last_modified),
    )
)
_MARK_PROCESSED = (
    update(_VERSIONS)
    .where(_V.id == bindparam("version_id"))
    .values(processed_at=bindparam("at", type_=UTCDateTime()))
)
_DELETE_FIGURES = delete(_FIGURES).where(_FIGURES.c.version_id == bindparam("version_id"))
_KEY_COUNTS = select(_K.key, func.count()).where(*_WINDOW_KEYS).group_by(_K.key)


def _key_edge(part: int, lower: str, upper: str) -> Select[Any]:
    """Postings per key with ``lower`` < published <= ``upper``, labelled ``part``."""
    return (
        select(literal_column(str(part)), _K.key, func.count())
        .where(
            _K.published > bindparam(lower, type_=UTCDateTime()),
            _K.published <= bindparam(upper, type_=UTCDateTime()),
        )
        .group_by(_K.key)
    )


# ``Repo.key_edges``: every key's postings between the old and the new position of each
# bound of a window (``WindowCounter``), from the index on ``published`` (migration 0007).
_KEY_EDGES = union_all(
    _key_edge(1, "since_lo", "since_hi"),
    _key_edge(2, "until_lo", "until_hi"),
)
_WINDOW_TIME = func.coalesce(_A.published, _A.first_seen)
_WINDOW_SIZE = select(func.count(_A.id)).where(
    _A.story_id.is_not(None), _WINDOW_TIME >= _SINCE, _WINDOW_TIME <= _UNTIL
)


def _window_edge(lower: str, upper: str) -> ScalarSelect[Any]:
    """Articles with a story between two bindparams: ``lower`` < time <= ``upper``."""
    at = _WINDOW_TIME
    return (
        select(func.count(_A.id))
        .where(
            _A.story_id.is_not(None),
            at > bindparam(lower, type_=UTCDateTime()),
            at <= bindparam(upper, type_=UTCDateTime()),
        )
        .scalar_subquery()
    )


# The articles between an old and a new position of each window bound (``Repo.window_shift``).
_WINDOW_EDGES = select(_window_edge("since_lo", "since_hi"), _window_edge("until_lo", "until_hi"))
_MERGED_INTO = select(_S.merged_into).where(_S.id == bindparam("story_id"))
_CANDIDATE_ROWS = (
    select(_A.id, _A.story_id, _S.merged_into, _A.fingerprint)
    .join(_STORIES, _S.id == _A.story_id)
    .where(_A.id.in_(bindparam("ids", expanding=True)))
)
_ATTACH = (
    update(_ARTICLES)
    .where(_A.id == bindparam("article_id"))
    .values(
        story_id=bindparam("story_id"),
        story_level=bindparam("level"),
        story_score=bindparam("score"),
        fingerprint=bindparam("fingerprint", type_=_A.fingerprint.type),
    )
)
_DELETE_KEYS = delete(_STORY_KEYS).where(_K.article_id == bindparam("article_id"))
_FIRST, _LAST = bindparam("first", type_=UTCDateTime()), bindparam("last", type_=UTCDateTime())
_WIDEN_STORY = (
    update(_STORIES)
    .where(_S.id == bindparam("story_id"))
    .values(
        first_seen=case((_S.first_seen > _FIRST, _FIRST), else_=_S.first_seen),
        last_seen=case((_S.last_seen < _LAST, _LAST), else_=_S.last_seen),
        # its articles changed: its drift summary is out of date (``Repo.save_drift_summary``)
        drift_epoch=_S.drift_epoch + 1,
    )
)
_SUMMARY_MADE = (
    update(_STORIES)
    .where(_S.id == bindparam("story_id"), _S.drift_epoch == bindparam("epoch"))
    .values(drift_summary_epoch=bindparam("epoch"))
)
_SUMMARY_DELETE = delete(_SUMMARY).where(_SUMMARY.c.story_id.in_(bindparam("ids", expanding=True)))
_STALE_SUMMARY = or_(_S.drift_summary_epoch.is_(None), _S.drift_summary_epoch != _S.drift_epoch)


_MIN_BRANCHES = 16  # Repo.candidates pads its keys to 16, 32, 64 ... (None matches no key)
# More keys than this (a page of tables: hundreds of numbers) take the window-function
# statement: SQLite refuses a compound SELECT of more than 500 terms.
_MAX_BRANCHES = 256


@lru_cache(maxsize=16)
def _top_candidates(keys: int, per_key: int, min_shared: int, max_candidates: int) -> Select[Any]:
    """``Repo.candidates``' ranking statement for ``keys`` keys (bound as ``key_0`` ...)
    and one set of thresholds.

    Each key's ``per_key`` newest postings come from their own ``LIMIT`` branch, which
    the covering index (key, published, article_id) answers by reading just those
    entries (migration 0006). The statement before, a window function over all of a
    key's postings in the window, read and sorted up to ``stop_df`` a key: 4-5x the
    time in SQLite, twice the CPU through SQLAlchemy. article_id breaks ties (mirrors
    publish at the same second): without it the newest of a key would depend on the
    query plan, and differ by backend.
    """
    branches = [
        select(_K.article_id)
        .where(_K.key == bindparam(f"key_{i}"), _K.published >= _SINCE, _K.published <= _UNTIL)
        .order_by(_K.published.desc(), _K.article_id.desc())
        .limit(per_key)
        .subquery(f"k{i}")
        for i in range(keys)
    ]
    postings = union_all(*(select(b.c.article_id) for b in branches)).subquery("postings")
    shared = func.count().label("shared")
    return (
        select(postings.c.article_id, shared)
        .where(postings.c.article_id != bindparam("exclude"))
        .group_by(postings.c.article_id)
        .having(shared >= min_shared)
        .order_by(shared.desc(), postings.c.article_id.desc())
        .limit(max_candidates)
    )


@lru_cache(maxsize=4)
def _top_candidates_ranked(per_key: int, min_shared: int, max_candidates: int) -> Select[Any]:
    """The same ranking for any number of keys (bound as one list): a window function
    numbers each key's postings in the window, newest first. It reads all of them, so
    it serves only articles with more keys than ``_MAX_BRANCHES``."""
    rank = (
        func.row_number()
        .over(partition_by=_K.key, order_by=(_K.published.desc(), _K.article_id.desc()))
        .label("rank")
    )
    ranked = select(_K.article_id, rank).where(*_WINDOW_KEYS).subquery()
    shared = func.count().label("shared")
    return (
        select(ranked.c.article_id, shared)
        .where(ranked.c.rank <= per_key, ranked.c.article_id != bindparam("exclude"))
        .group_by(ranked.c.article_id)
        .having(shared >= min_shared)
        .order_by(shared.desc(), ranked.c.article_id.desc())
        .limit(max_candidates)
    )


@dataclass(frozen=True)
class StorySummary:
    id: int
    title: str
    articles: tuple[str, ...]
    outlets: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True)
class AlertRecord:
    id: int
    key: str
    kind: str
    story_id: int | None
    title: str
    body: str
    created_at: datetime
    status: str
    deliveries: tuple[tuple[str, str, int, str | None], ...]  # channel, status, attempts, error


@dataclass(frozen=True)
class PendingDelivery:
    id: int
    alert_id: int
    channel: str
    title: str
    body: str
    attempts: int
    kind: str = "disagreement"
    key: str = ""


@dataclass(frozen=True)
class FeedsApplied:
    """What applying feeds.toml changed, by feed URL."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()  # outlets: (old name, new name)


@dataclass(frozen=True)
class ArticleRecord:
    id: int
    key: str
    url: str
    outlet: str
    lang: str
    published: datetime | None
    title: str
    status: str
    topic_score: float | None
    topic_terms: tuple[str, ...]
    topic_stage: str | None
    story_id: int | None


class Store:
    """The database: opened (and migrated) once per process, at an entry point."""

    def __init__(self, engine: Engine, repo_class: type[Repo] | None = None) -> None:
        self.engine = engine
        # `newsdrift worker` hands a Repo subclass that defers tasks and takes locks.
        self.repo_class: type[Repo] = repo_class or Repo

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        engine = create_db_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine)

    @contextmanager
    def unit(self) -> Iterator[Repo]:
        """One transaction: committed on success, rolled back on any exception."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield self.repo_class(session)
                session.commit()
            except OperationalError as e:
                session.rollback()
                raise StorageError(f"database error: {e.orig}") from e
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()

    def refresh_statistics(self) -> bool:
        """SQLite: take the query planner's statistics (``ANALYZE``) when there are none
        yet, or once the articles have grown STATS_GROWTH-fold since they were taken;
        returns whether it did. PostgreSQL's autovacuum keeps its own.

        Without statistics SQLite's planner guesses, and for the drift queries it guesses
        wrong: "stake, last day" at 1M observations started from every stake figure
        instead of the day's versions, 1.2 s against 80 ms. newsdrift never took them
        before, so no database had any (the benchmarks ran ANALYZE themselves). The other
        tables grow with the articles, which are never deleted, so ``max(id)`` counts
        them without a scan; ``ANALYZE`` reads every index (a few seconds at a million
        observations) and runs once per doubling."""
        if self.engine.dialect.name != "sqlite":
            return False
        with self.engine.begin() as conn:
            articles = conn.exec_driver_sql("SELECT max(id) FROM articles").scalar() or 0
            if not articles:
                return False  # ANALYZE records nothing for empty tables
            taken = _analysed_rows(conn, "articles")
            if taken is not None and articles < taken * STATS_GROWTH:
                return False
            conn.exec_driver_sql("ANALYZE")
        return True


# Store.refresh_statistics takes new planner statistics each time the articles have grown
# this much: a growing database pays ANALYZE log2(n) times.
STATS_GROWTH = 2.0


def _analysed_rows(conn: Connection, table: str) -> int | None:
    """How many rows ``table`` had when ANALYZE last ran, or None if it never did."""
    if (
        conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first()
        is None
    ):
        return None
    stats = conn.exec_driver_sql("SELECT stat FROM sqlite_stat1 WHERE tbl = ?", (table,)).scalars()
    counts = [int(stat.split()[0]) for stat in stats]
    return min(counts) if counts else None


class Repo:
    """Reads and writes inside one transaction."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self._outlet_ids: dict[str, int] = {}  # this transaction's outlets, by name

    @contextmanager
    def savepoint(self) -> Iterator[Repo]:
        """One item inside a longer transaction: an exception undoes this item alone."""
        self._begin_for_savepoints()
        try:
            with self.s.begin_nested():
                yield self
        except BaseException:
            self._outlet_ids.clear()  # an outlet created in the undone item is gone too
            raise

    def _begin_for_savepoints(self) -> None:
        """Make sure a real transaction is open before a SAVEPOINT on SQLite.

        Python's sqlite3 opens a transaction only before a data-changing statement;
        a SAVEPOINT issued outside one starts its own, and releasing it commits —
        every item would commit alone. ``BEGIN IMMEDIATE`` takes the write lock up
        front (waiting out the busy timeout), so a read-then-write item never fails
        to upgrade its lock.
        """
        conn = self.s.connection()
        if conn.dialect.name != "sqlite":
            return
        raw = conn.connection.driver_connection
        if raw is not None and not raw.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    # --- outlets and feeds ------------------------------------------------------------------

    def ensure_outlet(self, outlet: Outlet) -> int:
        known = self._outlet_ids.get(outlet.name)
        if known is not None:
            return known
        row = self.s.scalar(select(OutletRow).where(OutletRow.name == outlet.name))
        if row is None:
            row = OutletRow(name=outlet.name, lang=outlet.lang, homepage=outlet.homepage)
            self.s.add(row)
            self.s.flush()
        self._outlet_ids[outlet.name] = row.id
        return row.id

    def outlet_names(self) -> set[str]:
        return set(self.s.scalars(select(OutletRow.name)))

    def add_feed(self, feed: FeedConfig, now: datetime, *, config_url: str | None = None) -> bool:
        """Add a feed (and its outlet); False when it was there already. ``config_url``:
        the URL feeds.toml lists it under, when the file manages it."""
        if self.s.scalar(select(FeedRow.id).where(FeedRow.url == feed.url)) is not None:
            return False
        outlet_id = self.ensure_outlet(Outlet(feed.outlet, feed.lang))
        self.s.add(
            FeedRow(
                outlet_id=outlet_id,
                url=feed.url,
                config_url=config_url,
                lang=feed.lang,
                interval_minutes=feed.interval_minutes,
                on_topic=feed.on_topic,
                extra_terms=list(feed.extra_terms),
                status="new",
                next_due_at=now,
                consecutive_failures=0,
                redirect_seen=0,
            )
        )
        self.s.flush()
        return True

    def remove_feed(self, url: str) -> bool:
        row = self.s.scalar(select(FeedRow).where(FeedRow.url == url))
        if row is None:
            return False
        self._delete_feed(row)
        return True

    def _delete_feed(self, row: FeedRow) -> None:
        self.s.execute(update(ArticleRow).where(ArticleRow.feed_id == row.id).values(feed_id=None))
        self.s.delete(row)

    def feed_config_url(self, url: str) -> str | None:
        """The feeds.toml URL of the feed stored under ``url`` (None: not managed by it)."""
        return self.s.scalar(select(FeedRow.config_url).where(FeedRow.url == url))

    def apply_feeds_file(
        self, outlets: Sequence[Outlet], feeds: Sequence[FeedConfig], now: datetime
    ) -> FeedsApplied:
        """Make the feeds feeds.toml manages what it lists: add the missing ones, take its
        outlet, language, interval, topic flag and terms for the ones stored, remove the
        ones it no longer lists (their articles stay). A feed is matched by the URL the
        file lists even after it moved to a permanent redirect; a stored feed the file
        lists that was added otherwise is taken over. Feeds added by `feeds add` or
        `feeds import` and not listed are left alone. An outlet renamed in the file is
        renamed (``_renamed_outlets``), so its articles keep one name."""
        rows = list(self.s.scalars(select(FeedRow).order_by(FeedRow.id)))
        by_config = {r.config_url: r for r in rows if r.config_url is not None}
        by_url = {r.url: r for r in rows}
        listed = {f.url for f in feeds}
        matches: dict[str, FeedRow | None] = {}
        for feed in feeds:
            row = by_config.get(feed.url)
            if row is None:
                row = by_url.get(feed.url)
                if row is not None and row.config_url in listed:
                    continue  # another listed URL moved here: that listing manages it
            matches[feed.url] = row
        renamed = self._renamed_outlets(outlets, feeds, rows, matches)
        for outlet in outlets:
            stored = self.s.get_one(OutletRow, self.ensure_outlet(outlet))
            if (stored.lang, stored.homepage) != (outlet.lang, outlet.homepage):
                stored.lang, stored.homepage = outlet.lang, outlet.homepage
        added: list[str] = []
        updated: list[str] = []
        for feed in feeds:
            if feed.url not in matches:
                continue
            row = matches[feed.url]
            if row is None:
                self.add_feed(feed, now, config_url=feed.url)
                added.append(feed.url)
                continue
            row.config_url = feed.url
            if self._take_feed_config(row, feed, now):
                updated.append(row.url)
        gone = [r for r in rows if r.config_url is not None and r.config_url not in listed]
        for row in gone:
            self._delete_feed(row)
        self.s.flush()
        return FeedsApplied(tuple(added), tuple(updated), tuple(r.url for r in gone), renamed)

    def _renamed_outlets(
        self,
        outlets: Sequence[Outlet],
        feeds: Sequence[FeedConfig],
        rows: Sequence[FeedRow],
        matches: dict[str, FeedRow | None],
    ) -> tuple[tuple[str, str], ...]:
        """Rename a stored outlet to a name the file gives and the database lacks, when
        the file lists every feed stored under it, all under that one new name, and no
        longer names it: a rename, not a feed moving to another outlet. Returns the
        (old, new) names."""
        names = {o.name for o in outlets}
        stored = {i: name for i, name in self.s.execute(select(OutletRow.id, OutletRow.name))}
        known = set(stored.values())
        feeds_of: dict[int, set[int]] = {}
        for r in rows:
            feeds_of.setdefault(r.outlet_id, set()).add(r.id)
        renamed: list[tuple[str, str]] = []
        for outlet in outlets:
            if outlet.name in known:
                continue
            mine = {
                row.id: row.outlet_id
                for f in feeds
                if f.outlet == outlet.name and (row := matches.get(f.url)) is not None
            }
            old = set(mine.values())
            if len(old) != 1:
                continue
            (outlet_id,) = old
            old_name = stored[outlet_id]
            if old_name in names or feeds_of[outlet_id] != set(mine):
                continue
            self.s.get_one(OutletRow, outlet_id).name = outlet.name
            self._outlet_ids.pop(old_name, None)
            stored[outlet_id] = outlet.name
            known.add(outlet.name)
            renamed.append((old_name, outlet.name))
        self.s.flush()
        return tuple(renamed)

    def _take_feed_config(self, row: FeedRow, feed: FeedConfig, now: datetime) -> bool:
        """Give a stored feed the settings ``feed`` lists; True if any changed. A shorter
        interval takes effect now, not after the next poll under the old one."""
        outlet_id = self.ensure_outlet(Outlet(feed.outlet, feed.lang))
        wanted = (
            outlet_id,
            feed.lang,
            feed.interval_minutes,
            feed.on_topic,
            list(feed.extra_terms),
        )
        stored = (
            row.outlet_id,
            row.lang,
            row.interval_minutes,
            row.on_topic,
            row.extra_terms or [],
        )
        if wanted == stored:
            return False
        if feed.interval_minutes < (row.interval_minutes or feed.interval_minutes):
            soon = now + timedelta(minutes=feed.interval_minutes)
            if row.next_due_at is None or row.next_due_at > soon:
                row.next_due_at = soon
        row.outlet_id, row.lang, row.interval_minutes, row.on_topic = wanted[:4]
        row.extra_terms = list(feed.extra_terms)
        return True

    def _feed_state(self, row: FeedRow, outlet: str) -> FeedState:
        return FeedState(
            id=row.id,
            url=row.url,
            outlet=outlet,
            lang=row.lang,
            interval_minutes=row.interval_minutes,
            etag=row.etag,
            last_modified=row.last_modified,
            status=row.status,
            last_error=row.last_error,
            last_error_at=row.last_error_at,
            last_success_at=row.last_success_at,
            next_due_at=row.next_due_at,
            on_topic=row.on_topic,
            failing_since=row.failing_since,
            ttl_minutes=row.ttl_minutes,
            in_feeds_file=row.config_url is not None,
        )

    def feeds(
        self, *, due_at: datetime | None = None, ids: Sequence[int] | None = None
    ) -> list[FeedState]:
        q = select(FeedRow, OutletRow.name).join(OutletRow).order_by(FeedRow.id)
        if ids is not None:
            q = q.where(FeedRow.id.in_(list(ids)))
        if due_at is not None:
            q = q.where(or_(FeedRow.next_due_at.is_(None), FeedRow.next_due_at <= due_at))
        return [self._feed_state(row, name) for row, name in self.s.execute(q)]

    def feed_extra_terms(self, feed_id: int) -> tuple[str, ...]:
        terms = self.s.scalar(select(FeedRow.extra_terms).where(FeedRow.id == feed_id))
        return tuple(terms or ())

    def feed_on_topic(self, feed_id: int) -> bool:
        """Whether the feed is declared on topic (its articles need no topic test)."""
        return bool(self.s.scalar(select(FeedRow.on_topic).where(FeedRow.id == feed_id)))

    def feed_failures(self, feed_id: int) -> int:
        return self.s.scalar(select(FeedRow.consecutive_failures).where(FeedRow.id == feed_id)) or 0

    def record_feed_ok(
        self,
        feed_id: int,
        *,
        now: datetime,
        next_due: datetime,
        etag: str | None,
        last_modified: str | None,
        status: str = "ok",
        ttl_minutes: int | None = None,
        forget_validators: bool = False,
    ) -> None:
        """A successful poll; validators absent from a 304 keep their stored values.

        ``forget_validators`` drops them, so the next poll is unconditional (an entry of
        this document is still to be fetched)."""
        row = self.s.get_one(FeedRow, feed_id)
        if ttl_minutes is not None:
            row.ttl_minutes = ttl_minutes
        if forget_validators:
            row.etag = row.last_modified = None
        else:
            if etag is not None:
                row.etag = etag
            if last_modified is not None:
                row.last_modified = last_modified
        row.status = status
        row.last_success_at = now
        row.next_due_at = next_due
        row.consecutive_failures = 0
        row.failing_since = None

    def record_feed_error(
        self, feed_id: int, *, now: datetime, next_due: datetime, status: str, message: str
    ) -> None:
        row = self.s.get_one(FeedRow, feed_id)
        row.status = status
        row.last_error = message
        row.last_error_at = now
        row.next_due_at = next_due
        row.consecutive_failures = (row.consecutive_failures or 0) + 1
        row.failing_since = row.failing_since or now

    def take_pending_redirect(self, feed_id: int, now: datetime) -> str | None:
        """Move the feed to the permanent redirect seen before, if any; returns the URL."""
        row = self.s.get_one(FeedRow, feed_id)
        target = row.redirect_to
        if target is None or self.s.scalar(select(FeedRow.id).where(FeedRow.url == target)):
            return None
        row.url, row.redirect_to, row.redirect_seen = target, None, 0
        row.etag = row.last_modified = None
        row.status, row.next_due_at = "moved", now
        return target

    def record_redirect(self, feed_id: int, target: str | None, confirm_after: int) -> bool:
        """Count a permanent redirect; move the feed once it was seen consistently."""
        row = self.s.get_one(FeedRow, feed_id)
        if target is None:
            row.redirect_to, row.redirect_seen = None, 0
            return False
        if row.redirect_to == target:
            row.redirect_seen += 1
        else:
            row.redirect_to, row.redirect_seen = target, 1
        taken = self.s.scalar(select(FeedRow.id).where(FeedRow.url == target))
        if row.redirect_seen >= confirm_after and taken is None:
            row.url, row.redirect_to, row.redirect_seen = target, None, 0
            row.etag = row.last_modified = None
            return True
        return False

    # --- articles ---------------------------------------------------------------------------

    def find_article(
        self, *, keys: Sequence[str] = (), guid: str | None = None, outlet: str | None = None
    ) -> int | None:
        """An article already stored under one of ``keys`` (URLs) or ``guid`` of ``outlet``."""
        if keys and not (guid and outlet):
            return self.s.scalar(_ARTICLE_BY_KEYS, {"keys": list(keys)})
        conds: list[ColumnElement[bool]] = []
        if keys:
            conds.append(ArticleRow.key.in_(list(keys)))
            conds.append(ArticleRow.url.in_(list(keys)))
        if guid and outlet:
            outlet_id = select(OutletRow.id).where(OutletRow.name == outlet).scalar_subquery()
            conds.append(and_(ArticleRow.guid == guid, ArticleRow.outlet_id == outlet_id))
        if not conds:
            return None
        return self.s.scalar(select(ArticleRow.id).where(or_(*conds)).limit(1))

    def known_entries(
        self, urls: Sequence[str], guids: Sequence[str], outlet: str
    ) -> tuple[set[str], set[str]]:
        """Which of ``urls`` (as key or URL) and of ``outlet``'s ``guids`` are stored:
        ``find_article`` for a whole feed in one statement."""
        conds: list[ColumnElement[bool]] = []
        if urls:
            conds += [ArticleRow.key.in_(list(urls)), ArticleRow.url.in_(list(urls))]
        if guids:
            outlet_id = select(OutletRow.id).where(OutletRow.name == outlet).scalar_subquery()
            conds.append(and_(ArticleRow.guid.in_(list(guids)), ArticleRow.outlet_id == outlet_id))
        if not conds:
            return set(), set()
        rows = self.s.execute(
            select(ArticleRow.key, ArticleRow.url, ArticleRow.guid).where(or_(*conds))
        )
        found_urls: set[str] = set()
        found_guids: set[str] = set()
        for key, url, guid in rows:
            found_urls.update((key, url))
            if guid:
                found_guids.add(guid)
        return found_urls & set(urls), found_guids & set(guids)

    def newest_hash(self, article_id: int) -> str | None:
        return self.s.scalar(
            select(ArticleVersionRow.content_hash)
            .where(ArticleVersionRow.article_id == article_id)
            .order_by(ArticleVersionRow.number.desc())
            .limit(1)
        )

    def refetch_due(self, now: datetime, limit: int = 200) -> list[RefetchDue]:
        """Articles due for a re-fetch at ``now``, the longest-waiting first."""
        q = (
            select(
                ArticleRow.id,
                ArticleRow.url,
                OutletRow.name.label("outlet"),
                ArticleRow.etag,
                ArticleRow.last_modified,
                ArticleRow.refetch_step.label("step"),
                ArticleRow.status,
                func.coalesce(ArticleRow.published, ArticleRow.first_seen).label("published"),
                ArticleRow.lang,
                ArticleRow.feed_id,
            )
            .join(OutletRow, OutletRow.id == ArticleRow.outlet_id)
            .where(ArticleRow.next_refetch_at.is_not(None), ArticleRow.next_refetch_at <= now)
            .order_by(ArticleRow.next_refetch_at, ArticleRow.id)
            .limit(limit)
        )
        return [RefetchDue(**row._mapping) for row in self.s.execute(q)]

    def schedule_refetch(
        self,
        article_id: int,
        *,
        step: int,
        at: datetime | None,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> None:
        self.s.execute(
            _SCHEDULE_REFETCH,
            {
                "article_id": article_id,
                "step": step,
                "at": at,
                "etag": etag,
                "last_modified": last_modified,
            },
        )

    def complete(
        self,
        article_id: int,
        *,
        status: str = "kept",
        topic: tuple[float | None, tuple[str, ...], str | None] | None = None,
    ) -> None:
        """A partial article got its page's text: kept like any other, or ``skipped``
        when the text fails the topic test (``topic``: that decision, recorded).

        A skipped article leaves the story its summary joined and the blocking index
        (stories hold kept articles only); its rows, summary version and figures stay.
        """
        values: dict[str, Any] = {"status": status}
        if topic is not None:
            values.update(topic_score=topic[0], topic_terms=list(topic[1]), topic_stage=topic[2])
        if status == "skipped":
            values["story_id"] = None
            self.s.execute(_DELETE_KEYS, {"article_id": article_id})
        self.s.execute(
            update(ArticleRow)
            .where(ArticleRow.id == article_id, ArticleRow.status == "partial")
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    def find_by_content(self, outlet: str, content_hash: str) -> int | None:
        return self.s.scalar(_ARTICLE_BY_CONTENT, {"outlet": outlet, "digest": content_hash})

    def add_article(
        self,
        *,
        key: str,
        url: str,
        outlet: str,
        lang: str,
        published: datetime | None,
        title: str,
        now: datetime,
        guid: str | None = None,
        feed_id: int | None = None,
        summary: str = "",
        status: str = "kept",
        topic: tuple[float | None, tuple[str, ...], str | None] = (None, (), None),
    ) -> tuple[int, bool]:
        """Insert an article (idempotent on ``key``); returns (id, created)."""
        existing = self.s.scalar(_ARTICLE_BY_KEY, {"key": key})
        if existing is not None:
            return existing, False
        outlet_id = self.ensure_outlet(Outlet(outlet, lang))
        row = {
            "key": key,
            "url": url,
            "guid": guid,
            "outlet_id": outlet_id,
            "feed_id": feed_id,
            "lang": lang,
            "published": published,
            "first_seen": now,
            "title": title,
            "summary": summary,
            "status": status,
            "topic_score": topic[0],
            "topic_terms": list(topic[1]),
            "topic_stage": topic[2],
        }
        return self._insert(_ARTICLES, row), True

    def _insert(self, table: Table, row: dict[str, Any]) -> int:
        """Insert one row through Core (cheaper than an ORM object and a flush), on the
        session's connection: inside its transaction and savepoint."""
        key = self.s.connection().execute(table.insert(), row).inserted_primary_key
        assert key is not None  # a single-row insert always has one
        return int(key[0])

    def add_version(
        self,
        article_id: int,
        *,
        title: str,
        text: str,
        method: str,
        fetched_at: datetime,
        content_hash: str,
        html: str | None = None,
        decoded_by: str | None = None,
        html_gz: bytes | None = None,
        first: tuple[datetime | None] | None = None,
    ) -> int | None:
        """Store a new version unless a stored one has the same ``content_hash``
        (the caller's hash, which ignores what is no edit); returns its id.

        ``html_gz`` is the page already compressed (by a pool worker, ``gzip_html``);
        ``first=(published,)`` says the article was created in this transaction, so
        this is its first version (no look-ups needed).
        """
        digest = content_hash
        if first is not None:
            number, published = 1, first[0]
        else:
            same = self.s.scalar(
                select(ArticleVersionRow.id).where(
                    ArticleVersionRow.article_id == article_id,
                    ArticleVersionRow.content_hash == digest,
                )
            )
            if same is not None:
                return None
            published = self.s.scalar(
                select(ArticleRow.published).where(ArticleRow.id == article_id)
            )
            number = (
                self.s.scalar(
                    select(func.max(ArticleVersionRow.number)).where(
                        ArticleVersionRow.article_id == article_id
                    )
                )
                or 0
            ) + 1
        if html_gz is None and html is not None:
            html_gz = gzip_html(html)
        row = {
            "article_id": article_id,
            "number": number,
            "content_hash": digest,
            "title": title,
            "text": text,
            "html_gz": html_gz,
            "method": method,
            "decoded_by": decoded_by,
            "fetched_at": fetched_at,
            "processed_at": None,
            # A first version tells what the article said when published; a
            # later one what it said when we fetched it.
            "observed_at": min(published, fetched_at) if number == 1 and published else fetched_at,
        }
        return self._insert(_VERSIONS, row)

    def pending_versions(
        self, limit: int | None = None, *, article_id: int | None = None, texts: bool = True
    ) -> list[StoredArticle]:
        """Kept article versions not yet analysed (of one article), oldest publication first.

        ``texts=False`` leaves each ``text`` empty, for ``version_texts`` to fill a batch at
        a time: a backlog's texts would otherwise all be held at once (tens of KB each)."""
        v, a = ArticleVersionRow, ArticleRow
        q = (
            select(
                v.id,
                v.title,
                v.text if texts else literal_column("''"),
                a.id,
                a.key,
                a.url,
                OutletRow.name,
                a.lang,
                a.published,
                a.first_seen,
                a.story_id,
            )
            .join(a, a.id == v.article_id)
            .join(OutletRow, OutletRow.id == a.outlet_id)
            .where(v.processed_at.is_(None), a.status != "skipped")
            .order_by(func.coalesce(a.published, a.first_seen), v.id)
        )
        if article_id is not None:
            q = q.where(v.article_id == article_id)
        if limit:
            q = q.limit(limit)
        return [
            StoredArticle(
                id=aid,
                version_id=vid,
                key=key,
                url=url,
                outlet=outlet,
                lang=lang,
                published=published or first_seen,
                title=title,
                text=text,
                story_id=story_id,
            )
            for (
                vid,
                title,
                text,
                aid,
                key,
                url,
                outlet,
                lang,
                published,
                first_seen,
                story_id,
            ) in self.s.execute(q)
        ]

    def version_texts(self, version_ids: Sequence[int]) -> dict[int, str]:
        """The texts of these versions, by version id."""
        if not version_ids:
            return {}
        q = select(_V.id, _V.text).where(_V.id.in_(list(version_ids)))
        return {vid: text for vid, text in self.s.execute(q)}

    def articles(
        self, *, status: str | None = None, since: datetime | None = None
    ) -> list[ArticleRecord]:
        """Articles in the order they were stored; ``since``: first seen from then on."""
        q = select(ArticleRow, OutletRow.name).join(OutletRow).order_by(ArticleRow.id)
        if status:
            q = q.where(ArticleRow.status == status)
        if since is not None:
            q = q.where(ArticleRow.first_seen >= since)
        return [
            ArticleRecord(
                id=a.id,
                key=a.key,
                url=a.url,
                outlet=name,
                lang=a.lang,
                published=a.published,
                title=a.title,
                status=a.status,
                topic_score=a.topic_score,
                topic_terms=tuple(a.topic_terms or ()),
                topic_stage=a.topic_stage,
                story_id=a.story_id,
            )
            for a, name in self.s.execute(q)
        ]

    def save_figures(self, version_id: int, figures: Iterable[Figure]) -> int:
        self.s.execute(_DELETE_FIGURES, {"version_id": version_id})
        seen: set[tuple[int, int, str]] = set()
        rows = []
        for f in figures:
            if (f.start, f.end, f.unit) in seen:
                continue
            seen.add((f.start, f.end, f.unit))
            rows.append(
                {
                    "version_id": version_id,
                    "value": f.value,
                    "low": f.low,
                    "high": None if f.high == INF else f.high,
                    "unit": f.unit,
                    "qualifier": str(f.qualifier),
                    "kind": f.kind,
                    "metric": f.metric,
                    "subject": f.subject,
                    "period": f.period,
                    "quote": f.quote,
                    "start": f.start,
                    "end": f.end,
                }
            )
        if rows:  # one executemany, not an ORM object a figure
            self.s.execute(_FIGURES.insert(), rows)  # Core: no ORM bulk path
        return len(rows)

    def mark_processed(self, version_id: int, now: datetime) -> None:
        self.s.execute(_MARK_PROCESSED, {"version_id": version_id, "at": now})

    # --- stories ----------------------------------------------------------------------------

    def candidates(
        self,
        keys: Iterable[str],
        since: datetime,
        *,
        per_key: int = 30,
        stop_df: int = 150,
        max_candidates: int = 15,
        min_shared: int = 3,
        exclude: int = 0,
        until: datetime | None = None,
        counts: dict[str, int] | None = None,
        frequencies: dict[str, int] | None = None,
    ) -> list[tuple[int, int, dict[str, Any]]]:
        """(article id, story id, fingerprint) of the articles sharing most keys.

        The same blocking as the clustering's in-memory index: each key contributes
        its ``per_key`` newest postings in the window; a key held by more than
        ``stop_df`` window articles contributes none; the ``max_candidates`` articles
        sharing the most keys (at least ``min_shared``) are returned. One statement
        for all keys. The window is [``since``, ``until``]: the upper bound matters
        when articles are analysed out of publication order (several workers, a late
        feed), since a newer article is as far from an old one as the window allows.
        ``counts``: the keys' ``key_counts`` when the caller has them already;
        ``frequencies``: the document frequencies of feature keys, which may be posted
        under ``COUNT_ONLY`` too (``stories.document_frequencies``), for the stop keys.
        """
        wanted = sorted(set(keys))
        if not wanted:
            return []
        postings = counts if counts is not None else self.key_counts(wanted, since, until)
        df = postings | (frequencies or {})
        usable = [k for k in wanted if postings.get(k, 0) < per_key or df.get(k, 0) <= stop_df]
        if not usable:
            return []
        window = {"since": since, "until": until or MAX_TIME, "exclude": exclude}
        if len(usable) > _MAX_BRANCHES:
            ranked = _top_candidates_ranked(per_key, min_shared, max_candidates)
            found = self.s.execute(ranked, {"keys": usable} | window)
        else:
            # a few statement sizes, not one per key count: each is compiled and prepared once
            size = max(_MIN_BRANCHES, 1 << (len(usable) - 1).bit_length())
            top = _top_candidates(size, per_key, min_shared, max_candidates)
            params: dict[str, Any] = {f"key_{i}": None for i in range(len(usable), size)}
            params.update((f"key_{i}", key) for i, key in enumerate(usable))
            found = self.s.execute(top, params | window)
        order = {aid: i for i, (aid, _n) in enumerate(found)}
        if not order:
            return []
        rows = self.s.execute(_CANDIDATE_ROWS, {"ids": list(order)})
        live: dict[int, int] = {}  # merges followed once per merged story, not per article
        out = []
        for aid, sid, merged_into, fp in rows:
            if merged_into is not None and sid not in live:
                live[sid] = self.live_story(sid)
            out.append((aid, live.get(sid, sid), fp or {}))
        out.sort(key=lambda r: order[r[0]])
        return out

    def key_counts(
        self, keys: Sequence[str], since: datetime, until: datetime | None = None
    ) -> dict[str, int]:
        """How many window articles hold each key (document frequencies)."""
        window = {"keys": list(keys), "since": since, "until": until or MAX_TIME}
        return {k: int(n) for k, n in self.s.execute(_KEY_COUNTS, window)}

    def key_counts_unlocked(
        self, keys: Sequence[str], since: datetime, until: datetime | None = None
    ) -> dict[str, int]:
        """``key_counts``, never under a worker's locks (``TaskRepo`` locks in
        ``key_counts``): for keys of candidates found already."""
        return Repo.key_counts(self, keys, since, until)

    def key_edges(
        self, old: tuple[datetime, datetime], new: tuple[datetime, datetime]
    ) -> dict[str, int]:
        """Each key's count in window ``new`` minus its count in window ``old`` (nonzero
        ones), reading only the postings between the two windows' bounds: one statement,
        whatever the keys (``WindowCounter``)."""
        edges: dict[str, list[int]] = {}  # key -> [below, above]
        for part, key, n in self.s.execute(_KEY_EDGES, _bound_edges(old, new)):
            edges.setdefault(key, [0, 0])[part - 1] = int(n)
        delta = {k: _edge_change(below, above, old, new) for k, (below, above) in edges.items()}
        return {k: d for k, d in delta.items() if d}

    def window_size(self, since: datetime, until: datetime | None = None) -> int:
        """Articles with a story published inside the window."""
        window = {"since": since, "until": until or MAX_TIME}
        return int(self.s.scalar(_WINDOW_SIZE, window) or 0)

    def window_shift(self, old: tuple[datetime, datetime], new: tuple[datetime, datetime]) -> int:
        """``window_size(*new) - window_size(*old)``, reading only the articles between
        the old and the new position of each bound (``WindowCounter``)."""
        below, above = self.s.execute(_WINDOW_EDGES, _bound_edges(old, new)).one()
        return _edge_change(int(below or 0), int(above or 0), old, new)

    def live_story(self, story_id: int) -> int:
        """Follow merges to the story that holds ``story_id`` now."""
        seen = set()
        while True:
            into = self.s.scalar(_MERGED_INTO, {"story_id": story_id})
            if into is None or into in seen:
                return story_id
            seen.add(story_id)
            story_id = into

    def create_story(self, title: str, at: datetime) -> int:
        return self._insert(
            _STORIES, {"title": title, "first_seen": at, "last_seen": at, "merged_into": None}
        )

    def attach(
        self,
        article_id: int,
        story_id: int,
        *,
        level: str,
        score: float,
        fingerprint: dict[str, Any],
        keys: Iterable[str],
        published: datetime,
    ) -> None:
        # Statements, not ORM objects: this runs once an analysed article, with ~50 keys.
        self.s.execute(
            _ATTACH,
            {
                "article_id": article_id,
                "story_id": story_id,
                "level": level,
                "score": score,
                "fingerprint": fingerprint,
            },
        )
        self.s.execute(_DELETE_KEYS, {"article_id": article_id})
        rows = [
            {"key": key, "article_id": article_id, "published": published}
            for key in sorted(set(keys))
        ]
        if rows:
            self.s.execute(_STORY_KEYS.insert(), rows)  # Core: no ORM bulk path
        self._widen_story(story_id, published, published)

    def _widen_story(self, story_id: int, first: datetime, last: datetime) -> None:
        """Stretch a story's first/last seen to cover [``first``, ``last``], and mark its
        drift summary out of date: every change to a story's articles comes here
        (``attach``, ``merge_stories``), in the transaction that makes it."""
        self.s.execute(_WIDEN_STORY, {"story_id": story_id, "first": first, "last": last})

    def merge_stories(
        self, from_story: int, into_story: int, article_id: int, at: datetime
    ) -> None:
        """Move ``from_story``'s articles into ``into_story``; recorded and reversible."""
        if from_story == into_story:
            return
        self.s.execute(
            update(ArticleRow).where(ArticleRow.story_id == from_story).values(story_id=into_story)
        )
        # Statements, like ``attach``: the span is widened in SQL, never from an ORM
        # object that an earlier statement of this transaction may have made stale.
        first, last = self.s.execute(
            select(StoryRow.first_seen, StoryRow.last_seen).where(StoryRow.id == from_story)
        ).one()
        self.s.execute(
            update(StoryRow)
            .where(StoryRow.id == from_story)
            .values(merged_into=into_story, drift_epoch=StoryRow.drift_epoch + 1)
            .execution_options(synchronize_session=False)
        )
        self._widen_story(into_story, first, last)
        try:
            with self.s.begin_nested():
                self.s.add(
                    StoryMergeRow(
                        from_story=from_story, into_story=into_story, article_id=article_id, at=at
                    )
                )
        except IntegrityError:
            pass  # this merge was recorded before (a re-run after a crash)

    def stories(
        self, story_id: int | None = None, *, since: datetime | None = None, min_outlets: int = 1
    ) -> list[StorySummary]:
        """Live stories with their articles and outlets: ``since``, only those with an
        article published from then on (``last_seen``); ``min_outlets``, only those that
        many outlets report."""
        q = (
            select(StoryRow, ArticleRow.key, ArticleRow.published, OutletRow.name)
            .join(ArticleRow, ArticleRow.story_id == StoryRow.id)
            .join(OutletRow, OutletRow.id == ArticleRow.outlet_id)
            .where(StoryRow.merged_into.is_(None))
            .order_by(StoryRow.id, ArticleRow.published, ArticleRow.id)
            # Spans are widened by statements: never answer from a stale loaded row.
            .execution_options(populate_existing=True)
        )
        if story_id is not None:
            q = q.where(StoryRow.id == story_id)
        if since is not None:
            q = q.where(StoryRow.last_seen >= since)
        grouped: dict[int, tuple[StoryRow, list[str], list[str]]] = {}
        for story, key, _published, outlet in self.s.execute(q):
            entry = grouped.setdefault(story.id, (story, [], []))
            entry[1].append(key)
            if outlet not in entry[2]:
                entry[2].append(outlet)
        return [
            StorySummary(
                id=story.id,
                title=story.title,
                articles=tuple(keys),
                outlets=tuple(outlets),
                first_seen=story.first_seen,
                last_seen=story.last_seen,
            )
            for story, keys, outlets in grouped.values()
            if len(outlets) >= min_outlets
        ]

    def story_ids_of(self, article_ids: Iterable[int]) -> set[int]:
        ids = list(article_ids)
        if not ids:
            return set()
        return {
            sid
            for sid in self.s.scalars(select(ArticleRow.story_id).where(ArticleRow.id.in_(ids)))
            if sid is not None
        }

    # --- drift observations -----------------------------------------------------------------

    def observations(
        self,
        *,
        story_id: int | None = None,
        metric: str | None = None,
        as_of: datetime | None = None,
        history: bool = False,
        outlet: str | None = None,
        since: datetime | None = None,
        within: Select[tuple[int]] | Sequence[int] | None = None,
    ) -> list[Observation]:
        """Figures with a metric, of each article's newest version as of ``as_of``.

        ``history`` returns every version's figures instead (for revisions); ``within``
        keeps the stories it lists (ids, or a statement selecting them).
        """
        # Only the columns an Observation needs: loading whole ORM rows (the version's
        # text and gzip HTML, the article's JSON fingerprint) cost ~80 % of the time.
        v, a, f = ArticleVersionRow, ArticleRow, FigureRow
        q = (
            select(
                a.story_id,
                f.subject,
                f.metric,
                f.period,
                OutletRow.name,
                a.key,
                a.url,
                f.value,
                f.low,
                f.high,
                f.unit,
                f.qualifier,
                f.quote,
                v.observed_at,
                f.id,
                v.id,
                v.number,
                a.id,
                f.start,
                v.method,
            )
            .join(v, v.id == f.version_id)
            .join(a, a.id == v.article_id)
            .join(OutletRow, OutletRow.id == a.outlet_id)
            .where(
                f.metric.is_not(None),
                f.kind == "absolute",
                a.story_id.is_not(None),
                a.status != "skipped",
            )
            .order_by(a.story_id, f.metric, v.observed_at, f.id)
        )
        if not history:
            v2 = aliased(ArticleVersionRow)
            newer = select(v2.id).where(v2.article_id == v.article_id, v2.number > v.number)
            if as_of is not None:
                newer = newer.where(v2.observed_at <= as_of)
            q = q.where(~newer.exists())
        if story_id is not None:
            q = q.where(a.story_id == story_id)
        if within is not None:
            q = q.where(a.story_id.in_(within))
        if metric is not None:
            q = q.where(f.metric == metric)
        if outlet is not None:
            q = q.where(OutletRow.name == outlet)
        if as_of is not None:
            q = q.where(v.observed_at <= as_of)
        if since is not None:
            q = q.where(v.observed_at >= since)
        out = []
        for row in self.s.connection().execute(q):  # Core rows: no ORM loading
            story, figure_metric = row[0], row[2]
            assert story is not None and figure_metric is not None
            out.append(
                Observation(
                    story_id=story,
                    subject=row[1],
                    metric=figure_metric,
                    period=row[3],
                    outlet=row[4],
                    article=row[5],
                    article_url=row[6],
                    value=row[7],
                    low=row[8],
                    high=INF if row[9] is None else row[9],
                    unit=row[10],
                    qualifier=Qualifier(row[11]),
                    quote=row[12],
                    observed_at=row[13],
                    figure_id=row[14],
                    version_id=row[15],
                    version=row[16],
                    article_id=row[17],
                    start=row[18],
                    summary=row[19] == FEED_SUMMARY,
                )
            )
        return out

    # --- drift summary (migration 0009) -----------------------------------------------------

    def drift_epoch(self, story_id: int) -> int:
        """How often the story's articles have changed; read before its observations, a
        summary made from them is saved for this epoch (``save_drift_summary``)."""
        return int(self.s.scalar(select(_S.drift_epoch).where(_S.id == story_id)) or 0)

    def save_drift_summary(self, story_id: int, epoch: int, summaries: Iterable[Summary]) -> bool:
        """The story's drift summary, made from its observations at ``epoch``; False,
        and nothing written, when its articles have changed since (it stays out of date)."""
        return bool(self.save_drift_summaries([(story_id, epoch, list(summaries))]))

    def save_drift_summaries(self, made: Iterable[tuple[int, int, Sequence[Summary]]]) -> int:
        """``save_drift_summary`` for many stories: (story, epoch, its summaries); returns
        how many were saved.

        Each story's row is written first: on PostgreSQL its lock orders two writers of
        one story's summary, as it orders them with ``attach``."""
        saved: list[int] = []
        rows: list[dict[str, Any]] = []
        for story_id, epoch, summaries in made:
            fresh = self.s.execute(_SUMMARY_MADE, {"story_id": story_id, "epoch": epoch})
            if not fresh.rowcount:  # type: ignore[attr-defined]
                continue
            saved.append(story_id)
            rows += [
                {
                    "story_id": story_id,
                    "metric": x.metric,
                    "period": x.period,
                    "kind": x.kind,
                    "max_ratio": x.max_ratio,
                    "last_observed_at": x.last_observed_at,
                    "observations": x.observations,
                }
                for x in summaries
                if x.story_id == story_id
            ]
        if saved:
            self.s.execute(_SUMMARY_DELETE, {"ids": saved})
        if rows:
            self.s.execute(_SUMMARY.insert(), rows)
        return len(saved)

    def stale_drift_stories(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` stories whose drift summary is out of date, newest first, with
        their epochs (a story merged away too: its summary goes)."""
        q = select(_S.id, _S.drift_epoch).where(_STALE_SUMMARY).order_by(_S.id.desc()).limit(limit)
        return [(sid, epoch) for sid, epoch in self.s.execute(q)]

    def count_stale_drift_stories(self) -> int:
        return int(self.s.scalar(select(func.count()).where(_STALE_SUMMARY)) or 0)

    def maybe_diverging(
        self,
        tolerances: Mapping[str, float],
        default: float,
        *,
        metric: str | None = None,
        since: datetime | None = None,
    ) -> Select[tuple[int]]:
        """A statement selecting the stories that may hold a diverging group: those with
        a bucket of ``metric`` observed since ``since`` whose widest relative gap exceeds
        its unit kind's tolerance (``tolerances``, else ``default``) or is unbounded, and
        every story whose summary is out of date."""
        c = _SUMMARY.c
        over = [and_(c.kind == k, c.max_ratio > t) for k, t in sorted(tolerances.items())]
        over.append(and_(c.kind.not_in(sorted(tolerances)), c.max_ratio > default))
        q = select(c.story_id).where(or_(c.max_ratio.is_(None), *over))
        if metric is not None:
            q = q.where(c.metric == metric)
        if since is not None:
            q = q.where(c.last_observed_at >= since)
        return union_all(q, select(_S.id).where(_STALE_SUMMARY))  # type: ignore[return-value]

    def figures_of_article(self, article_id: int) -> list[Figure]:
        q = (
            select(FigureRow)
            .join(ArticleVersionRow, ArticleVersionRow.id == FigureRow.version_id)
            .where(ArticleVersionRow.article_id == article_id)
            .order_by(ArticleVersionRow.number.desc(), FigureRow.start)
        )
        rows = list(self.s.scalars(q))
        if not rows:
            return []
        newest = rows[0].version_id
        return [
            Figure(
                value=r.value,
                unit=r.unit,
                qualifier=Qualifier(r.qualifier),
                low=r.low,
                high=INF if r.high is None else r.high,
                metric=r.metric,
                subject=r.subject,
                period=r.period,
                quote=r.quote,
                start=r.start,
                end=r.end,
                kind=r.kind,
            )
            for r in rows
            if r.version_id == newest
        ]

    # --- alerts (outbox) --------------------------------------------------------------------

    def add_alert(self, alert: Alert, channels: Sequence[str]) -> bool:
        """Queue ``alert`` for every channel; False when its key was queued before."""
        if self.s.scalar(select(AlertRow.id).where(AlertRow.key == alert.key)) is not None:
            return False
        row = AlertRow(
            key=alert.key,
            kind=alert.kind,
            story_id=alert.story_id,
            title=alert.title,
            body=alert.body,
            created_at=alert.created_at,
            status="pending",
        )
        self.s.add(row)
        self.s.flush()
        for channel in channels:
            self.s.add(DeliveryRow(alert_id=row.id, channel=channel, status="pending", attempts=0))
        return True

    def pending_deliveries(self, now: datetime) -> list[PendingDelivery]:
        q = (
            select(DeliveryRow, AlertRow)
            .join(AlertRow, AlertRow.id == DeliveryRow.alert_id)
            .where(
                DeliveryRow.status == "pending",
                or_(DeliveryRow.next_attempt_at.is_(None), DeliveryRow.next_attempt_at <= now),
            )
            .order_by(DeliveryRow.id)
        )
        return [
            PendingDelivery(d.id, a.id, d.channel, a.title, a.body, d.attempts, a.kind, a.key)
            for d, a in self.s.execute(q)
        ]

    def record_delivery(
        self,
        delivery_id: int,
        *,
        ok: bool,
        now: datetime,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        d = self.s.get_one(DeliveryRow, delivery_id)
        d.attempts += 1
        if ok:
            d.status, d.sent_at, d.last_error = "sent", now, None
        else:
            d.last_error = error
            d.status = "pending" if retry_at is not None else "failed"
            d.next_attempt_at = retry_at
        alert = self.s.get_one(AlertRow, d.alert_id)
        statuses = set(
            self.s.scalars(select(DeliveryRow.status).where(DeliveryRow.alert_id == alert.id))
        )
        if statuses == {"sent"}:
            alert.status = "sent"
        elif "pending" in statuses:
            alert.status = "pending"
        else:
            alert.status = "failed"

    def alerts(self, *, since: datetime | None = None) -> list[AlertRecord]:
        """Alerts with their deliveries; ``since``: created from then on."""
        q = select(AlertRow).order_by(AlertRow.id)
        d_q = select(DeliveryRow).order_by(DeliveryRow.id)
        if since is not None:
            q = q.where(AlertRow.created_at >= since)
            d_q = d_q.join(AlertRow, AlertRow.id == DeliveryRow.alert_id).where(
                AlertRow.created_at >= since
            )
        rows = list(self.s.scalars(q))
        deliveries: dict[int, list[tuple[str, str, int, str | None]]] = {}
        for d in self.s.scalars(d_q):
            deliveries.setdefault(d.alert_id, []).append(
                (d.channel, d.status, d.attempts, d.last_error)
            )
        return [
            AlertRecord(
                id=r.id,
                key=r.key,
                kind=r.kind,
                story_id=r.story_id,
                title=r.title,
                body=r.body,
                created_at=r.created_at,
                status=r.status,
                deliveries=tuple(deliveries.get(r.id, ())),
            )
            for r in rows
        ]

    def alert_states(self, story_ids: Iterable[int] | None = None) -> dict[str, GroupState]:
        q = select(AlertStateRow)
        if story_ids is not None:
            q = q.where(AlertStateRow.story_id.in_(list(story_ids)))
        return {r.group_key: _group_state(r) for r in self.s.scalars(q)}

    def outlet_yields(
        self, now: datetime, recent: timedelta, before: timedelta
    ) -> list[OutletYield]:
        """Per outlet: fetched articles and partial ones in the last ``recent``, and in
        the ``before`` preceding that."""
        start = now - recent - before
        q = (
            select(OutletRow.name, ArticleRow.first_seen, ArticleRow.status)
            .join(ArticleRow, ArticleRow.outlet_id == OutletRow.id)
            .where(ArticleRow.first_seen >= start, ArticleRow.status.in_(["kept", "partial"]))
        )
        counts: dict[str, list[int]] = {}
        for name, first_seen, status in self.s.execute(q):
            c = counts.setdefault(name, [0, 0, 0, 0])
            i = 0 if first_seen >= now - recent else 2
            c[i] += 1
            c[i + 1] += status == "partial"
        return [OutletYield(name, *c) for name, c in sorted(counts.items())]

    def feed_alert_states(self) -> dict[str, GroupState]:
        q = select(AlertStateRow).where(
            or_(AlertStateRow.group_key.like("feed|%"), AlertStateRow.group_key.like("yield|%"))
        )
        return {r.group_key: _group_state(r) for r in self.s.scalars(q)}

    def save_alert_states(self, states: Iterable[GroupState], now: datetime) -> None:
        for st in states:
            row = self.s.get(AlertStateRow, st.key)
            if row is None:
                row = AlertStateRow(group_key=st.key)
                self.s.add(row)
            row.story_id, row.metric, row.status = st.story_id, st.metric, st.status
            row.episode, row.alerted_episode = st.episode, st.alerted_episode
            row.opened_at, row.last_alert_at, row.updated_at = st.opened_at, st.last_alert_at, now

    def stories_with_unalerted_episodes(self) -> set[int]:
        """Stories with a diverging group whose episode waits for its cooldown."""
        q = select(AlertStateRow.story_id).where(
            AlertStateRow.status == "diverging",
            AlertStateRow.episode > AlertStateRow.alerted_episode,
            AlertStateRow.story_id.is_not(None),
        )
        return {sid for sid in self.s.scalars(q) if sid is not None}

    def last_digest(self, channel: str) -> datetime | None:
        return self.s.scalar(
            select(ChannelStateRow.last_digest_at).where(ChannelStateRow.channel == channel)
        )

    def set_last_digest(self, channel: str, when: datetime) -> None:
        row = self.s.get(ChannelStateRow, channel)
        if row is None:
            self.s.add(ChannelStateRow(channel=channel, last_digest_at=when))
        else:
            row.last_digest_at = when

    # --- runs and the lease -----------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, now: datetime, ttl: timedelta) -> None:
        row = self.s.get(LeaseRow, name, with_for_update=True)
        if row is None:
            self.s.add(LeaseRow(name=name, holder=holder, expires_at=now + ttl))
            try:
                self.s.flush()
            except IntegrityError as e:
                raise LeaseHeld(f"another newsdrift process holds the {name!r} lease") from e
            return
        old_holder, old_expiry = row.holder, row.expires_at
        if old_holder != holder and old_expiry > now and holder_alive(old_holder):
            raise LeaseHeld(
                f"another newsdrift process ({old_holder}) holds the {name!r} lease "
                f"until {old_expiry.isoformat(timespec='seconds')}"
            )
        # Compare-and-swap: two processes that both found the lease stale (or both read
        # it before either wrote) cannot both take it; the loser sees 0 rows updated.
        taken = self.s.execute(
            update(LeaseRow)
            .where(
                LeaseRow.name == name,
                LeaseRow.holder == old_holder,
                LeaseRow.expires_at == old_expiry,
            )
            .values(holder=holder, expires_at=now + ttl)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseHeld(f"another newsdrift process took the {name!r} lease just now")
        self.s.expire(row)

    def live_leases(self, now: datetime) -> dict[str, tuple[str, datetime]]:
        """The leases not expired at ``now``: name → (holder, expires_at)."""
        q = select(LeaseRow).where(LeaseRow.expires_at > now).order_by(LeaseRow.name)
        return {r.name: (r.holder, r.expires_at) for r in self.s.scalars(q)}

    def release_lease(self, name: str, holder: str) -> None:
        self.s.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder))

    def last_run(self) -> tuple[datetime, datetime | None, dict[str, Any]] | None:
        row = self.s.scalar(select(RunRow).order_by(RunRow.id.desc()).limit(1))
        return (row.started_at, row.finished_at, dict(row.report or {})) if row else None

    def counts(self) -> dict[str, int]:
        """Sizes and backlogs for `newsdrift status`."""

        def count(q: Any) -> int:
            return int(self.s.scalar(q) or 0)

        return {
            "feeds": count(select(func.count(FeedRow.id))),
            "feeds_failing": count(
                select(func.count(FeedRow.id)).where(FeedRow.status.in_(["error", "gone"]))
            ),
            "articles": count(select(func.count(ArticleRow.id))),
            "articles_skipped": count(
                select(func.count(ArticleRow.id)).where(ArticleRow.status == "skipped")
            ),
            "articles_waiting": count(
                select(func.count(ArticleVersionRow.id))
                .join(ArticleRow, ArticleRow.id == ArticleVersionRow.article_id)
                .where(ArticleVersionRow.processed_at.is_(None), ArticleRow.status != "skipped")
            ),
            "stories": count(select(func.count(StoryRow.id)).where(StoryRow.merged_into.is_(None))),
            "stories_unsummarised": self.count_stale_drift_stories(),
            "figures": count(select(func.count(FigureRow.id))),
            "alerts": count(select(func.count(AlertRow.id))),
            "deliveries_pending": count(
                select(func.count(DeliveryRow.id)).where(DeliveryRow.status == "pending")
            ),
            "deliveries_failed": count(
                select(func.count(DeliveryRow.id)).where(DeliveryRow.status == "failed")
            ),
        }

    # --- prune: each read through an index (SQLite stores fetched_at after the text and
    # the page, so testing it on a row walks the row's overflow pages) ---------------------

    def oldest_page(self) -> datetime | None:
        """When the oldest version still holding its page (HTML) was fetched."""
        v = ArticleVersionRow
        return self.s.scalar(select(func.min(v.fetched_at)).where(v.html_gz.is_not(None)))

    def drop_pages(self, before: datetime) -> int:
        """Drop the raw HTML of versions fetched before ``before`` (through the partial
        index of the versions still holding it, 0010); returns how many."""
        v = ArticleVersionRow
        dropped = self.s.execute(
            update(v)
            .where(v.fetched_at < before, v.html_gz.is_not(None))
            .values(html_gz=None)
            .execution_options(synchronize_session=False)
        )
        return int(dropped.rowcount or 0)  # type: ignore[attr-defined]

    def prune_versions(self, before: datetime) -> int:
        """Delete the superseded versions fetched before ``before`` that hold no figure
        with a metric (a drift row never loses its figure); returns how many. They are
        found in the (article, number) index, and only their rows are read."""
        v = ArticleVersionRow
        v1, v2 = aliased(ArticleVersionRow), aliased(ArticleVersionRow)
        superseded = select(v1.id).join(
            v2, and_(v2.article_id == v1.article_id, v2.number > v1.number)
        )
        with_metric = select(FigureRow.id).where(
            FigureRow.version_id == v.id, FigureRow.metric.is_not(None)
        )
        old = list(
            self.s.scalars(
                select(v.id).where(
                    v.id.in_(superseded), v.fetched_at < before, ~with_metric.exists()
                )
            )
        )
        if old:
            self.s.execute(delete(FigureRow).where(FigureRow.version_id.in_(old)))
            self.s.execute(delete(v).where(v.id.in_(old)))
        return len(old)

    def oldest_posting(self) -> datetime | None:
        """When the oldest story posting (``story_keys``) was published."""
        return self.s.scalar(select(func.min(_K.published)))

    def prune_postings(self, before: datetime) -> int:
        """Drop the story postings published before ``before``; returns how many."""
        gone = self.s.execute(delete(_STORY_KEYS).where(_K.published < before))
        return int(gone.rowcount or 0)  # type: ignore[attr-defined]

    def stories_analysed_since_last_run(self) -> set[int]:
        """Live stories of versions analysed after the last finished run ended.

        A run killed (or stopped) after analysing an article but before queueing its
        story's alerts leaves exactly these behind; planning them again is harmless,
        since alerts are keyed. The current run's own versions are included too.
        """
        last = self.s.scalar(select(func.max(RunRow.finished_at)))
        q = (
            select(ArticleRow.story_id)
            .join(ArticleVersionRow, ArticleVersionRow.article_id == ArticleRow.id)
            .where(ArticleVersionRow.processed_at.is_not(None), ArticleRow.story_id.is_not(None))
            .distinct()
        )
        if last is not None:
            q = q.where(ArticleVersionRow.processed_at > last)
        return {self.live_story(sid) for sid in self.s.scalars(q) if sid is not None}

    def start_run(self, now: datetime) -> int:
        row = RunRow(started_at=now, report={})
        self.s.add(row)
        self.s.flush()
        return row.id

    def finish_run(self, run_id: int, now: datetime, report: dict[str, Any]) -> None:
        row = self.s.get_one(RunRow, run_id)
        row.finished_at, row.report = now, report


def _bound_edges(old: tuple[datetime, datetime], new: tuple[datetime, datetime]) -> dict[str, Any]:
    """Bind values for what lies between each bound's old and new position of a window:
    ``since_lo`` < t <= ``since_hi`` and ``until_lo`` < t <= ``until_hi``. A window
    [since, until] holds since <= t <= until; datetimes here have microsecond resolution,
    so "since <= t" is "since - 1 us < t"."""
    tick = timedelta(microseconds=1)
    since_lo, since_hi = sorted((old[0] - tick, new[0] - tick))
    until_lo, until_hi = sorted((old[1], new[1]))
    return {"since_lo": since_lo, "since_hi": since_hi, "until_lo": until_lo, "until_hi": until_hi}


def _edge_change(
    below: int, above: int, old: tuple[datetime, datetime], new: tuple[datetime, datetime]
) -> int:
    """Count in ``new`` minus count in ``old``, from what lies between the lower bounds
    (``below``) and between the upper bounds (``above``): a later lower bound leaves
    ``below`` out, a later upper bound takes ``above`` in."""
    return (above if new[1] >= old[1] else -above) - (below if new[0] >= old[0] else -below)


class WindowCounter:
    """``Repo.window_size`` and ``Repo.key_counts`` for a run of analyses in publication
    order (``pending_versions``' order), without counting each window whole.

    Consecutive articles' windows overlap almost entirely. The window's size is the
    previous article's count moved (``Repo.window_shift``): it reads the articles between
    the old and the new bounds. A key's count, once taken, is held and moved the same way:
    one statement reads every posting between the old and the new bounds
    (``Repo.key_edges``), whatever the keys, and only keys not held yet are counted whole.
    Keys recur from one article to the next (an outlet's names, the common terms, the
    candidates' keys), so most counts cost nothing; counting whole cost 7 ms an article for
    the size and a third of the assignment for the keys at 80,000 articles in the window
    (``bench_stories_db.py``, 20,000 a day), and a common key's count reads all its
    postings. A window that jumps by more than a sixteenth of its width is counted anew.

    The counts are exact as long as every story attached, and every key posted, since they
    were taken is reported (``attached``), and ``forget`` is called where an article's keys
    are replaced or an analysis is undone. Another process's writes are not reported: the
    counts are taken whole again every ``RECOUNT_EVERY`` articles.
    """

    RECOUNT_EVERY = 200
    MAX_KEYS = 100_000  # keys held with their counts

    def __init__(self) -> None:
        self._last: tuple[datetime, datetime, int] | None = None
        self._moves = 0
        self._keys_at: tuple[datetime, datetime] | None = None  # the window _held counts
        self._held: dict[str, int] = {}  # key -> postings in that window

    def size(self, repo: Repo, since: datetime, until: datetime) -> int:
        last = self._last
        if (
            last is None
            or self._moves >= self.RECOUNT_EVERY
            or abs(since - last[0]) > until - since
            or abs(until - last[1]) > until - since
        ):
            n, self._moves = repo.window_size(since, until), 0
            self._keys_at, self._held = None, {}  # the keys are counted whole again too
        else:
            n = last[2] + repo.window_shift((last[0], last[1]), (since, until))
            self._moves += 1
        self._last = (since, until, n)
        return n

    def key_counts(
        self,
        repo: Repo,
        keys: Sequence[str],
        since: datetime,
        until: datetime,
        *,
        locked: bool = True,
    ) -> dict[str, int]:
        """``repo.key_counts(keys, since, until)`` (``locked=False``:
        ``repo.key_counts_unlocked``, for keys read under no worker's locks)."""
        at, held = self._keys_at, self._held
        jump = (until - since) / 16
        if (
            at is None
            or abs(since - at[0]) > jump
            or abs(until - at[1]) > jump
            or len(held) > self.MAX_KEYS
        ):
            held = self._held = {}
        elif at != (since, until):
            for k, d in repo.key_edges(at, (since, until)).items():
                if k in held:
                    held[k] += d
        self._keys_at = (since, until)
        whole = [k for k in keys if k not in held]
        if whole:
            count = repo.key_counts if locked else repo.key_counts_unlocked
            got = count(whole, since, until)
            for k in whole:
                held[k] = got.get(k, 0)
        return {k: n for k in keys if (n := held[k])}

    def attached(self, at: datetime, keys: Iterable[str]) -> None:
        """An article whose window time is ``at`` got its first story, and ``keys``."""
        if self._last is not None and self._last[0] <= at <= self._last[1]:
            since, until, n = self._last
            self._last = (since, until, n + 1)
        if self._keys_at is not None and self._keys_at[0] <= at <= self._keys_at[1]:
            held = self._held
            for k in set(keys):
                if k in held:
                    held[k] += 1

    def forget(self) -> None:
        """Count whole again: keys were replaced, or an analysis was undone."""
        self._last, self._keys_at, self._held = None, None, {}


def _group_state(r: AlertStateRow) -> GroupState:
    return GroupState(
        key=r.group_key,
        story_id=r.story_id,
        metric=r.metric,
        status=r.status,
        episode=r.episode,
        alerted_episode=r.alerted_episode,
        opened_at=r.opened_at,
        last_alert_at=r.last_alert_at,
    )


def lease_holder() -> str:
    """A holder name unique to one caller: host, process id and a random token."""
    return f"{host_id()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def host_id() -> str:
    """The hostname, with the PID namespace where there is one.

    Containers can share a hostname (``--network host`` copies the host's) but not
    a PID namespace, and a pid only means something inside its namespace.
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace.removeprefix('pid:').strip('[]')}"


def holder_alive(holder: str) -> bool:
    """False only when ``holder`` is a process of this host that no longer exists.

    A lease of another host can only expire; one of a dead local process
    (killed by SIGKILL or a crash) is taken over at once.
    """
    host, pid, *_ = [*holder.split(":"), "", ""]
    if host != host_id() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
