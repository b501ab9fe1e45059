"""The later stages as Procrastinate tasks (PostgreSQL only; `newsdrift worker`).

* ``analyse_article``: figures and story assignment of an article's new versions.
  Deferred by ``TaskRepo.add_version`` in the very transaction that stores the
  version (on that transaction's connection, inside a savepoint), with the
  queueing lock ``article:<id>``: one waiting job per article.
* ``update_story``: drift findings and alerts of one story, with the lock
  ``story:<id>``: two workers never recompute one story at once. Deferred in the
  transaction that attached an article to it.
* ``deliver``: send pending alerts (lock ``deliver``: one sender at a time, so no alert
  goes out twice).
* Periodic (every worker runs Procrastinate's periodic deferrer; each tick is deferred
  once): ``sweep`` (versions and stories a lost job left behind, cooldowns that ended,
  feed-health alerts, delivery retries), ``refetch`` (the re-fetch ladder, with the
  worker's fetch threads),
  ``retry_stalled`` (jobs of a worker that died).

A task finds the worker's objects (store, fetcher, analysis, channels) in the job
context's ``additional_context["newsdrift"]``: nothing is global.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued, UniqueViolation
from procrastinate.jobs import JobDeferrer, Status
from procrastinate.manager import JobManager
from procrastinate.sync_psycopg_connector import SyncPsycopgConnector
from sqlalchemy import text

from pipeline.fetch import Fetcher
from pipeline.notify import Channel
from pipeline.run import (
    Analysis,
    Clock,
    RunReport,
    Workers,
    analyse_version,
    deliver,
    refetch_articles,
    summarise_stale,
    update_feed_alerts,
    update_story_alerts,
)
from pipeline.stories import COUNT_ONLY
from storage.claims import key_hash, lock_keys, pending_article_ids
from storage.repository import Repo, Store

log = logging.getLogger(__name__)

CONTEXT_KEY = "newsdrift"
# A task failing on a transient conflict (deadlock detected, serialisation) runs again.
RETRY = procrastinate.RetryStrategy(max_attempts=5, wait=1)
# Periodic work; Procrastinate cron strings with a 6th column for seconds.
SWEEP_CRON = "* * * * * */5"
REFETCH_CRON = "* * * * *"
STALLED_CRON = "* * * * * */5"
# A job whose worker sent no heartbeat for this long is retried by `retry_stalled`.
STALLED_AFTER_S = 60.0


@dataclass
class WorkerContext:
    """What a task needs, built once per worker process; ``analysis`` and ``channels``
    are replaced when the worker reloads its settings (SIGHUP), each task reading them
    as it starts."""

    store: Store
    fetcher: Fetcher
    analysis: Analysis
    channels: Sequence[Channel]
    clock: Clock
    # Fetch threads for the re-fetch task (no process pool: a worker scales by processes);
    # without them it fetches one page after another.
    workers: Workers | None = None


@dataclass(frozen=True)
class AbortRequested:
    """A long task's stop flag (``pipeline.run.StopFlag``): set once Procrastinate asks
    its job to abort. A stopping worker asks that of the jobs still running after
    ``WorkerOptions.shutdown_grace_s`` (``pipeline.worker``); Procrastinate cannot
    interrupt a synchronous task, so the task must ask."""

    context: procrastinate.JobContext

    def is_set(self) -> bool:
        return self.context.should_abort()


def conninfo(db_url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    u = make_url(db_url)
    parts = {
        "host": u.host,
        "port": u.port,
        "user": u.username,
        "password": u.password,
        "dbname": u.database,
    }
    return " ".join(f"{k}={v}" for k, v in parts.items() if v not in (None, ""))


def _ctx(context: procrastinate.JobContext) -> WorkerContext:
    ctx = context.additional_context.get(CONTEXT_KEY)
    assert isinstance(ctx, WorkerContext), "run tasks through `newsdrift worker`"
    return ctx


def build_app(db_url: str, *, stalled_after_s: float = STALLED_AFTER_S) -> procrastinate.App:
    """The Procrastinate app with newsdrift's tasks, on the database of ``db_url``."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(db_url)))

    @app.task(name="newsdrift.analyse_article", pass_context=True, retry=RETRY)
    def analyse_article(context: procrastinate.JobContext, article_id: int) -> None:
        ctx = _ctx(context)
        with ctx.store.unit() as repo:
            stories = set()
            for article in repo.pending_versions(article_id=article_id):
                stories.add(analyse_version(repo, article, ctx.analysis, ctx.clock()))
            for story_id in sorted(stories):
                defer_story(repo, story_id)

    @app.task(name="newsdrift.update_story", pass_context=True, retry=RETRY)
    def update_story(context: procrastinate.JobContext, story_id: int) -> None:
        ctx = _ctx(context)
        with ctx.store.unit() as repo:
            live = repo.live_story(story_id)
            # The job lock is per story id as deferred; a merge may point two ids at one
            # live story, so the live one is locked too, for this transaction.
            lock_keys(repo.s, [f"story:{live}"])
            new = update_story_alerts(repo, live, ctx.analysis, ctx.channels, ctx.clock())
            if new:
                defer_in(repo, deliver_task, queueing_lock="deliver", lock="deliver")

    @app.task(name="newsdrift.deliver", pass_context=True, retry=RETRY)
    def deliver_task(context: procrastinate.JobContext) -> None:
        ctx = _ctx(context)
        report = RunReport()
        stop = AbortRequested(context)  # a stopping worker leaves the rest pending
        deliver(ctx.store, ctx.channels, ctx.clock, report, ctx.analysis.delivery, stop)

    @app.periodic(cron=SWEEP_CRON)
    @app.task(name="newsdrift.sweep", pass_context=True, queueing_lock="sweep", lock="sweep")
    def sweep(context: procrastinate.JobContext, timestamp: int) -> None:
        ctx = _ctx(context)
        with ctx.store.unit() as repo:
            # Versions older than a tick with no job: a job lost to a race or a crash.
            for article_id in pending_article_ids(repo.s):
                defer_analysis(repo, analyse_article, article_id)
            for story_id in sorted(repo.stories_with_unalerted_episodes()):
                defer_story(repo, story_id)
        summarise_stale(ctx.store)  # update_story keeps the rest
        report = RunReport()
        update_feed_alerts(ctx.store, ctx.analysis, ctx.channels, ctx.clock, report)
        with ctx.store.unit() as repo:
            defer_in(repo, deliver_task, queueing_lock="deliver", lock="deliver")

    @app.periodic(cron=REFETCH_CRON)
    @app.task(name="newsdrift.refetch", pass_context=True, queueing_lock="refetch", lock="refetch")
    def refetch(context: procrastinate.JobContext, timestamp: int) -> None:
        ctx = _ctx(context)
        if not ctx.analysis.refetch_ladder:
            return
        report = RunReport()
        stop = AbortRequested(context)
        refetch_articles(
            ctx.store, ctx.fetcher, ctx.analysis, ctx.clock, report, stop=stop, workers=ctx.workers
        )
        if stop.is_set():  # the worker is stopping: what was not re-fetched stays due
            log.info("stage=refetch status=stopped refetched=%d", report.articles_refetched)

    @app.periodic(cron=STALLED_CRON)
    @app.task(name="newsdrift.retry_stalled", queueing_lock="retry_stalled", lock="retry_stalled")
    async def retry_stalled(timestamp: int) -> None:
        stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after_s)
        for job in stalled:
            try:
                await app.job_manager.retry_job(job)
                log.warning(
                    "stage=worker job=%s task=%s status=stalled_retried", job.id, job.task_name
                )
            except UniqueViolation:
                # A newer job waits under the same queueing lock (a sweep deferred it):
                # every task is idempotent, so that one does the work; this one ends
                # and frees its lock.
                await app.job_manager.finish_job(job, Status.ABORTED, delete_job=False)
                log.warning(
                    "stage=worker job=%s task=%s status=stalled_superseded", job.id, job.task_name
                )

    def defer_story(repo: Repo, story_id: int) -> None:
        defer_in(repo, update_story, lock=f"story:{story_id}", story_id=story_id)

    return app


def defer_in(
    repo: Repo,
    task: Any,
    *,
    queueing_lock: str | None = None,
    lock: str | None = None,
    **kwargs: Any,
) -> bool:
    """Defer ``task`` inside ``repo``'s transaction, on its connection: the job exists
    exactly when the transaction that wrote its input commits. A job already waiting
    under ``queueing_lock`` is enough: False then (its savepoint is rolled back)."""
    session = repo.s
    job = task.configure(queueing_lock=queueing_lock, lock=lock).job
    try:
        with session.begin_nested():
            # Asked inside the block, so that the savepoint is emitted before the defer.
            raw = session.connection().connection.driver_connection
            # The app's connector is async inside the worker; this transaction's
            # connection is sync: a pool-less sync connector runs the defer query on it.
            JobDeferrer(
                job_manager=JobManager(SyncPsycopgConnector()), job=job, connection=raw
            ).defer(**kwargs)
    except AlreadyEnqueued:
        return False
    return True


def defer_analysis(repo: Repo, task: Any, article_id: int) -> bool:
    """One waiting analysis per article (queueing lock), one running (lock)."""
    key = f"article:{article_id}"
    return defer_in(repo, task, queueing_lock=key, lock=key, article_id=article_id)


# Blocking-key prefixes too common to lock on (pipeline.stories.blocking_keys): terms
# and numbers ("raises", "2025") are shared by unrelated articles, and a lock on them
# would serialise most assignments across all workers. Names, the text hash and the
# LSH bands are what same-event articles share (see docs/scale-out.md, Limits).
WEAK_KEY_PREFIXES = ("t:", "x:", COUNT_ONLY)  # COUNT_ONLY postings find no candidates


def strong_keys(keys: Iterable[str]) -> list[str]:
    """The blocking keys story assignment locks on."""
    return sorted(k for k in set(keys) if not k.startswith(WEAK_KEY_PREFIXES))


class TaskRepo(Repo):
    """A ``Repo`` for workers: a stored version defers its analysis in the same
    transaction, and story candidates and key counts are read under locks on the
    blocking keys."""

    app: procrastinate.App  # set by ``task_repo_class``

    def add_version(self, article_id: int, **kwargs: Any) -> int | None:
        version = super().add_version(article_id, **kwargs)
        if version is not None:
            defer_analysis(self, self.app.tasks["newsdrift.analyse_article"], article_id)
        return version

    def key_counts(
        self, keys: Sequence[str], since: datetime, until: datetime | None = None
    ) -> dict[str, int]:
        # Story assignment counts its keys before it reads candidates: under the same
        # locks, so that the rarity weights and the stop keys count the article another
        # worker is attaching too, as a serial run would (a lock held twice in one
        # transaction is held once more, not waited for).
        lock_keys(self.s, [f"key:{k}" for k in strong_keys(keys)])
        return super().key_counts(keys, since, until)

    def candidates(
        self, keys: Iterable[str], since: datetime, **kwargs: Any
    ) -> list[tuple[int, int, dict[str, Any]]]:
        keys = sorted(set(keys))
        # Two workers with articles of one event share a strong blocking key: the second
        # waits here until the first commits, then sees the first's story among its
        # candidates.
        lock_keys(self.s, [f"key:{k}" for k in strong_keys(keys)])
        return super().candidates(keys, since, **kwargs)


def task_repo_class(app: procrastinate.App) -> type[Repo]:
    return type("BoundTaskRepo", (TaskRepo,), {"app": app})


def ensure_schema(app: procrastinate.App, store: Store) -> None:
    """Apply Procrastinate's schema once (serialised across workers starting together)."""
    with store.engine.begin() as conn:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": key_hash("procrastinate-schema")}
        )
        exists = conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
        if exists is None:
            from procrastinate import schema

            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute(schema.SchemaManager.get_schema())
            log.info("stage=worker procrastinate schema applied")
