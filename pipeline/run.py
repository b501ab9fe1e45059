"""One cycle: wires the stages together and decides nothing itself.

Each feed and each article is handled in its own transaction: an expected
failure (``FetchError``, ``ParseError``) becomes a line in the report and a
health field on the feed, and the cycle goes on. Running a cycle twice, or
after a crash, loses and duplicates nothing: every write is keyed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pipeline import stories
from pipeline.alerts import (
    AlertRules,
    QuietHours,
    digest_due,
    digest_message,
    plan_alerts,
    plan_feed_alerts,
    plan_yield_alerts,
)
from pipeline.drift import DriftRules, drift_rules, findings, revisions, summarise
from pipeline.errors import (
    ConfigError,
    ExtractionError,
    FetchError,
    NewsdriftError,
    ParseError,
    SoftFetchError,
    StorageError,
)
from pipeline.extract import extract_article
from pipeline.feeds import content_hash, normalize_url, parse_feed
from pipeline.fetch import Fetcher, FetchResult, status_of
from pipeline.figures import FigureLexicon, load_lexicons
from pipeline.models import (
    FEED_SUMMARY,
    Clock,
    Extracted,
    FeedEntry,
    FeedState,
    IngestItem,
    Observation,
    RefetchDue,
    StoredArticle,
    utcnow,
)
from pipeline.notify import Channel, NotifyError
from pipeline.paths import own_folder
from pipeline.polling import next_poll
from pipeline.settings import Settings
from pipeline.topic import Topic, TopicDecision, decide_entry, decide_text, load_topic
from pipeline.work import (
    Prepared,
    exit_with_parent,
    extract_in_worker,
    prepare_batch,
    prepare_version,
    process_in_worker,
    process_page,
)
from storage.repository import PendingDelivery, Repo, Store, WindowCounter

log = logging.getLogger(__name__)

# A permanent redirect moves the stored feed URL after this many consistent sightings.
REDIRECT_CONFIRMATIONS = 3
# Delivery retries: first retry after this, doubling, given up after MAX_ATTEMPTS.
DELIVERY_RETRY = timedelta(minutes=2)
DELIVERY_MAX_ATTEMPTS = 8

# Concurrency and batching, set with scripts/bench_pipeline.py and scripts/bench_poll.py
# on a 2-core machine (docs/performance.md). The fetcher's per-domain budget (slots and
# gaps) still bounds what each site sees; these bound what runs at once in total.
FEED_THREADS = 16  # feed documents fetched ahead of the feed being handled
ARTICLE_THREADS = 16  # article pages in flight (fetch; decode + extract in the pool)
# The pool starts once a cycle (the daemon: its whole life) has had this many pages'
# worth of CPU work. Starting it costs each spawned worker about a second of imports, and
# no CPU comes back: it only buys the other cores. Measured in one sitting
# (bench_pipeline.py, 2 cores; docs/performance.md), wall / CPU seconds of a cycle:
#   new pages          20           60           150
#   pool from the 8th  1.56 / 2.55  2.19 / 3.76  3.83 / 6.88
#   never a pool       0.88 / 1.01  2.21 / 2.61  5.50 / 6.63
#   from the 32nd      0.82 / 0.93  2.43 / 3.96  4.23 / 7.44
# Cycles between two cron runs are mostly small. A page is one unit; a version's
# analysis (figures, fingerprint) costs about a third of a page's decoding and extraction.
POOL_MIN_PAGES = 32
VERSION_WORK = 0.3
POOL_EXIT_GRACE_S = 0.5  # at close, idle workers exit within this; the rest are ended
REFETCH_BATCH = 200  # articles due for a re-fetch read at a time (a cycle takes them all)
ANALYSIS_BATCH = 32  # versions a pool task prepares (figures, fingerprint, keys)
# Batches read (their texts) and handed to the pool ahead of the one being stored: enough
# to keep the pool busy, few enough that a backlog's texts are not all held at once.
ANALYSIS_AHEAD = 8
# Writes of consecutive items share a transaction (each item in its own savepoint) up to
# this many items; a transaction is never held open while waiting for the network.
COMMIT_EVERY = 50
# ... and for no longer than this: on SQLite the open batch holds the database's write
# lock, and another process (a second run finding the lease taken, `feeds add`, a
# migration check) waits for it only up to its busy timeout.
COMMIT_AFTER_S = 0.25
# Stories whose drift summary is out of date, summarised at the end of a cycle (at most,
# and at a time): 0.6 ms of CPU a story of bench_query.py's database (5,000 in 2.8-3.0 s),
# so one stored before migration 0009 is caught up within a few cycles, each 3 s longer.
DRIFT_CATCH_UP = 5000
DRIFT_CHUNK = 500
# Extraction yield compares an outlet's last two days with the twelve before.
YIELD_RECENT = timedelta(days=2)
YIELD_BEFORE = timedelta(days=12)


class StopFlag(Protocol):
    """What a loop asks between items: should it end after the item in hand? A
    ``threading.Event`` is one; a Procrastinate task passes its job's abort request."""

    def is_set(self) -> bool: ...


@dataclass
class RunReport:
    """What one cycle did; expected failures are listed here, not raised."""

    feeds_polled: int = 0
    feeds_not_modified: int = 0
    feeds_failed: int = 0
    articles_new: int = 0
    articles_skipped: int = 0
    articles_partial: int = 0
    articles_failed: int = 0
    articles_edited: int = 0
    articles_completed: int = 0  # partial articles whose page came on a re-fetch
    articles_refetched: int = 0  # pages asked for again on the edit ladder (304s too)
    versions_processed: int = 0
    stories_touched: int = 0
    alerts_new: int = 0
    deliveries_sent: int = 0
    deliveries_failed: int = 0
    errors: list[str] = field(default_factory=list)
    # The config's feeds.toml could not be applied: the cycle polled the feeds stored.
    feeds_file_error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"feeds={self.feeds_polled} not_modified={self.feeds_not_modified} "
            f"failed={self.feeds_failed} articles_new={self.articles_new} "
            f"skipped={self.articles_skipped} partial={self.articles_partial} "
            f"article_errors={self.articles_failed} edited={self.articles_edited} "
            f"refetched={self.articles_refetched} completed={self.articles_completed} "
            f"analysed={self.versions_processed} "
            f"stories={self.stories_touched} alerts_new={self.alerts_new} "
            f"sent={self.deliveries_sent} delivery_errors={self.deliveries_failed}"
        )


@dataclass(frozen=True)
class DeliveryRules:
    quiet: QuietHours | None = None
    digest: timedelta | None = None


@dataclass(frozen=True)
class Analysis:
    """The analysis stages' configuration, built once per process."""

    lexicons: dict[str, FigureLexicon]
    topic: Topic | None
    drift: DriftRules
    alerts: AlertRules
    window: timedelta
    max_articles_per_feed: int = 50
    delivery: DeliveryRules = DeliveryRules()
    refetch_ladder: tuple[timedelta, ...] = ()
    # Where ``lexicons`` came from (a user config dir or None: the shipped ones), so pool
    # workers can load the same ones; unset: built by the caller, analysed in-process.
    lexicon_source: tuple[Path | None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, use_topic: bool = True) -> Analysis:
        a = settings.alerts
        # A user config dir overrides a shipped data folder only where it has one.
        user: Path = settings.config_dir
        lexicon_dir, topic_dir = own_folder(user, "lexicons"), own_folder(user, "topic")
        return cls(
            lexicons=dict(load_lexicons(lexicon_dir)),
            topic=load_topic(topic_dir) if use_topic else None,
            drift=drift_rules(settings),
            alerts=AlertRules(
                min_outlets=a.min_outlets,
                metrics=a.metrics,
                cooldown=timedelta(hours=a.cooldown_hours),
                revisions=a.revisions,
                feed_broken_after=timedelta(hours=a.feed_broken_after_hours),
            ),
            window=timedelta(days=settings.stories.window_days),
            max_articles_per_feed=settings.fetch.max_articles_per_feed,
            delivery=DeliveryRules(quiet=a.quiet, digest=a.digest_period),
            refetch_ladder=tuple(
                timedelta(minutes=m) for m in settings.fetch.refetch_ladder_minutes
            ),
            lexicon_source=(lexicon_dir,),
        )


class Tracker:
    """Advances a rich progress bar when one is shown; does nothing otherwise."""

    def __init__(self, progress: Any, label: str, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=total) if progress is not None else None

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)


T = TypeVar("T")
A = TypeVar("A")


class Workers:
    """A cycle's fetch threads and its process pool for the CPU-heavy pure stages.

    The pool (spawn: safe next to threads) starts once ``POOL_MIN_PAGES`` pages' worth
    of work was asked for; ``processes <= 1`` keeps everything in-process. A worker
    that dies (killed, out of memory, a crash in a C library on a hostile page) breaks
    the whole pool: ``call`` then starts a new one and tries the item once more there.
    """

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes if processes is not None else _cores()
        self.feeds = ThreadPoolExecutor(FEED_THREADS, thread_name_prefix="feed")
        self.articles = ThreadPoolExecutor(ARTICLE_THREADS, thread_name_prefix="article")
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # the fetch threads share the pool
        self._work = 0.0  # CPU work asked for so far, in pages (``cpu``)

    def cpu(self, pages: float) -> Executor | None:
        """The process pool for ``pages`` pages' worth of work (``VERSION_WORK`` a
        version), or None to do it in-process.

        Counted over all calls: the pool starts once the work adds up to
        ``POOL_MIN_PAGES``, and then stays for the rest."""
        with self._lock:
            self._work += pages
            work = self._work
        if self._pool is None and (self.processes <= 1 or work < POOL_MIN_PAGES):
            return None
        return self._current()

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=exit_with_parent,
                    initargs=(os.getpid(),),
                )
                # All workers start together, at the first submit, before the pool's
                # manager thread exists. By default a spawn pool starts them one by one
                # inside later submits; a worker that dies meanwhile (the OOM killer, a
                # crash) makes the manager terminate the workers it knows while a submit
                # in another thread starts one more, which nobody ends: the manager,
                # and the interpreter's exit after it, wait for it forever (seen with
                # CPython 3.11: a test suite that never exited). This private flag is
                # what a fork pool uses to start all of them at once.
                if hasattr(pool, "_safe_to_dynamically_spawn_children"):
                    pool._safe_to_dynamically_spawn_children = False
                self._pool = pool
            return self._pool

    def replace(self, broken: Executor) -> None:
        """Drop a pool that a dying worker broke; the next use starts a new one."""
        with self._lock:
            if self._pool is broken:
                log.warning("stage=pool status=broken a worker process died; starting a new pool")
                self._pool = None
                broken.shutdown(wait=False, cancel_futures=True)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the pool. Raises ``BrokenProcessPool`` when the pool broke
        under this item twice: once may be another item's doing, twice is its own."""
        try:
            return self._once(fn, *args)
        except BrokenProcessPool:
            return self._once(fn, *args)

    def _once(self, fn: Callable[..., T], *args: Any) -> T:
        pool = self._current()
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            self.replace(pool)
            raise

    def close(self) -> None:
        """End the threads (after the fetch in hand) and the pool (at once: see
        ``_end_pool``); whatever was still queued is dropped."""
        self.feeds.shutdown(wait=True, cancel_futures=True)
        self.articles.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            _end_pool(pool)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end_pool(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down without waiting on its workers' work.

    By the time a pool is closed nobody waits on a result any more, and a worker keeps
    no state (pure functions), so a worker still busy, or still importing the
    extraction stack (a second or two on a loaded machine, when a stop comes just
    after the pool started), is terminated instead of waited for: a stopping daemon
    exits within its bound. Idle workers get ``POOL_EXIT_GRACE_S`` to exit cleanly.
    """
    # ProcessPoolExecutor gains terminate_workers() in Python 3.14; until then, the
    # workers are the executor's ``_processes``, read before shutdown clears them.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + POOL_EXIT_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Batch:
    """Writes of consecutive items in one transaction, each item in its own savepoint.

    An item that raises is undone alone (its savepoint); ``commit`` ends the
    transaction, which the caller does before waiting on the network or the pool
    (and the batch itself after ``COMMIT_EVERY`` items or ``COMMIT_AFTER_S``), so a
    crash loses at most the items of the open transaction — and those are done
    again by the next run.
    """

    def __init__(self, store: Store, after_commit: Callable[[], None] | None = None) -> None:
        self.store = store
        # Runs after each commit, outside any transaction: the lease's ``renew`` writes
        # through its own connection and would wait on this batch's write lock.
        self.after_commit = after_commit
        self._stack: ExitStack | None = None
        self._repo: Repo | None = None
        self._items = 0
        self._opened = 0.0  # monotonic time the open transaction began

    def item(self) -> AbstractContextManager[Repo]:
        if self._items >= COMMIT_EVERY or (
            self._repo is not None and time.monotonic() - self._opened > COMMIT_AFTER_S
        ):
            self.commit()
        if self._repo is None:
            self._stack = ExitStack()
            self._repo = self._stack.enter_context(self.store.unit())
            self._opened = time.monotonic()
        self._items += 1
        return self._repo.savepoint()

    def commit(self) -> None:
        stack, self._stack, self._repo, self._items = self._stack, None, None, 0
        if stack is not None:
            stack.close()
        if self.after_commit is not None:
            self.after_commit()

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack, self._repo, self._items = self._stack, None, None, 0
        if stack is not None:
            stack.__exit__(*exc)


# --- polling feeds ------------------------------------------------------------------------------


def _keep_status(decision: TopicDecision | None) -> str:
    return "skipped" if decision is not None and decision.keep is False else "kept"


def _topic_fields(d: TopicDecision | None) -> tuple[float | None, tuple[str, ...], str | None]:
    return (d.score, d.terms, d.stage) if d is not None else (None, (), None)


def poll_feed(
    store: Store,
    fetcher: Fetcher,
    feed: FeedState,
    analysis: Analysis,
    clock: Clock,
    rng: random.Random,
    report: RunReport,
    *,
    workers: Workers | None = None,
    fetched: Future[FetchResult] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Fetch one feed, store its new articles; failures land on the feed's health.

    ``stop`` set among the entries ends the feed after the page in hand; its poll is
    then not recorded (the feed stays due, and what was stored is skipped next time).

    ``fetched`` is the feed document already requested by a fetch thread, waited for
    while ``stop`` is not set (a stop before it arrived leaves the feed due, unpolled);
    ``workers`` fetch the pages concurrently and extract them in processes.
    """
    now = clock()
    if fetched is not None and not _arrived(fetched, stop):
        return  # stopping; the fetch thread, maybe still queued for a slot, gives up
    report.feeds_polled += 1
    try:
        result = fetched.result() if fetched is not None else fetch_feed(fetcher, feed)
        parsed = (
            None if result.not_modified else parse_feed(result.content, result.url, result.headers)
        )
    except (FetchError, ParseError) as e:
        kind = getattr(e, "kind", "hard") if isinstance(e, FetchError) else "hard"
        with store.unit() as repo:
            failures = repo.feed_failures(feed.id)
            due = next_poll(
                now=now,
                interval_minutes=feed.interval_minutes,
                outcome=kind,
                consecutive_failures=failures + 1,
                cache_control=None,
                expires=None,
                date_header=None,
                ttl_minutes=None,
                retry_after=getattr(e, "retry_after", None),
                rng=rng,
            )
            status = "gone" if kind == "gone" else "error"
            repo.record_feed_error(feed.id, now=now, next_due=due, status=status, message=str(e))
            # A permanent redirect seen before, and the old URL now 404/410: move at once.
            if isinstance(e, FetchError) and status_of(e) in (404, 410):
                moved = repo.take_pending_redirect(feed.id, now)
                if moved:
                    log.info("stage=feed url=%s moved_to=%s", feed.url, moved)
        report.feeds_failed += 1
        report.errors.append(f"feed {feed.url}: {e}")
        log.warning(
            "stage=feed outlet=%s url=%s status=%s error=%s", feed.outlet, feed.url, kind, e
        )
        return

    due = next_poll(
        now=now,
        interval_minutes=feed.interval_minutes,
        outcome="not_modified" if result.not_modified else "ok",
        consecutive_failures=0,
        cache_control=result.headers.get("cache-control"),
        expires=result.headers.get("expires"),
        date_header=result.headers.get("date"),
        ttl_minutes=parsed.ttl_minutes if parsed else feed.ttl_minutes,
        retry_after=None,
        rng=rng,
    )
    if result.not_modified or parsed is None:
        _record_poll(store, feed, result, now, due, feed.ttl_minutes)
        report.feeds_not_modified += 1
        log.info("stage=feed outlet=%s url=%s status=304", feed.outlet, feed.url)
        return
    log.info(
        "stage=feed outlet=%s url=%s status=%d entries=%d",
        feed.outlet,
        feed.url,
        result.status,
        len(parsed.entries),
    )
    with store.unit() as repo:
        extra = repo.feed_extra_terms(feed.id)
    entries = parsed.entries[: analysis.max_articles_per_feed]
    unfinished = take_entries(
        store, fetcher, feed, entries, extra, analysis, clock, report, workers, stop
    )
    if stop is not None and stop.is_set():
        return
    # The validators and the next due time are stored only now: a run killed among the
    # entries finds the feed still due and fetches it in full again (stored entries are
    # skipped), instead of getting 304 for entries it never stored. For the same reason
    # an entry that failed for a passing cause (timeout, 5xx) and could not be stored
    # makes the next poll unconditional: it is tried again while the feed lists it.
    _record_poll(store, feed, result, now, due, parsed.ttl_minutes, forget=unfinished > 0)


def fetch_feed(fetcher: Fetcher, feed: FeedState) -> FetchResult:
    return fetcher.fetch(feed.url, etag=feed.etag, last_modified=feed.last_modified, kind="feed")


def _record_poll(
    store: Store,
    feed: FeedState,
    result: FetchResult,
    now: datetime,
    due: datetime,
    ttl_minutes: int | None,
    *,
    forget: bool = False,
) -> None:
    with store.unit() as repo:
        repo.record_feed_ok(
            feed.id,
            now=now,
            next_due=due,
            etag=result.headers.get("etag"),
            last_modified=result.headers.get("last-modified"),
            ttl_minutes=ttl_minutes,
            forget_validators=forget,
        )
        permanent = [url for status, url in result.redirects if status in (301, 308)]
        if result.redirects and len(permanent) == len(result.redirects):
            if repo.record_redirect(feed.id, permanent[-1], REDIRECT_CONFIRMATIONS):
                log.info("stage=feed url=%s moved_to=%s", feed.url, permanent[-1])
        else:
            repo.record_redirect(feed.id, None, REDIRECT_CONFIRMATIONS)


def _add_from_entry(
    repo: Repo,
    feed: FeedState,
    entry: FeedEntry,
    url: str,
    now: datetime,
    status: str,
    decision: TopicDecision | None,
) -> tuple[int, bool]:
    """Record an article from what the feed entry says (skipped or partial ones)."""
    return repo.add_article(
        key=url,
        url=url,
        guid=entry.guid,
        outlet=feed.outlet,
        lang=feed.lang,
        published=entry.published,
        title=entry.title,
        summary=entry.summary,
        now=now,
        feed_id=feed.id,
        status=status,
        topic=_topic_fields(decision),
    )


@dataclass(frozen=True)
class Page:
    """An article page fetched, decoded and extracted (the pure part done in the pool)."""

    result: FetchResult
    decoded_by: str
    extracted: Extracted
    digest: str  # content_hash of the text
    html_gz: bytes  # the page as stored


def fetch_page(fetcher: Fetcher, url: str, workers: Workers | None) -> Page:
    """GET one article page and process it (``_process``)."""
    return _process(fetcher.fetch(url, kind="article"), workers)


def refetch_page(fetcher: Fetcher, due: RefetchDue, workers: Workers | None) -> Page | FetchResult:
    """GET an article page again, conditionally: the page processed like ``fetch_page``'s,
    or the bare answer when it was not modified (304)."""
    result = fetcher.fetch(due.url, etag=due.etag, last_modified=due.last_modified, kind="article")
    return result if result.not_modified else _process(result, workers)


# Why a page failed whose extraction broke the pool twice (``Workers.call``).
POOL_DIED = (
    "the worker process died twice on this page "
    "(killed, out of memory, or a crash in the HTML parser)"
)


def _process(result: FetchResult, workers: Workers | None) -> Page:
    """Decode and extract a fetched page: in ``workers``' pool once the cycle has had
    enough pages for one (``Workers.cpu``), else here."""
    headers = dict(result.headers)
    if workers is None or workers.cpu(1) is None:  # in the fetch thread; see extract_article
        return Page(result, *process_page(result.content, headers, result.url))
    try:
        outcome = workers.call(process_in_worker, result.content, headers, result.url)
    except BrokenProcessPool:
        raise ExtractionError(result.url, POOL_DIED) from None
    if isinstance(outcome, str):
        raise ExtractionError(result.url, outcome)
    return Page(result, *outcome)


class _Later(Generic[T]):
    """Work done only when asked for: the serial path's stand-in for a future."""

    def __init__(self, fn: Callable[..., T], *args: Any) -> None:
        self.fn, self.args = fn, args

    def done(self) -> bool:
        return False

    def result(self) -> T:
        return self.fn(*self.args)

    def cancel(self) -> bool:
        return True


def _in_flight(
    workers: Workers | None,
    fetch: Callable[[Fetcher, A, Workers | None], T],
    fetcher: Fetcher,
    items: Sequence[A],
) -> list[Future[T] | _Later[T]]:
    """``fetch(fetcher, item, workers)`` for every item: started at once by ``workers``'
    fetch threads (processing in their pool once the cycle's pages add up), or, without
    workers, one after another as each result is asked for."""
    if workers is None:
        return [_Later(fetch, fetcher, item, None) for item in items]
    return [workers.articles.submit(fetch, fetcher, item, workers) for item in items]


STOP_POLL_S = 0.1  # how often a loop waiting for a page asks whether to stop


def _arrived(page: Future[T] | _Later[T], stop: StopFlag | None) -> bool:
    """Wait for a page (or a feed document) in flight; False if ``stop`` came first.
    Pages and feeds are taken in their list's order while fetch threads finish in any
    order (one politeness slot goes to whichever thread asks first), so the one a loop
    waits for may come last: without this a stop would wait for every request before
    it. The serial path's ``_Later`` does its work when asked: nothing to wait for."""
    if stop is None or isinstance(page, _Later):
        return True
    while not page.done():
        if stop.is_set():
            return False
        wait([page], timeout=STOP_POLL_S)
    return True


# A screened entry: the entry, when it was seen, its topic decision.
Screened = tuple[FeedEntry, datetime, TopicDecision | None]


def take_entries(
    store: Store,
    fetcher: Fetcher,
    feed: FeedState,
    entries: Sequence[FeedEntry],
    extra_terms: Sequence[str],
    analysis: Analysis,
    clock: Clock,
    report: RunReport,
    workers: Workers | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Fetch and store a feed's entries unless known or clearly off topic; returns how
    many entries failed for a passing cause (``SoftFetchError``) and were not stored.
    ``stop`` ends the loop after the page in hand.

    Known entries are found with one query; pages are fetched by ``workers``'
    threads and extracted in their pool (without workers: one after another,
    here). Writes stay in this thread, in feed order, batched (``Batch``); the
    store step checks again for the article, so an entry listed twice or an
    article behind two URLs is stored once.
    """
    unfinished = 0
    with Batch(store) as batch:
        todo = _screen_entries(batch, feed, entries, extra_terms, analysis, clock, report)
        batch.commit()
        pending = _in_flight(workers, fetch_page, fetcher, [e.url for e, _, _ in todo])
        try:
            for screened, future in zip(todo, pending, strict=True):
                if stop is not None and stop.is_set():
                    break
                if not future.done():
                    batch.commit()  # no transaction stays open while the network works
                if not _arrived(future, stop):
                    break
                try:
                    page = future.result()
                except (FetchError, ParseError) as e:
                    with batch.item() as repo:
                        stored = _store_failed(repo, feed, screened, e, analysis, report)
                    if not stored and isinstance(e, SoftFetchError):
                        unfinished += 1
                    continue
                with batch.item() as repo:
                    _store_page(repo, feed, screened, page, extra_terms, analysis, report)
        finally:
            for future in pending:
                future.cancel()  # an unexpected error above: drop what has not started
    return unfinished


def _screen_entries(
    batch: Batch,
    feed: FeedState,
    entries: Sequence[FeedEntry],
    extra_terms: Sequence[str],
    analysis: Analysis,
    clock: Clock,
    report: RunReport,
) -> list[Screened]:
    """The entries to fetch: not stored yet, not listed twice, not clearly off topic.

    Clearly off-topic entries are stored as skipped (with the decision) here.
    """
    urls = sorted({u for e in entries for u in (e.url, normalize_url(e.url))})
    guids = sorted({e.guid for e in entries if e.guid})
    with batch.item() as repo:
        known_urls, known_guids = repo.known_entries(urls, guids, feed.outlet)
    todo: list[Screened] = []
    for entry in entries:
        url = normalize_url(entry.url)
        if url in known_urls or entry.url in known_urls or (entry.guid in known_guids):
            continue
        known_urls.update((url, entry.url))  # listed twice in this feed: taken once
        if entry.guid:
            known_guids.add(entry.guid)
        now = clock()
        decision: TopicDecision | None = None
        if analysis.topic is not None and not feed.on_topic:
            decision = decide_entry(
                analysis.topic, entry.title, entry.summary, feed.lang, extra_terms
            )
            if decision.keep is False:
                with batch.item() as repo:
                    _add_from_entry(repo, feed, entry, url, now, "skipped", decision)
                report.articles_skipped += 1
                log.info("stage=topic outlet=%s url=%s status=skipped", feed.outlet, url)
                continue
        todo.append((entry, now, decision))
    return todo


def _store_failed(
    repo: Repo,
    feed: FeedState,
    screened: Screened,
    e: FetchError | ParseError,
    analysis: Analysis,
    report: RunReport,
) -> bool:
    """A page that could not be fetched or extracted: keep what the feed says, if
    anything, and put the page on the re-fetch ladder (``refetch_articles`` completes
    the article when the page comes); returns whether an article was stored."""
    entry, now, decision = screened
    if not entry.summary.strip():
        report.articles_failed += 1
        report.errors.append(f"article {entry.url}: {e}")
        log.warning("stage=article outlet=%s url=%s error=%s", feed.outlet, entry.url, e)
        return False
    url = normalize_url(entry.url)
    aid, created = _add_from_entry(repo, feed, entry, url, now, "partial", decision)
    if created:
        repo.add_version(
            aid,
            title=entry.title,
            text=entry.summary,
            method=FEED_SUMMARY,
            fetched_at=now,
            content_hash=content_hash(entry.summary),
            first=(entry.published,),
        )
        step, at = next_rung(analysis.refetch_ladder, entry.published or now, now, 0)
        repo.schedule_refetch(aid, step=step, at=at)
    report.articles_partial += 1
    log.warning("stage=article outlet=%s url=%s status=partial error=%s", feed.outlet, url, e)
    return True


def _page_lang(extracted: Extracted, fallback: str) -> str:
    """The language a page declares, when it is one the lexicons cover; else ``fallback``
    (the feed's)."""
    return extracted.lang if extracted.lang in ("de", "en") else fallback


def _store_page(
    repo: Repo,
    feed: FeedState,
    screened: Screened,
    page: Page,
    extra_terms: Sequence[str],
    analysis: Analysis,
    report: RunReport,
) -> None:
    entry, now, decision = screened
    extracted = page.extracted
    canonical = normalize_url(extracted.canonical_url or page.result.url)
    lang = _page_lang(extracted, feed.lang)
    if analysis.topic is not None and not feed.on_topic:
        decision = decide_text(
            analysis.topic, extracted.title or entry.title, extracted.text, lang, extra_terms
        )
    if repo.find_article(keys=[canonical]) or repo.find_by_content(feed.outlet, page.digest):
        return  # the same article under another URL or GUID
    published = entry.published or extracted.published  # the feed's time has the hour
    aid, created = repo.add_article(
        key=canonical,
        url=canonical,
        guid=entry.guid,
        outlet=feed.outlet,
        lang=lang,
        published=published,
        title=extracted.title or entry.title,
        summary=entry.summary,
        now=now,
        feed_id=feed.id,
        status=_keep_status(decision),
        topic=_topic_fields(decision),
    )
    if created:
        _add_page_version(repo, aid, page, extracted.title or entry.title, now, (published,))
        if _keep_status(decision) != "skipped":
            step, at = next_rung(analysis.refetch_ladder, entry.published or now, now, 0)
            repo.schedule_refetch(
                aid,
                step=step,
                at=at,
                etag=page.result.etag,
                last_modified=page.result.last_modified,
            )
    if _keep_status(decision) == "skipped":
        report.articles_skipped += 1
    else:
        report.articles_new += 1
    log.info(
        "stage=article outlet=%s url=%s status=%s", feed.outlet, canonical, _keep_status(decision)
    )


def next_rung(
    ladder: Sequence[timedelta], published: datetime, now: datetime, step: int
) -> tuple[int, datetime | None]:
    """The first rung from ``step`` on that lies in the future, or (len, None) when done."""
    for i in range(step, len(ladder)):
        at = published + ladder[i]
        if at > now:
            return i, at
    return len(ladder), None


def refetch_articles(
    store: Store,
    fetcher: Fetcher,
    analysis: Analysis,
    clock: Clock,
    report: RunReport,
    stop: StopFlag | None = None,
    workers: Workers | None = None,
    renew: Callable[[], None] | None = None,
) -> None:
    """Re-fetch recent articles on the age ladder; a changed text becomes a new version.

    Conditional requests; a 304 or an unchanged text (the content hash ignores
    timestamps and counters) only moves the article to its next rung. Every article
    due is taken, ``REFETCH_BATCH`` at a time. Like a feed's new entries, pages are
    fetched by ``workers``' threads and extracted in their pool (without workers: one
    after another, here); the writes stay in this thread, batched.
    """
    now = clock()
    seen: set[int] = set()  # each article once a cycle, whatever happens to its rung
    while stop is None or not stop.is_set():
        with store.unit() as repo:
            due = [d for d in repo.refetch_due(now, limit=REFETCH_BATCH) if d.id not in seen]
        if not due:
            return
        seen.update(d.id for d in due)
        _refetch(store, fetcher, due, analysis, clock, report, stop, workers, renew)


def _refetch(
    store: Store,
    fetcher: Fetcher,
    due: Sequence[RefetchDue],
    analysis: Analysis,
    clock: Clock,
    report: RunReport,
    stop: StopFlag | None,
    workers: Workers | None,
    renew: Callable[[], None] | None,
) -> None:
    pending = _in_flight(workers, refetch_page, fetcher, due)
    with Batch(store, after_commit=renew) as batch:
        try:
            for d, future in zip(due, pending, strict=True):
                if stop is not None and stop.is_set():
                    break
                if not future.done():
                    batch.commit()  # no transaction stays open while the network works
                if not _arrived(future, stop):
                    break
                nxt, at = next_rung(analysis.refetch_ladder, d.published, clock(), d.step + 1)
                report.articles_refetched += 1
                try:
                    page = future.result()
                except (FetchError, ParseError) as e:
                    with batch.item() as repo:
                        repo.schedule_refetch(d.id, step=nxt, at=at)
                    log.info("stage=refetch outlet=%s url=%s error=%s", d.outlet, d.url, e)
                    continue
                answer = page.result if isinstance(page, Page) else page
                with batch.item() as repo:
                    if isinstance(page, Page) and (
                        _store_refetched(repo, d, page, clock(), analysis, report) == "skipped"
                    ):
                        nxt, at = len(analysis.refetch_ladder), None  # off topic: not watched
                    repo.schedule_refetch(
                        d.id, step=nxt, at=at, etag=answer.etag, last_modified=answer.last_modified
                    )
        finally:
            for future in pending:
                future.cancel()  # a stop or an unexpected error: drop what has not started
            if stop is not None and stop.is_set():
                fetcher.stop_waiting()  # fetch threads queued for a politeness slot give up


def _add_page_version(
    repo: Repo,
    article_id: int,
    page: Page,
    title: str,
    now: datetime,
    first: tuple[datetime | None] | None = None,
) -> int | None:
    """``page``'s text as a version of the article (``Repo.add_version``)."""
    return repo.add_version(
        article_id,
        title=title,
        text=page.extracted.text,
        method=page.extracted.method,
        fetched_at=now,
        content_hash=page.digest,
        html_gz=page.html_gz,
        decoded_by=page.decoded_by,
        first=first,
    )


def _judge_text(
    repo: Repo, due: RefetchDue, page: Page, analysis: Analysis
) -> TopicDecision | None:
    """The topic decision on a completed article's text, as ``_store_page`` makes it on
    a first fetch; None where no topic test applies (no topic, an on-topic feed)."""
    if analysis.topic is None or due.feed_id is None or repo.feed_on_topic(due.feed_id):
        return None
    extracted = page.extracted
    lang = _page_lang(extracted, due.lang)
    extra = repo.feed_extra_terms(due.feed_id)
    return decide_text(analysis.topic, extracted.title, extracted.text, lang, extra)


def _store_refetched(
    repo: Repo,
    due: RefetchDue,
    page: Page,
    now: datetime,
    analysis: Analysis,
    report: RunReport,
) -> str | None:
    """A re-fetched page whose text changed becomes the article's newest version.

    A partial article (it held the feed's summary) is judged on the page's text as a
    first fetch's page would be; returns its new status then ("kept" or "skipped").
    """
    if page.digest == repo.newest_hash(due.id):
        return None
    version = _add_page_version(repo, due.id, page, page.extracted.title, now)
    if version is None:
        return None  # the text of an older version again
    if due.status != "partial":
        report.articles_edited += 1
        log.info("stage=refetch outlet=%s url=%s status=edited", due.outlet, due.url)
        return None
    decision = _judge_text(repo, due, page, analysis)
    status = _keep_status(decision)
    repo.complete(due.id, status=status, topic=_topic_fields(decision) if decision else None)
    report.articles_completed += 1
    log.info(
        "stage=refetch outlet=%s url=%s status=completed topic=%s",
        due.outlet,
        due.url,
        "off" if status == "skipped" else "on",
    )
    return status


# --- ingesting already-fetched articles ---------------------------------------------------------


def ingest(
    store: Store,
    items: Iterable[IngestItem],
    analysis: Analysis,
    clock: Clock,
    report: RunReport,
    *,
    keep_all: bool = False,
    progress: Any = None,
    total: int | None = None,
    workers: Workers | None = None,
) -> None:
    """Store already-fetched articles in ``published`` order; analysis follows. ``total``:
    how many ``items`` yields, already in that order (a file read by its index, never held
    in memory whole); without it the items are sorted here. Pages given as HTML are
    extracted ahead by ``workers`` (``_extracted_ahead``). Writes are batched as a cycle's
    are (``Batch``: a transaction of up to ``COMMIT_EVERY`` items, one savepoint each)."""
    if total is None:
        items = sorted(items, key=lambda i: i.published)
        total = len(items)
    tracker = Tracker(progress, "storing", total)
    with Batch(store) as batch:
        for item, extracted in _extracted_ahead(items, workers):
            tracker.advance()
            _ingest_item(batch, item, extracted, analysis, clock, report, keep_all)


# Ingested pages extracted ahead of the one being stored: enough to keep every worker busy,
# few enough that only so many pages are held in memory at once.
INGEST_AHEAD = 32


def _extracted_ahead(
    items: Iterable[IngestItem], workers: Workers | None
) -> Iterator[tuple[IngestItem, Extracted | str | None]]:
    """Each item with its extraction (``_extract_item``), in the items' order; with
    ``workers``, up to ``INGEST_AHEAD`` pages ahead are extracted meanwhile by their
    threads, in their pool once the pages add up to one (as a cycle's pages are). An
    item that gave its text goes by without a thread."""
    if workers is None:
        for item in items:
            yield item, _extract_item(item, None)
        return
    ahead: deque[tuple[IngestItem, Future[Extracted | str | None] | None]] = deque()

    def oldest() -> tuple[IngestItem, Extracted | str | None]:
        first, future = ahead.popleft()
        return first, (future.result() if future is not None else None)

    for item in items:
        future = workers.articles.submit(_extract_item, item, workers) if _html_only(item) else None
        ahead.append((item, future))
        if len(ahead) >= INGEST_AHEAD:
            yield oldest()
    while ahead:
        yield oldest()


def _html_only(item: IngestItem) -> bool:
    """The item gave its page, not its text: it is extracted."""
    return item.html is not None and item.text is None


def _extract_item(item: IngestItem, workers: Workers | None) -> Extracted | str | None:
    """The extraction of an item given as HTML only, or why it failed; None for an item
    that gave its text."""
    if not _html_only(item) or item.html is None:  # (the second test narrows the type)
        return None
    if workers is None or workers.cpu(1) is None:
        try:
            return extract_article(item.html, item.url)
        except ParseError as e:
            return str(e)
    try:
        return workers.call(extract_in_worker, item.html, item.url)
    except BrokenProcessPool:
        return f"{item.url}: {POOL_DIED}"


def _ingest_item(
    batch: Batch,
    item: IngestItem,
    extracted: Extracted | str | None,
    analysis: Analysis,
    clock: Clock,
    report: RunReport,
    keep_all: bool,
) -> None:
    """Store one item, with its text as given or as ``extracted`` from its HTML."""
    now = clock()
    if isinstance(extracted, str):
        report.articles_failed += 1
        report.errors.append(f"article {item.id or item.url}: {extracted}")
        return
    if extracted is not None:
        text, title, method = extracted.text, item.title or extracted.title, extracted.method
    else:
        text, title, method = item.text or "", item.title, "given-text"
    decision = None
    if analysis.topic is not None and not keep_all:
        decision = decide_text(analysis.topic, title, text, item.lang)
    with batch.item() as repo:
        aid, created = repo.add_article(
            key=item.id or item.url,
            url=item.url,
            outlet=item.outlet,
            lang=item.lang,
            published=item.published,
            title=title,
            now=now,
            status=_keep_status(decision),
            topic=_topic_fields(decision),
        )
        version = repo.add_version(
            aid,
            title=title,
            text=text,
            method=method,
            fetched_at=now,
            content_hash=content_hash(text),
            html=item.html,
        )
    if _keep_status(decision) == "skipped":
        report.articles_skipped += 1
    elif created or version is not None:
        report.articles_new += 1


# --- analysis: figures, stories, drift, alerts --------------------------------------------------


def analyse_version(
    repo: Repo,
    article: StoredArticle,
    analysis: Analysis,
    now: datetime,
    prepared: Prepared | None = None,
    windows: WindowCounter | None = None,
) -> int:
    """Figures and story assignment of one stored version; returns its story id.

    ``prepared`` is ``prepare_version``'s result when a pool worker computed it;
    ``windows`` counts the story windows of a run of analyses in publication order
    (``analyse_pending``); a new one counts the window whole.
    """
    windows = windows if windows is not None else WindowCounter()
    published = article.published or now
    figures, fp, keys = prepared or prepare_version(article, published, analysis.lexicons)
    features = sorted(stories.feature_keys(fp))
    if article.story_id is not None:
        story_id = repo.live_story(
            article.story_id
        )  # a new version keeps its story: ids are stable
        level, score = "kept", 1.0
    else:
        since, until = published - analysis.window, published + analysis.window
        th = stories.THRESHOLDS
        # One count query serves the blocking (stop keys) and the rarity weights.
        wanted = sorted({*keys, *stories.counted_keys(features)})
        counts = windows.key_counts(repo, wanted, since, until)
        df = stories.document_frequencies(counts, features)
        raw = repo.candidates(
            keys,
            since,
            per_key=th.per_key_cap,
            stop_df=th.stop_key_df,
            max_candidates=th.max_candidates,
            min_shared=th.min_shared_keys,
            exclude=article.id,
            until=until,
            counts=counts,
            frequencies=df,
        )
        candidates = [
            stories.Candidate(
                article_id=aid, story_id=sid, fingerprint=stories.Fingerprint.from_json(fj)
            )
            for aid, sid, fj in raw
            if fj
        ]
        # The candidates' other keys weigh in their norms: counted too, as InMemoryIndex
        # counts every key of its window (without a worker's locks: the candidates are
        # found already, and a second round of locks could deadlock two workers).
        mine = set(features)
        theirs = sorted({k for c in candidates for k in stories.feature_keys(c.fingerprint)} - mine)
        if theirs:
            wanted = sorted(stories.counted_keys(theirs))
            more = windows.key_counts(repo, wanted, since, until, locked=False)
            df |= stories.document_frequencies(more, theirs)
        n_docs = windows.size(repo, since, until)
        rarity = stories.Rarity(df, n_docs)
        decision = stories.assign(fp, candidates, rarity=rarity)
        if decision.story_id is None:
            story_id = repo.create_story(article.title, published)
        else:
            story_id = repo.live_story(decision.story_id)
            for other in decision.merge:
                repo.merge_stories(repo.live_story(other), story_id, article.id, now)
        level, score = decision.level, decision.score
    posted = stories.postings(keys, features)
    repo.attach(
        article.id,
        story_id,
        level=level,
        score=score,
        fingerprint=fp.to_json(),
        keys=posted,
        published=published,
    )
    if article.story_id is None:  # what the next articles' counts must see
        windows.attached(published, posted)
    else:
        windows.forget()  # its blocking keys were replaced
    repo.save_figures(article.version_id, figures)
    repo.mark_processed(article.version_id, now)
    log.info(
        "stage=analyse outlet=%s article=%s story=%d level=%s figures=%d",
        article.outlet,
        article.key,
        story_id,
        level,
        len(figures),
    )
    return story_id


def analyse_pending(
    store: Store,
    analysis: Analysis,
    clock: Clock,
    report: RunReport,
    progress: Any = None,
    stop: threading.Event | None = None,
    renew: Callable[[], None] | None = None,
    workers: Workers | None = None,
) -> set[int]:
    """Analyse every stored version not analysed yet, oldest first.

    The versions' texts are read ``ANALYSIS_BATCH`` at a time, at most
    ``ANALYSIS_AHEAD`` batches ahead of the one being stored, so a backlog of any size
    (a first cycle, a large ``ingest``) holds a bounded number of texts. With
    ``workers``, figures and fingerprints of those batches are computed ahead in the
    process pool (they depend on the version alone); story assignment and the writes
    stay here, in order, batched (``Batch``). A version whose analysis fails is undone
    alone, reported, and tried again next cycle.
    """
    touched: set[int] = set()
    with store.unit() as repo:
        pending = repo.pending_versions(texts=False)
    tracker = Tracker(progress, "analysing", len(pending))
    now = clock()
    batches = [pending[i : i + ANALYSIS_BATCH] for i in range(0, len(pending), ANALYSIS_BATCH)]
    windows = WindowCounter()  # pending is in publication order: each window moves a little
    cpu = workers.cpu(len(pending) * VERSION_WORK) if workers is not None else None
    lexicon_dir = analysis.lexicon_source[0] if analysis.lexicon_source is not None else None
    pool = cpu if lexicon_dir is not None else None
    ahead: dict[int, tuple[list[StoredArticle], Future[list[Prepared]] | None]] = {}

    def load(k: int) -> tuple[list[StoredArticle], Future[list[Prepared]] | None]:
        """Batch ``k`` with its texts, handed to the pool when there is one (a version
        pruned meanwhile is left out)."""
        with store.unit() as repo:
            texts = repo.version_texts([a.version_id for a in batches[k]])
        full = [replace(a, text=texts[a.version_id]) for a in batches[k] if a.version_id in texts]
        if pool is None:
            return full, None
        return full, pool.submit(
            prepare_batch, lexicon_dir, [(a, a.published or now) for a in full]
        )

    try:
        if renew is not None:
            renew()
        with Batch(store, after_commit=renew) as batch:
            for k in range(len(batches)):
                if stop is not None and stop.is_set():
                    break  # the rest waits for the next cycle, still unprocessed
                for j in range(k, min(k + ANALYSIS_AHEAD, len(batches))):
                    if j not in ahead:
                        ahead[j] = load(j)
                articles, chunk = ahead.pop(k)
                for n, article in enumerate(articles):
                    if stop is not None and stop.is_set():
                        break
                    prepared = None
                    if chunk is not None:
                        if not chunk.done():
                            batch.commit()  # nothing held open while the pool works
                        try:
                            prepared = chunk.result()[n]
                        except BrokenProcessPool:  # a worker died: the rest prepared here
                            assert workers is not None and pool is not None
                            workers.replace(pool)
                            pool, chunk = None, None
                            ahead = {j: (full, None) for j, (full, _) in ahead.items()}
                    item = batch.item()  # may commit earlier items: a failing store raises
                    try:
                        with item as repo:
                            touched.add(
                                analyse_version(repo, article, analysis, clock(), prepared, windows)
                            )
                    except StorageError:
                        raise
                    except (NewsdriftError, ValueError, ArithmeticError) as e:
                        windows.forget()  # it may have been counted before it was undone
                        report.errors.append(f"analysis of {article.key}: {e}")
                        log.exception(
                            "stage=analyse outlet=%s article=%s", article.outlet, article.key
                        )
                        continue
                    report.versions_processed += 1
                    tracker.advance()
    finally:
        for _, chunk in ahead.values():
            if chunk is not None:
                chunk.cancel()
    return touched


def update_alerts(
    store: Store,
    story_ids: Iterable[int],
    analysis: Analysis,
    channels: Sequence[Channel],
    clock: Clock,
    report: RunReport,
) -> None:
    """Recompute the touched stories' findings; queue new alerts in the same transaction.

    Stories whose open episode waits for its cooldown are looked at again too.
    """
    with store.unit() as repo:
        waiting = repo.stories_with_unalerted_episodes()
    touched = set(story_ids)
    for story_id in sorted(touched | waiting):
        with store.unit() as repo:
            report.alerts_new += update_story_alerts(repo, story_id, analysis, channels, clock())
    report.stories_touched += len(touched)


def update_story_alerts(
    repo: Repo, story_id: int, analysis: Analysis, channels: Sequence[Channel], now: datetime
) -> int:
    """One story's findings and the alerts they call for, queued in ``repo``'s
    transaction; returns how many alerts were new."""
    live = repo.live_story(story_id)
    epoch = repo.drift_epoch(live)  # before the observations: a later change keeps it stale
    history = repo.observations(story_id=live, history=True)
    repo.save_drift_summary(live, epoch, summarise(history))
    found = findings(history, analysis.drift) + revisions(history, analysis.drift)
    titles = {s.id: s.title for s in repo.stories(live)}
    states = repo.alert_states([live])
    alerts, changed = plan_alerts(found, states, analysis.alerts, titles, now)
    repo.save_alert_states(changed, now)
    new = 0
    for alert in alerts:
        if repo.add_alert(alert, [c.name for c in channels if alert.kind in c.kinds]):
            new += 1
            log.info("stage=alert story=%d key=%s status=queued", live, alert.key)
    return new


def summarise_stale(store: Store, limit: int = DRIFT_CATCH_UP) -> int:
    """Summarise up to ``limit`` stories whose drift summary is out of date, newest
    first, ``DRIFT_CHUNK`` stories a statement and a transaction; returns how many.

    The cycle keeps the summaries of the stories it touches (``update_story_alerts``);
    this catches up the rest: every story stored before migration 0009, and one whose
    run was killed between analysing it and queueing its alerts. Until then a drift
    query reads such a story whole, so a stale summary costs time, never an answer."""
    with store.unit() as repo:
        stale = repo.stale_drift_stories(limit)
    done = 0
    for i in range(0, len(stale), DRIFT_CHUNK):
        chunk = dict(stale[i : i + DRIFT_CHUNK])
        with store.unit() as repo:
            by_story: dict[int, list[Observation]] = {sid: [] for sid in chunk}
            for o in repo.observations(within=sorted(chunk), history=True):
                by_story[o.story_id].append(o)
            made = [(sid, epoch, summarise(by_story[sid])) for sid, epoch in chunk.items()]
            done += repo.save_drift_summaries(made)
    if done:
        log.info("stage=drift_summary stories=%d", done)
    return done


def update_feed_alerts(
    store: Store, analysis: Analysis, channels: Sequence[Channel], clock: Clock, report: RunReport
) -> None:
    """A feed broken for long enough raises one feed-health alert per outage."""
    with store.unit() as repo:
        now = clock()
        states = repo.feed_alert_states()
        alerts, changed = plan_feed_alerts(repo.feeds(), states, analysis.alerts, now)
        yields = repo.outlet_yields(now, YIELD_RECENT, YIELD_BEFORE)
        more, changed_yield = plan_yield_alerts(yields, states, now)
        alerts += more
        repo.save_alert_states([*changed, *changed_yield], now)
        for alert in alerts:
            if repo.add_alert(alert, [c.name for c in channels if alert.kind in c.kinds]):
                report.alerts_new += 1
                log.info("stage=alert key=%s status=queued", alert.key)


def deliver(
    store: Store,
    channels: Sequence[Channel],
    clock: Clock,
    report: RunReport,
    rules: DeliveryRules | None = None,
    stop: StopFlag | None = None,
) -> None:
    """Send pending deliveries; a failing channel is retried later and blocks no other.

    Delivery is at least once: a delivery is marked sent only after the
    channel accepted it, so a crash between the two sends it again on restart.
    Outside quiet hours only; in digest mode, one message per channel per period.
    Once a channel fails, its other deliveries wait for the next cycle without an
    attempt counted (a channel that hangs costs its timeout once a cycle, not once a
    delivery); ``stop`` ends the sending between two messages, the rest stay pending.
    """
    rules = rules or DeliveryRules()
    if rules.quiet is not None and rules.quiet.contains(clock()):
        log.info("stage=notify status=quiet_hours")
        return
    by_name = {c.name: c for c in channels}
    with store.unit() as repo:
        pending = repo.pending_deliveries(clock())
    per_channel: dict[str, list[PendingDelivery]] = {}
    for d in pending:
        per_channel.setdefault(d.channel, []).append(d)
    for name, items in per_channel.items():
        if stop is not None and stop.is_set():
            return
        channel = by_name.get(name)
        if channel is None:
            with store.unit() as repo:
                for d in items:
                    repo.record_delivery(
                        d.id, ok=False, now=clock(), error=f"channel {name!r} is not configured"
                    )
            report.deliveries_failed += len(items)
            continue
        if rules.digest is not None:
            with store.unit() as repo:
                due = digest_due(repo.last_digest(name), rules.digest, clock())
            if due:
                title, body = digest_message([(d.title, _with_key(d)) for d in items])
                _send(store, channel, items, title, body, clock, report)
                with store.unit() as repo:
                    repo.set_last_digest(name, clock())
            continue
        for n, d in enumerate(items):
            if stop is not None and stop.is_set():
                return
            if not _send(store, channel, [d], d.title, _with_key(d), clock, report):
                if n + 1 < len(items):
                    log.info(
                        "stage=notify channel=%s deferred=%d reason=channel_failed",
                        name,
                        len(items) - n - 1,
                    )
                break


def _with_key(d: PendingDelivery) -> str:
    """The body with the alert's key, so a receiver can drop a repeated delivery."""
    return f"{d.body}\n\nnewsdrift-alert-key: {d.key}"


def _send(
    store: Store,
    channel: Channel,
    items: Sequence[PendingDelivery],
    title: str,
    body: str,
    clock: Clock,
    report: RunReport,
) -> bool:
    """Send one message for ``items``; False (each failure recorded) if the channel failed."""
    now = clock()
    try:
        channel.send(title, body)
    except (NotifyError, ConfigError) as e:
        with store.unit() as repo:
            for d in items:
                retry = None
                if d.attempts + 1 < DELIVERY_MAX_ATTEMPTS:
                    retry = now + DELIVERY_RETRY * (2**d.attempts)
                repo.record_delivery(d.id, ok=False, now=now, error=str(e), retry_at=retry)
        report.deliveries_failed += len(items)
        log.warning("stage=notify channel=%s alerts=%d error=%s", channel.name, len(items), e)
        return False
    with store.unit() as repo:
        for d in items:
            repo.record_delivery(d.id, ok=True, now=now)
    report.deliveries_sent += len(items)
    log.info("stage=notify channel=%s alerts=%d status=sent", channel.name, len(items))
    return True


# --- the cycle ----------------------------------------------------------------------------------


def run_cycle(
    store: Store,
    fetcher: Fetcher,
    analysis: Analysis,
    channels: Sequence[Channel],
    *,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
    progress: Any = None,
    stop: threading.Event | None = None,
    renew: Callable[[], None] | None = None,
    processes: int | None = None,
    workers: Workers | None = None,
    report: RunReport | None = None,
) -> RunReport:
    """Poll the due feeds, analyse what is new, queue and send alerts.

    ``stop`` (set by the daemon's signal handler) ends the cycle after the item
    in hand; everything finished so far is committed. ``renew`` (the lease holder's)
    is called between items, so that a cycle longer than the lease's TTL keeps it.
    Feed documents and pages are fetched by threads (within the fetcher's
    per-domain budget); extraction, figures and fingerprints run in ``processes``
    worker processes (default: one per core; 1: in-process). Every write stays in
    this thread, in the serial cycle's order. ``workers``: threads and pool kept by the
    caller across cycles (the daemon); by default the cycle starts and ends its own.
    ``report``: one holding what the caller found before the cycle, added to.
    """
    report = report or RunReport()
    rng = rng or random.Random()
    # A stopped cycle leaves its fetcher stopped (fetch threads of the caller's workers, the
    # daemon's, may still be queued for a politeness slot and must give up too): resumed
    # here, by the next cycle of this process.
    fetcher.resume()
    with store.unit() as repo:
        run_id = repo.start_run(clock())
        due = repo.feeds(due_at=clock())
    tracker = Tracker(progress, "polling feeds", len(due))
    with nullcontext(workers) if workers is not None else Workers(processes) as workers:
        ahead = [workers.feeds.submit(fetch_feed, fetcher, feed) for feed in due]
        try:
            for feed, fetched in zip(due, ahead, strict=True):
                if stop is not None and stop.is_set():
                    break
                if renew is not None:
                    renew()
                poll_feed(
                    store,
                    fetcher,
                    feed,
                    analysis,
                    clock,
                    rng,
                    report,
                    workers=workers,
                    fetched=fetched,
                    stop=stop,
                )
                tracker.advance()
        finally:
            for future in ahead:
                future.cancel()
            if stop is not None and stop.is_set():
                # Fetch threads still waiting for a politeness slot give up now, so the
                # stop is not held up by requests nobody will read.
                fetcher.stop_waiting()
        if stop is not None and stop.is_set() and report.feeds_polled < len(due):
            report.errors.append("stopped by signal before polling every due feed")
        if analysis.refetch_ladder:
            refetch_articles(store, fetcher, analysis, clock, report, stop, workers, renew)
        finish_analysis(store, analysis, channels, clock, report, progress, stop, renew, workers)
    with store.unit() as repo:
        repo.finish_run(run_id, clock(), report.as_dict())
    log.info("stage=cycle %s", report.summary())
    return report


def finish_analysis(
    store: Store,
    analysis: Analysis,
    channels: Sequence[Channel],
    clock: Clock,
    report: RunReport,
    progress: Any = None,
    stop: threading.Event | None = None,
    renew: Callable[[], None] | None = None,
    workers: Workers | None = None,
) -> None:
    """Everything after storing articles: analysis, drift, outbox, delivery."""
    touched = analyse_pending(store, analysis, clock, report, progress, stop, renew, workers)
    # Stories analysed by a run that was killed before it queued their alerts.
    with store.unit() as repo:
        touched |= repo.stories_analysed_since_last_run()
    update_alerts(store, touched, analysis, channels, clock, report)
    if stop is None or not stop.is_set():
        summarise_stale(store)
    update_feed_alerts(store, analysis, channels, clock, report)
    deliver(store, channels, clock, report, analysis.delivery, stop)


__all__ = [
    "Analysis",
    "IngestItem",
    "NewsdriftError",
    "RunReport",
    "deliver",
    "finish_analysis",
    "ingest",
    "run_cycle",
]
