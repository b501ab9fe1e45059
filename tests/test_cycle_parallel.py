"""The concurrent cycle: pool and serial cycles store the same; batched writes stay
isolated per item and really share a transaction."""

from __future__ import annotations

import dataclasses
import resource
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from pipeline import run
from pipeline.app import App
from pipeline.demo_server import serve_demo
from pipeline.models import FeedConfig
from pipeline.run import Batch, RunReport, analyse_pending
from pipeline.settings import load_settings
from storage.repository import Store
from storage.tables import FeedRow

# The demo's cycles and the tests' feeds are far below the pool's threshold, so the
# tests of pool behaviour lower it; test_a_cycle_of_a_few_pages_starts_no_pool keeps the
# default.
DEFAULT_POOL_MIN_PAGES = run.POOL_MIN_PAGES


@pytest.fixture(autouse=True)
def _small_pool_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "POOL_MIN_PAGES", 8)


def _settings(processes: int):  # type: ignore[no-untyped-def]
    s = load_settings(None)
    return dataclasses.replace(
        s,
        fetch=dataclasses.replace(
            s.fetch,
            allow_private=True,
            per_domain_min_gap_s=0.0,
            per_domain_concurrency=4,
            processes=processes,
        ),
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _app(db: Path, processes: int, feeds: Sequence[FeedConfig] = ()) -> App:
    """An App on a new SQLite database at ``db``, subscribed to ``feeds``."""
    app = App(
        db_url=f"sqlite:///{db}", settings=_settings(processes), channels=[], sync_feeds=False
    )
    now = datetime.now(UTC)
    with app._store().unit() as repo:
        for feed in feeds:
            repo.add_feed(feed, now)
    return app


def _cycle(tmp: Path, site: Any, processes: int) -> tuple[App, float]:
    app = _app(tmp / f"p{processes}.db", processes, site.feeds())
    before = _children_cpu()
    report = app.run_once()
    assert report.articles_failed == 0, report.errors
    return app, _children_cpu() - before


def _outcome(app: App) -> dict[str, Any]:
    return {
        "articles": sorted((a.key, a.status, a.topic_score) for a in app.articles()),
        "stories": sorted(sorted(s.articles) for s in app.stories()),
        "drift": sorted(
            (r["metric"], r["subject"], r["outlet"], r["value"], r["unit"], r["status"], r["quote"])
            for r in app.drift_rows()
        ),
    }


def test_pool_and_serial_cycles_store_the_same(tmp_path: Path) -> None:
    with serve_demo() as site:
        serial, serial_children = _cycle(tmp_path, site, processes=1)
        pooled, pool_children = _cycle(tmp_path, site, processes=2)
    assert serial_children == 0.0  # processes=1: nothing ran in a child process
    assert pool_children > 0.0  # the pool did the extraction/analysis work
    a, b = _outcome(serial), _outcome(pooled)
    assert a["articles"] and a["stories"] and a["drift"]
    assert a == b


def test_in_process_extraction_runs_one_page_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a pool, pages are extracted in the fetch threads, never two at once:
    libxml2 under the extraction crashed the process with 16 threads extracting."""
    import threading
    import time as _time

    from pipeline import extract

    running, most = [0], [0]
    lock = threading.Lock()
    real = extract._bare  # each extraction's trafilatura run, where libxml2 works

    def watched(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        _time.sleep(0.02)  # long enough for another thread to come in
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(extract, "_bare", watched)
    with serve_demo() as site:
        app, _ = _cycle(tmp_path, site, processes=1)
    assert len(app.articles()) > 5 and most[0] == 1


def test_a_batch_shares_one_transaction_and_undoes_a_failing_item_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import run

    monkeypatch.setattr(run, "COMMIT_AFTER_S", 60.0)  # a slow machine must not commit early
    url = f"sqlite:///{tmp_path / 'batch.db'}"
    store, other = Store.open(url), Store.open(url)
    now = datetime.now(UTC)

    def count() -> int:
        with other.unit() as repo:
            return int(repo.s.scalar(select(func.count(FeedRow.id))) or 0)

    with Batch(store) as batch:
        with batch.item() as repo:
            repo.add_feed(FeedConfig(url="https://a.example/1.xml", outlet="A", lang="en"), now)
        with pytest.raises(RuntimeError), batch.item() as repo:
            repo.add_feed(FeedConfig(url="https://b.example/2.xml", outlet="B", lang="en"), now)
            raise RuntimeError("this item fails after writing")
        with batch.item() as repo:
            repo.add_feed(FeedConfig(url="https://a.example/3.xml", outlet="A", lang="en"), now)
        assert count() == 0  # nothing is committed item by item
        batch.commit()
        assert count() == 2
    with store.unit() as repo:
        assert sorted(f.url for f in repo.feeds()) == [
            "https://a.example/1.xml",
            "https://a.example/3.xml",
        ]
        assert {f.outlet for f in repo.feeds()} == {"A"}
    store.close()
    other.close()


def test_one_failing_analysis_is_reported_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version whose analysis raises (a bug, not input) is undone alone, listed in the
    report and left pending for the next cycle; the rest of the cycle is analysed."""
    from pipeline import run
    from pipeline.models import IngestItem

    app = App(db_url=f"sqlite:///{tmp_path / 'a.db'}", channels=[], sync_feeds=False)
    when = datetime(2026, 3, 2, 9, tzinfo=UTC)
    items = [
        IngestItem(
            id=f"a{i}",
            url=f"https://o{i}.example/a.html",
            outlet=f"O{i}",
            lang="en",
            published=when,
            title=f"Nordwerk AI raises money {i}",
            html=None,
            text=f"Nordwerk AI raised $ {100 + i} million in a Series B round led by Kestrel. " * 3,
        )
        for i in range(3)
    ]
    real = run.prepare_version

    def failing(article, published, lexicons):  # type: ignore[no-untyped-def]
        if article.key == "a1":
            raise ValueError("boom")
        return real(article, published, lexicons)

    monkeypatch.setattr(run, "prepare_version", failing)
    store = app._store()
    run.ingest(store, items, app.analysis(use_topic=False), app.clock, RunReport(), keep_all=True)
    report = RunReport()
    analyse_pending(store, app.analysis(use_topic=False), app.clock, report)
    assert report.versions_processed == 2
    assert len(report.errors) == 1 and "a1" in report.errors[0] and "boom" in report.errors[0]
    with store.unit() as repo:
        assert [a.key for a in repo.pending_versions()] == ["a1"]


def test_a_batch_commits_once_it_has_been_open_long_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process waits for the write lock only up to its busy timeout: a batch of
    slow items commits after COMMIT_AFTER_S even below COMMIT_EVERY items."""
    import time

    from pipeline import run

    monkeypatch.setattr(run, "COMMIT_AFTER_S", 0.05)
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    store, other = Store.open(url), Store.open(url)
    now = datetime.now(UTC)
    with Batch(store) as batch:
        with batch.item() as repo:
            repo.add_feed(FeedConfig(url="https://a.example/1.xml", outlet="A", lang="en"), now)
        time.sleep(0.1)
        with batch.item() as repo:  # opens a new transaction: the first item is committed
            repo.add_feed(FeedConfig(url="https://a.example/2.xml", outlet="A", lang="en"), now)
        with other.unit() as repo:
            assert [f.url for f in repo.feeds()] == ["https://a.example/1.xml"]
    store.close()
    other.close()


def test_a_pool_worker_imports_only_the_pure_stages() -> None:
    """Every worker of every cycle pays its imports: the pool's worker must not pull in
    the cycle module, storage or SQLAlchemy (only ``pipeline.work`` and what it needs)."""
    from pipeline.run import Workers

    probe = "sorted(m for m in ('pipeline.run', 'storage.repository', 'sqlalchemy', "
    probe += "'pipeline.work') if m in __import__('sys').modules)"
    with Workers(processes=2) as workers:
        pool = workers.cpu(run.POOL_MIN_PAGES)
        assert pool is not None
        assert pool.submit(eval, probe).result(timeout=60) == ["pipeline.work"]


def test_the_pool_starts_once_small_feeds_add_up() -> None:
    """Feeds with a few new pages each (the common case between two cron runs) add up:
    the pool starts once the cycle has had ``POOL_MIN_PAGES`` pages' worth of work, a
    version's analysis counting ``VERSION_WORK`` of a page."""
    from pipeline.run import Workers

    few = run.POOL_MIN_PAGES // 2 - 1
    versions = int((run.POOL_MIN_PAGES - 2 * few) / run.VERSION_WORK) - 1
    with Workers(processes=2) as workers:
        assert workers.cpu(few) is None and workers.cpu(few) is None  # in-process
        assert workers.cpu(versions * run.VERSION_WORK) is None  # analysis weighs less
        assert workers.cpu(1) is not None  # the work adds up: the pool
        assert workers.cpu(1) is not None  # and it stays
    with Workers(processes=1) as serial:
        assert serial.cpu(10 * run.POOL_MIN_PAGES) is None  # processes=1: never a pool


def test_a_cycle_of_a_few_pages_starts_no_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spawned worker costs about a second of imports: a cycle with fewer pages than
    the default threshold (the demo's) does them in-process and starts no pool."""
    monkeypatch.setattr(run, "POOL_MIN_PAGES", DEFAULT_POOL_MIN_PAGES)
    with serve_demo() as site:
        app, children = _cycle(tmp_path, site, processes=2)
    assert app.articles() and children == 0.0


def test_closing_the_workers_waits_for_no_worker_still_busy_or_starting() -> None:
    """A stop's close must not wait on pool work nobody reads any more (a worker still
    importing the extraction stack, or busy with a page): the workers are ended."""
    import time as _time

    from pipeline.run import POOL_EXIT_GRACE_S, Workers

    for busy in (False, True):
        workers = Workers(processes=2)
        pool = workers.cpu(run.POOL_MIN_PAGES)
        assert pool is not None
        if busy:
            assert pool.submit(sum, [1, 2]).result(timeout=60) == 3  # a worker is up
            pool.submit(_time.sleep, 60)
            _time.sleep(0.2)  # and now busy for a minute
        else:
            pool.submit(sum, [1, 2])  # the workers are still starting
        started = _time.monotonic()
        workers.close()
        assert _time.monotonic() - started < POOL_EXIT_GRACE_S + 2.0
        assert _pool_children() == []


def test_a_pool_starts_all_its_workers_at_once() -> None:
    """Workers started one by one inside later submits race with a dying worker: the
    pool's manager ends the workers it knows, waits forever for the one started last,
    and so does the interpreter's exit (seen once: a test run that never ended). All
    of a pool's workers start at its first submit."""
    import os as _os

    from pipeline.run import Workers

    earlier = set(_pool_children())  # an earlier test's worker may still be exiting
    with Workers(processes=2) as workers:
        pool = workers.cpu(run.POOL_MIN_PAGES)
        assert pool is not None
        assert pool.submit(_os.getpid).result(timeout=60) > 0  # one task ...
        assert len(set(_pool_children()) - earlier) == 2  # ... and both workers are up


def _die_once(marker: str) -> str:
    """In a pool worker: die the first time (as the OOM killer would), answer after."""
    import os as _os

    if not _os.path.exists(marker):
        Path(marker).touch()
        _os._exit(9)
    return "answered"


def _die_always() -> str:
    import os as _os

    _os._exit(9)


def test_a_dead_worker_breaks_the_pool_and_the_item_is_tried_once_more(tmp_path: Path) -> None:
    from concurrent.futures.process import BrokenProcessPool

    from pipeline.run import Workers

    with Workers(processes=2) as workers:
        first = workers.cpu(run.POOL_MIN_PAGES)
        assert workers.call(_die_once, str(tmp_path / "died")) == "answered"
        assert workers.cpu(run.POOL_MIN_PAGES) is not first  # the broken pool was replaced
        with pytest.raises(BrokenProcessPool):  # dies again in the new pool: its own doing
            workers.call(_die_always)
        assert workers.call(_die_once, str(tmp_path / "died")) == "answered"  # usable after


def _pool_children() -> list[int]:
    """Pids of this process's spawned pool workers."""
    import os as _os

    me = _os.getpid()
    found = []
    for task in Path(f"/proc/{me}/task").iterdir():
        try:  # threads and children come and go while we look
            pids = (task / "children").read_text().split()
            found += [
                int(p) for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
            ]
        except OSError:
            continue
    return found


def test_a_worker_killed_mid_cycle_loses_no_article(tmp_path: Path) -> None:
    """The OOM killer (or a crash in lxml) takes a pool worker during a cycle: the pool
    is replaced, the pages in flight are processed again, the cycle ends normally and
    stores every article."""
    import os as _os
    import signal
    import threading
    import time as _time

    with serve_demo() as site:
        app = _app(tmp_path / "killed.db", 2, site.feeds())
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["report"] = app.run_once()
            except BaseException as e:
                result["error"] = e

        cycle = threading.Thread(target=run)
        cycle.start()
        deadline = _time.monotonic() + 60
        while not (children := _pool_children()) and _time.monotonic() < deadline:
            _time.sleep(0.01)
        assert children, "the cycle never started its pool"
        _os.kill(children[0], signal.SIGKILL)
        cycle.join(120)
        assert not cycle.is_alive()
        assert "error" not in result, repr(result.get("error"))
        report = result["report"]
        assert report.articles_failed == 0, report.errors
        reference, _ = _cycle(tmp_path, site, processes=1)
    assert _outcome(app) == _outcome(reference)


HTML = "text/html; charset=utf-8"


def _news_page(n: int, amount: int) -> bytes:
    company = f"Vantor{n} Robotics"
    body = (
        f"<p>{company}, a start-up that builds warehouse robots with artificial "
        f"intelligence, has raised ${amount} million in a Series B round, the company "
        f"said on Monday. {company} employs {50 + n} people and plans to double its "
        f"team of machine learning engineers within a year.</p>"
    )
    page = f"<html lang='en'><body><article><h1>{company} raises</h1>{body}</article></body></html>"
    return page.encode()


def _serve_news(server: Any, feed: str, articles: range, edited: Sequence[int] = ()) -> FeedConfig:
    """One feed on ``server`` listing an article page for each number in ``articles``;
    the pages of ``edited`` report another amount."""
    from tests.httpserver import Reply

    items = []
    for n in articles:
        page = _news_page(n, 100 + n + (500 if n in edited else 0))
        server.route(f"/a/{n}", Reply(200, {"Content-Type": HTML}, page))
        items.append(
            f"<item><title>Vantor{n} Robotics raises</title>"
            f"<link>{server.url(f'/a/{n}')}</link></item>"
        )
    rss = f"<rss version='2.0'><channel><title>t</title>{''.join(items)}</channel></rss>"
    server.route(feed, Reply(200, {"Content-Type": "application/rss+xml"}, rss.encode()))
    return FeedConfig(url=server.url(feed), outlet="news.example", lang="en", on_topic=True)


def test_workers_kept_by_the_caller_serve_several_cycles(tmp_path: Path) -> None:
    """The daemon keeps one pool for its life: cycles given its workers use the same
    worker processes instead of starting new ones, and leave them running."""
    from tests.httpserver import LoopbackServer, Reply

    with LoopbackServer() as server:
        server.route("/robots.txt", Reply(200, {"Content-Type": "text/plain"}, b""))
        app = _app(tmp_path / "kept.db", 2)
        now = datetime.now(UTC)
        # A worker of an earlier test's broken pool may still be exiting: not ours.
        earlier = set(_pool_children())
        with app.workers() as workers:
            pids = []
            for feed, articles in (("/one.xml", range(10)), ("/two.xml", range(10, 20))):
                with app._store().unit() as repo:
                    repo.add_feed(_serve_news(server, feed, articles), now)
                report = app.run_once(workers=workers)
                assert report.articles_new == len(articles) >= run.POOL_MIN_PAGES, report.summary()
                pids.append(sorted(set(_pool_children()) - earlier))
        assert pids[0] and pids[0] == pids[1]
        assert not set(pids[0]) & set(_pool_children())  # closed with the workers


def test_a_stopped_cycle_leaves_its_fetcher_stopped_until_the_next_cycle(tmp_path: Path) -> None:
    """With workers the caller keeps (the daemon), fetch threads of a stopped cycle may
    still be queued for a politeness slot: the fetcher stays stopped, so they give up
    instead of fetching for a process that is exiting; the next cycle resumes it."""
    import threading

    with serve_demo() as site:
        feeds = site.feeds()
        app = _app(tmp_path / "stopped.db", 2, feeds)
        stop = threading.Event()
        stop.set()  # SIGTERM before the first item
        with app.workers() as workers:
            stopped = app.run_once(stop=stop, workers=workers)
            assert stopped.articles_new == 0
            assert app.fetcher is not None
            with pytest.raises(InterruptedError):
                app.fetcher.fetch(feeds[0].url, kind="feed")
            report = app.run_once(workers=workers)
    assert report.articles_new > 0, report.summary()


def test_a_refetch_takes_every_due_article_and_the_pool_stores_what_serial_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More articles due for a re-fetch than one read takes: one cycle re-fetches them
    all, their pages extracted in the pool, and the edited ones become new versions
    exactly as in a cycle without a pool."""
    from sqlalchemy import update

    from pipeline import run
    from storage.tables import ArticleRow, ArticleVersionRow
    from tests.httpserver import LoopbackServer, Reply

    monkeypatch.setattr(run, "REFETCH_BATCH", 10)
    articles, edited = range(24), (3, 11, 22)
    with LoopbackServer() as server:
        server.route("/robots.txt", Reply(200, {"Content-Type": "text/plain"}, b""))
        outcomes = []
        for processes in (1, 2):
            feed = _serve_news(server, "/news.xml", articles)
            app = _app(tmp_path / f"refetch{processes}.db", processes, [feed])
            assert app.run_once().articles_new == len(articles)
            _serve_news(server, "/news.xml", articles, edited)
            with app._store().unit() as repo:
                repo.s.execute(update(ArticleRow).values(next_refetch_at=datetime.now(UTC)))
            before = _children_cpu()
            report = app.run_once()
            children = _children_cpu() - before
            assert report.articles_refetched == len(articles), report.summary()
            assert report.articles_edited == len(edited), report.summary()
            assert (children > 0.0) == (processes > 1)  # the pool extracted the pages
            with app._store().unit() as repo:
                versions = sorted(
                    repo.s.execute(
                        select(ArticleRow.url, ArticleVersionRow.number).join(
                            ArticleVersionRow, ArticleVersionRow.article_id == ArticleRow.id
                        )
                    )
                )
                still_due = repo.refetch_due(datetime.now(UTC))
            assert [u for u, n in versions if n == 2] == sorted(
                server.url(f"/a/{n}") for n in edited
            )
            assert still_due == []
            revisions = sorted(
                (r["article"], r["version"], r["metric"], r["value"], r["status"])
                for r in app.drift_rows(revisions=True)
            )
            outcomes.append((versions, _outcome(app), revisions))
    serial, pooled = outcomes
    assert serial[2], "the edits are revisions in the drift table"
    assert serial == pooled


def test_a_stop_during_the_refetches_leaves_the_rest_due(tmp_path: Path) -> None:
    """SIGTERM while pages are re-fetched: the cycle ends after the page in hand, the
    pages fetched meanwhile by other threads are dropped, and every article not done
    stays due for the next cycle (nothing is lost, nothing skips its rung)."""
    import threading

    from sqlalchemy import update

    from storage.tables import ArticleRow
    from tests.httpserver import LoopbackServer, RecordedRequest, Reply

    articles = range(12)
    stop = threading.Event()

    def stopping(req: RecordedRequest) -> Reply:
        stop.set()  # the signal arrives while the first re-fetch is served
        return Reply(503, {"Content-Type": "text/plain"}, b"busy")

    with LoopbackServer() as server:
        server.route("/robots.txt", Reply(200, {"Content-Type": "text/plain"}, b""))
        app = _app(tmp_path / "stop.db", 1, [_serve_news(server, "/news.xml", articles)])
        assert app.run_once().articles_new == len(articles)
        server.route("/a/0", stopping)
        with app._store().unit() as repo:
            repo.s.execute(update(ArticleRow).values(next_refetch_at=datetime.now(UTC)))
        stopped = app.run_once(stop=stop)
        with app._store().unit() as repo:
            still_due = repo.refetch_due(datetime.now(UTC))
        assert stopped.articles_refetched <= 1, stopped.summary()
        assert len(still_due) == len(articles) - stopped.articles_refetched
        server.route("/a/0", Reply(200, {"Content-Type": "text/plain"}, b"back"))
        again = app.run_once()
        assert again.articles_refetched == len(still_due), again.summary()


def test_a_stop_while_pages_wait_for_their_politeness_slot_ends_the_cycle_promptly(
    tmp_path: Path,
) -> None:
    """Fetch threads take a domain's politeness slot in whatever order they ask, while the
    cycle takes the pages in feed order: the page it waits for may be fetched last. A
    stop must not wait for the pages before it. One slot, pages answered after 0.2 s,
    SIGTERM with the second request: the cycle ends without fetching the other six, and
    the next cycle takes them."""
    import threading

    from tests.httpserver import LoopbackServer, RecordedRequest, Reply

    articles = range(8)
    stop = threading.Event()
    requested: list[str] = []

    def slow(n: int) -> Any:
        def reply(req: RecordedRequest) -> Reply:
            requested.append(req.path)
            if len(requested) == 2:
                stop.set()
            return Reply(200, {"Content-Type": HTML}, _news_page(n, 100 + n), delay_s=0.2)

        return reply

    with LoopbackServer() as server:
        server.route("/robots.txt", Reply(200, {"Content-Type": "text/plain"}, b""))
        feed = _serve_news(server, "/news.xml", articles)
        for n in articles:
            server.route(f"/a/{n}", slow(n))
        settings = _settings(1)
        settings = dataclasses.replace(
            settings, fetch=dataclasses.replace(settings.fetch, per_domain_concurrency=1)
        )
        app = App(
            db_url=f"sqlite:///{tmp_path / 'slot.db'}",
            settings=settings,
            channels=[],
            sync_feeds=False,
        )
        with app._store().unit() as repo:
            repo.add_feed(feed, datetime.now(UTC))
        stopped = app.run_once(stop=stop)
        assert len(requested) <= 3, requested  # the page in hand, at most one more
        assert stopped.articles_new <= 2, stopped.summary()
        again = app.run_once()
    assert stopped.articles_new + again.articles_new == len(articles), again.summary()


def test_a_stop_while_a_feed_waits_for_its_politeness_gap_ends_the_cycle_promptly(
    tmp_path: Path,
) -> None:
    """Feed documents are fetched ahead by threads, one domain's requests GAP_S apart, and
    the cycle takes them in order: whichever of two feeds got the first slot, the cycle
    then waits for one whose thread sleeps out the gap. A stop meanwhile ends the cycle
    at once (the waiting request gives up); that feed stays due, and the next cycle
    polls it."""
    import threading
    import time

    from tests.httpserver import LoopbackServer, RecordedRequest, Reply

    gap_s = 10.0  # far beyond a loaded machine's start-up of a cycle
    stop = threading.Event()
    empty = b"<rss version='2.0'><channel><title>t</title></channel></rss>"

    def first_request(req: RecordedRequest) -> Reply:
        threading.Timer(0.3, stop.set).start()  # SIGTERM a moment after the first poll
        return Reply(200, {"Content-Type": "application/rss+xml"}, empty)

    with LoopbackServer() as server:
        server.route("/one.xml", first_request)
        server.route("/two.xml", first_request)
        settings = _settings(1)
        settings = dataclasses.replace(
            settings,
            fetch=dataclasses.replace(
                settings.fetch, per_domain_concurrency=1, per_domain_min_gap_s=gap_s
            ),
        )

        def new_app() -> App:  # a new fetcher: no politeness gap left over from before
            db = tmp_path / "gap.db"
            return App(db_url=f"sqlite:///{db}", settings=settings, channels=[], sync_feeds=False)

        app = new_app()
        now = datetime.now(UTC)
        with app._store().unit() as repo:
            for path in ("/one.xml", "/two.xml"):
                repo.add_feed(
                    FeedConfig(url=server.url(path), outlet="gap.example", lang="en"), now
                )
        started = time.monotonic()
        stopped = app.run_once(stop=stop)
        took = time.monotonic() - started
        assert took < gap_s / 2, f"the stop waited {took:.1f}s for the politeness gap"
        assert stopped.feeds_polled <= 1, stopped.summary()
        assert any("stopped by signal" in e for e in stopped.errors), stopped.errors
        with app._store().unit() as repo:
            due = repo.feeds(due_at=datetime.now(UTC))
        assert len(due) == 2 - stopped.feeds_polled
        assert len(server.requests) == 1  # the waiting request gave up; nothing else was sent
        again = new_app().run_once()
        assert again.feeds_polled == len(due), again.summary()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_backlog_is_read_a_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    """A cycle's analysis holds the texts of a few batches, not of its whole backlog (a
    first cycle, a large ingest): texts are read ANALYSIS_BATCH at a time, at most
    ANALYSIS_AHEAD batches ahead of the versions stored, with the pool and without."""
    from pipeline.models import IngestItem
    from pipeline.run import Workers
    from storage.repository import Repo

    monkeypatch.setattr(run, "ANALYSIS_BATCH", 4)
    monkeypatch.setattr(run, "ANALYSIS_AHEAD", 2)
    app = App(db_url=f"sqlite:///{tmp_path / 'backlog.db'}", channels=[], sync_feeds=False)
    when = datetime(2026, 3, 2, 9, tzinfo=UTC)
    items = [
        IngestItem(
            id=f"a{i}",
            url=f"https://o{i % 3}.example/a{i}.html",
            outlet=f"O{i % 3}",
            lang="en",
            published=when,
            title=f"Company{i} raises money",
            html=None,
            text=f"Company{i} AI raised ${100 + i} million in a Series B round led by Kestrel. "
            * 3,
        )
        for i in range(30)
    ]
    store = app._store()
    analysis = app.analysis(use_topic=False)
    run.ingest(store, items, analysis, app.clock, RunReport(), keep_all=True)
    read: list[int] = []
    stored: list[int] = []
    most_ahead: list[int] = []

    class Recording(Repo):
        def version_texts(self, version_ids: Sequence[int]) -> dict[int, str]:
            read.append(len(version_ids))
            most_ahead.append(sum(read) - len(stored))
            return super().version_texts(version_ids)

        def mark_processed(self, version_id: int, now: datetime) -> None:
            stored.append(version_id)
            super().mark_processed(version_id, now)

    store.repo_class = Recording
    report = RunReport()
    with Workers(processes=processes) as workers:
        analyse_pending(store, analysis, app.clock, report, workers=workers)
    assert report.versions_processed == 30 and report.errors == []
    assert sum(read) == 30 and max(read) == 4
    assert max(most_ahead) <= 2 * 4  # AHEAD batches of BATCH texts not stored yet
    with store.unit() as repo:
        assert repo.pending_versions() == []
