"""Coordination of many workers through PostgreSQL: feed claims, key locks, politeness.

* Feed claims: a worker takes due feeds with ``FOR UPDATE SKIP LOCKED`` (two workers
  never wait on, nor take, the same feed) and marks them with a lease that lapses at
  ``claim_expires_at``; a live worker renews its leases, a dead one's lapse and another
  worker takes the feeds over. The feed's validators and next due time are written
  only after its entries are stored (``pipeline.run.poll_feed``), so a feed whose
  worker died is still due and is polled again in full; stored entries are skipped.
* Key locks: ``pg_advisory_xact_lock`` on hashed strings, held until the transaction
  ends. Story assignment locks the article's blocking keys before reading candidates,
  so two workers assigning articles of one event serialise and end with one story.
* ``SharedPoliteness``: the per-domain budget of ``pipeline.politeness`` shared by every
  worker: concurrency slots are session advisory locks (released by PostgreSQL when a
  worker dies), start gaps and Retry-After live in ``crawl_domains``.

PostgreSQL only: SQLite has one writer and no SKIP LOCKED; it keeps the single-process
cycle under the ``cycle`` lease.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from pipeline.politeness import Politeness

log = logging.getLogger(__name__)

# Namespaces of the two-int advisory locks, so different uses never collide.
SLOT_LOCK_SPACE = 0x6E64  # "nd": one lock per (domain hash, slot number)
# How often a worker waiting for a domain slot asks again (seconds); a slot is held
# for one HTTP request, so waiting is short, and the poll costs one cheap query.
SLOT_POLL_S = 0.05


def key_hash(key: str) -> int:
    """A stable signed 64-bit hash of ``key`` (advisory lock keys)."""
    return int.from_bytes(
        hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big", signed=True
    )


def _int32(key: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest(), "big", signed=True
    )


def lock_keys(session: Session, keys: Iterable[str]) -> None:
    """Hold a transaction advisory lock on each key, in one global order (no deadlock
    among callers that lock all their keys at once)."""
    for h in sorted({key_hash(k) for k in keys}):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": h})


# --- feed claims ---------------------------------------------------------------------------------

_CLAIM = text(
    """
    UPDATE feeds SET claimed_by = :holder, claim_expires_at = :expires
    WHERE id IN (
        SELECT id FROM feeds
        WHERE (next_due_at IS NULL OR next_due_at <= :now)
          AND (claim_expires_at IS NULL OR claim_expires_at <= :now)
        ORDER BY next_due_at NULLS FIRST, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
    """
)


def claim_feeds(
    session: Session, holder: str, now: datetime, ttl: timedelta, limit: int
) -> list[int]:
    """Claim up to ``limit`` due feeds nobody holds (or whose holder's lease lapsed)."""
    rows = session.execute(
        _CLAIM, {"holder": holder, "expires": now + ttl, "now": now, "limit": limit}
    )
    return sorted(int(r[0]) for r in rows)


def renew_claims(session: Session, holder: str, now: datetime, ttl: timedelta) -> int:
    """Push the leases of every feed ``holder`` still holds ``ttl`` into the future."""
    r = session.execute(
        text("UPDATE feeds SET claim_expires_at = :e WHERE claimed_by = :h"),
        {"e": now + ttl, "h": holder},
    )
    return int(r.rowcount or 0)  # type: ignore[attr-defined]


def release_feed(session: Session, feed_id: int, holder: str) -> None:
    session.execute(
        text(
            "UPDATE feeds SET claimed_by = NULL, claim_expires_at = NULL "
            "WHERE id = :id AND claimed_by = :h"
        ),
        {"id": feed_id, "h": holder},
    )


def due_feed_count(session: Session, now: datetime) -> int:
    """Feeds due now, claimed or not (a worker's idle check)."""
    return int(
        session.execute(
            text("SELECT count(*) FROM feeds WHERE next_due_at IS NULL OR next_due_at <= :now"),
            {"now": now},
        ).scalar_one()
    )


def pending_article_ids(session: Session) -> list[int]:
    """Articles with a kept version not analysed yet (the sweep's cheap scan)."""
    rows = session.execute(
        text(
            "SELECT DISTINCT v.article_id FROM article_versions v "
            "JOIN articles a ON a.id = v.article_id "
            "WHERE v.processed_at IS NULL AND a.status <> 'skipped' ORDER BY v.article_id"
        )
    )
    return [int(r[0]) for r in rows]


# --- the per-domain budget shared through the database ------------------------------------------


class SharedPoliteness(Politeness):
    """``Politeness`` whose slots, gaps and Retry-After hold across every worker.

    A slot is a session advisory lock ``(SLOT_LOCK_SPACE + slot, hash(domain))`` on a
    connection kept for the request; PostgreSQL frees it when that connection or the
    worker dies. The start gap is read and advanced under ``SELECT … FOR UPDATE`` of
    the domain's ``crawl_domains`` row, on the database's clock (one clock for all
    machines).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_concurrent: int = 2,
        min_gap_s: float = 1.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(max_concurrent=max_concurrent, min_gap_s=min_gap_s, sleep=sleep)
        self._engine = engine
        self._max = max_concurrent
        self._gap = min_gap_s

    def _take_slot(self, conn: Connection, domain: str) -> int:
        h = _int32(domain)
        while True:
            for slot in range(self._max):
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:a, :b)"),
                    {"a": SLOT_LOCK_SPACE + slot, "b": h},
                ).scalar_one()
                conn.commit()
                if got:
                    return slot
            self._pause(SLOT_POLL_S)  # InterruptedError once the worker stops

    def _reserve_start(self, domain: str) -> float:
        """Seconds to wait before this request may start; advances the domain's gap."""
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO crawl_domains (domain, next_start_at, min_gap_s) "
                    "VALUES (:d, clock_timestamp(), 0) ON CONFLICT (domain) DO NOTHING"
                ),
                {"d": domain},
            )
            row = conn.execute(
                text(
                    "SELECT greatest(next_start_at, clock_timestamp()) AS start, "
                    "extract(epoch FROM greatest(next_start_at, clock_timestamp()) "
                    "- clock_timestamp()) AS wait, min_gap_s "
                    "FROM crawl_domains WHERE domain = :d FOR UPDATE"
                ),
                {"d": domain},
            ).one()
            gap = max(self._gap, float(row.min_gap_s or 0.0))
            conn.execute(
                text(
                    "UPDATE crawl_domains SET next_start_at = :start + make_interval(secs => :gap) "
                    "WHERE domain = :d"
                ),
                {"start": row.start, "gap": gap, "d": domain},
            )
            return max(0.0, float(row.wait))

    @contextmanager
    def slot(self, domain: str) -> Iterator[None]:
        with self._engine.connect() as conn:
            slot = self._take_slot(conn, domain)
            try:
                delay = self._reserve_start(domain)
                if delay > 0:
                    self._pause(delay)
                yield
            finally:
                conn.execute(
                    text("SELECT pg_advisory_unlock(:a, :b)"),
                    {"a": SLOT_LOCK_SPACE + slot, "b": _int32(domain)},
                )
                conn.commit()

    def defer(self, domain: str, seconds: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO crawl_domains (domain, next_start_at, blocked_until, min_gap_s) "
                    "VALUES (:d, clock_timestamp(), "
                    "clock_timestamp() + make_interval(secs => :s), 0) "
                    "ON CONFLICT (domain) DO UPDATE SET blocked_until = greatest("
                    "crawl_domains.blocked_until, excluded.blocked_until)"
                ),
                {"d": domain, "s": max(0.0, seconds)},
            )
        log.info("politeness: domain=%s deferred for %.0fs (shared)", domain, seconds)

    def blocked_for(self, domain: str) -> float:
        with self._engine.connect() as conn:
            v = conn.execute(
                text(
                    "SELECT extract(epoch FROM blocked_until - clock_timestamp()) "
                    "FROM crawl_domains WHERE domain = :d"
                ),
                {"d": domain},
            ).scalar()
        return max(0.0, float(v)) if v is not None else 0.0

    def set_min_gap(self, domain: str, seconds: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO crawl_domains (domain, next_start_at, min_gap_s) "
                    "VALUES (:d, clock_timestamp(), :s) "
                    "ON CONFLICT (domain) DO UPDATE SET min_gap_s = excluded.min_gap_s"
                ),
                {"d": domain, "s": max(0.0, seconds)},
            )
