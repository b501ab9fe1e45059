"""`newsdrift worker`: one of many processes sharing one PostgreSQL database.

Each worker runs feed threads that claim due feeds (``storage.claims``: SKIP LOCKED,
leases renewed while alive, lapsing when the worker dies) and poll them with the
same ``poll_feed`` as the single-process cycle, and a Procrastinate worker that runs
the later stages (``pipeline.tasks``). Fetches go through ``SharedPoliteness``: the
per-domain budget holds for all workers together. SIGTERM/SIGINT stop it cleanly: the
feed in hand is finished, running jobs complete. SIGHUP reads newsdrift.toml, the
lexicons and feeds.toml again (``reload``).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pipeline.app import App, fetch_settings
from pipeline.errors import ConfigError
from pipeline.fetch import Fetcher
from pipeline.run import Analysis, RunReport, Workers, poll_feed
from pipeline.tasks import CONTEXT_KEY, WorkerContext, build_app, ensure_schema, task_repo_class
from storage.claims import SharedPoliteness, claim_feeds, release_feed, renew_claims
from storage.repository import Store, lease_holder

log = logging.getLogger(__name__)

SIGNAL_POLL_S = 0.5  # how often the reload thread looks for a stop


@dataclass(frozen=True)
class WorkerOptions:
    # Procrastinate jobs run at once in this process (analysis, drift, delivery).
    concurrency: int = 2
    # Threads polling claimed feeds; the shared per-domain budget bounds each site.
    feed_threads: int = 2
    # A claimed feed is taken over this long after its worker stopped renewing.
    claim_ttl: timedelta = timedelta(minutes=5)
    # Feeds claimed at once by one thread.
    claim_batch: int = 2
    # Seconds between claim attempts when nothing is due.
    idle_poll_s: float = 2.0
    # Procrastinate heartbeat (s); a job whose worker is silent for
    # ``stalled_after_s`` is retried elsewhere.
    heartbeat_s: float = 2.0
    stalled_after_s: float = 60.0
    # On SIGTERM/SIGINT, jobs still running after this many seconds are asked to abort
    # (Procrastinate's graceful timeout); analysis jobs take milliseconds and end first.
    shutdown_grace_s: float = 2.0


def _check_postgres(store: Store) -> None:
    if store.engine.dialect.name != "postgresql":
        raise ConfigError(
            "newsdrift worker needs PostgreSQL (--db postgresql+psycopg://…); "
            "with SQLite use `newsdrift run` or `newsdrift daemon`"
        )


class FeedPoller:
    """Claims due feeds and polls them until ``stop`` is set; renews its leases."""

    def __init__(
        self,
        store: Store,
        fetcher: Fetcher,
        analysis: Analysis,
        app: App,
        options: WorkerOptions,
        stop: threading.Event,
    ) -> None:
        self.store, self.fetcher, self.analysis, self.app = store, fetcher, analysis, app
        self.options, self.stop = options, stop
        self.holder = lease_holder()

    def renew_loop(self) -> None:
        period = max(0.5, self.options.claim_ttl.total_seconds() / 3)
        while not self.stop.wait(period):
            with self.store.unit() as repo:
                renew_claims(repo.s, self.holder, self.app.clock(), self.options.claim_ttl)

    def feed_loop(self) -> None:
        try:
            self._feed_loop()
        except BaseException:
            # A bug or a lost database: stop the whole worker rather than run half-dead.
            log.exception("stage=worker holder=%s status=feed_thread_failed", self.holder)
            os.kill(os.getpid(), signal.SIGTERM)
            raise

    def _feed_loop(self) -> None:
        rng = random.Random()
        while not self.stop.is_set():
            with self.store.unit() as repo:
                ids = claim_feeds(
                    repo.s,
                    self.holder,
                    self.app.clock(),
                    self.options.claim_ttl,
                    self.options.claim_batch,
                )
                feeds = repo.feeds(ids=ids) if ids else []
            if not feeds:
                self.stop.wait(self.options.idle_poll_s)
                continue
            for feed in feeds:
                try:
                    if not self.stop.is_set():
                        report = RunReport()
                        poll_feed(
                            self.store,
                            self.fetcher,
                            feed,
                            self.analysis,
                            self.app.clock,
                            rng,
                            report,
                        )
                        log.info("stage=worker feed=%s %s", feed.url, report.summary())
                finally:
                    with self.store.unit() as repo:
                        release_feed(repo.s, feed.id, self.holder)


def reload(app: App, context: WorkerContext, poller: FeedPoller) -> None:
    """SIGHUP: the settings, lexicons and topic filter read again, for the jobs and feeds
    started from now on, and feeds.toml applied. A file with an error is logged and the
    settings in use stay. The fetcher's settings (user agent, timeouts, limits, the
    per-domain budget) hold until a restart: the feed threads share it."""
    old = app._settings()
    try:
        app.reload_settings()
        analysis, channels = app.analysis(), app._channels()
    except ConfigError as e:
        log.error("stage=worker reload=failed error=%s; the settings in use stay", e)
        return
    context.analysis, context.channels = analysis, channels
    poller.analysis = analysis
    if app.sync_feeds:
        app.apply_feeds_file()  # an error in it is logged; the stored feeds are polled
    log.info("stage=worker reload=done")
    if app._settings().fetch != old.fetch:
        log.warning("stage=worker reload=done changed=fetch takes_effect=restart")


def _reloader(
    app: App, context: WorkerContext, poller: FeedPoller, hangup: threading.Event
) -> None:
    """Reloads when ``hangup`` is set, off the signal handler and the job loop."""
    while not poller.stop.is_set():
        if hangup.wait(SIGNAL_POLL_S):
            hangup.clear()
            try:
                reload(app, context, poller)
            except Exception:  # a bug must not end the reloads, nor the worker
                log.exception("stage=worker reload=failed")


def run_worker(app: App, options: WorkerOptions | None = None) -> None:
    """Run until SIGTERM/SIGINT: feed threads plus a Procrastinate worker."""
    options = options or WorkerOptions()
    store = app._store()
    _check_postgres(store)
    settings = app._settings()
    procrastinate_app = build_app(app.db_url, stalled_after_s=options.stalled_after_s)
    store.repo_class = task_repo_class(procrastinate_app)
    ensure_schema(procrastinate_app, store)
    if app.sync_feeds:
        app.apply_feeds_file()  # an error in the file is logged; the stored feeds are polled
    fs = fetch_settings(settings)
    politeness = SharedPoliteness(
        store.engine,
        max_concurrent=fs.per_domain_concurrency,
        min_gap_s=fs.per_domain_min_gap_s,
    )
    fetcher = app.fetcher or Fetcher(fs, politeness=politeness)
    analysis = app.analysis()
    fetch_threads = Workers(processes=1)  # the re-fetch task's page fetches, in threads
    context = WorkerContext(
        store=store,
        fetcher=fetcher,
        analysis=analysis,
        channels=app._channels(),
        clock=app.clock,
        workers=fetch_threads,
    )
    stop = threading.Event()
    poller = FeedPoller(store, fetcher, analysis, app, options, stop)
    threads = [
        threading.Thread(target=poller.feed_loop, name=f"feeds-{i}", daemon=True)
        for i in range(options.feed_threads)
    ]
    threads.append(threading.Thread(target=poller.renew_loop, name="claims", daemon=True))
    hangup = threading.Event()
    threads.append(
        threading.Thread(
            target=_reloader, args=(app, context, poller, hangup), name="reload", daemon=True
        )
    )
    previous: dict[int, Any] = {}  # signals reach the main thread only
    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: hangup.set())
    for t in threads:
        t.start()
    log.info(
        "stage=worker holder=%s status=started feed_threads=%d concurrency=%d",
        poller.holder,
        options.feed_threads,
        options.concurrency,
    )
    try:
        with procrastinate_app.open():
            procrastinate_app.run_worker(
                concurrency=options.concurrency,
                additional_context={CONTEXT_KEY: context},
                update_heartbeat_interval=min(options.heartbeat_s, options.stalled_after_s / 3),
                install_signal_handlers=True,
                delete_jobs="successful",
                stalled_worker_timeout=options.stalled_after_s,
                # then the jobs still running are asked to abort: the re-fetch task ends
                # after the page in hand instead of working through its whole backlog
                shutdown_graceful_timeout=options.shutdown_grace_s,
                name=poller.holder,
            )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.set()
        politeness.stop_waiting()
        for t in threads:
            t.join(timeout=60)
        fetch_threads.close()
        fetcher.close()
        log.info("stage=worker holder=%s status=stopped", poller.holder)
