"""Workers on PostgreSQL: claims, the shared politeness budget, concurrent story
assignment, and the acceptance run.

The acceptance run: three `newsdrift worker` processes on one PostgreSQL against 500 feeds on 20 sites.

The sites are 20 loopback addresses (127.0.0.1-20: each its own politeness domain),
each one outlet with 25 feeds; every event is reported by ten outlets, and on every
fourth event the outlets disagree on the amount. Halfway, one worker is killed with
SIGKILL: its feed claims lapse and its stalled jobs are retried by the others.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from pipeline.app import App
from pipeline.drift import drift_rules, findings
from pipeline.models import FeedConfig
from pipeline.run import Analysis, RunReport, analyse_version, update_alerts
from pipeline.settings import load_settings
from storage import tables
from storage.repository import Store
from tests.pg import PgCluster

pytest.importorskip("procrastinate")
if not hasattr(tables.FeedRow, "claimed_by"):
    pytest.skip("needs the pg-* patches (feed claims migration)", allow_module_level=True)

from pipeline.tasks import build_app, ensure_schema, task_repo_class
from storage.claims import (
    SharedPoliteness,
    claim_feeds,
    release_feed,
    renew_claims,
)

ROOT = Path(__file__).resolve().parent.parent
SITES = 20
FEEDS_PER_SITE = 25
EVENTS = 50
OUTLETS_PER_EVENT = 10
BUDGET = 2  # per-domain concurrency every worker shares
REPLY_DELAY_S = 0.02  # so that requests to one site overlap when allowed to
SPACING = timedelta(hours=120)  # more than the story window: one story per event
DEADLINE_S = 110.0

COMPANIES = ("Alder", "Bright", "Corvid", "Dun", "East", "Fen", "Glass", "Harrow", "Iron", "Juni")
PARTS = ("moor", "water", "gate", "wick", "field")
SECTORS = (
    ("warehouse robots", "robot arms that pick parcels"),
    ("drug discovery", "models that screen molecules"),
    ("legal research", "assistants that read contracts"),
    ("chip design", "tools that place transistors"),
    ("weather forecasting", "models that predict storms"),
)
CITIES = ("Berlin", "London", "Toronto", "Austin", "Paris", "Zurich", "Seoul", "Lisbon")


@dataclass
class NewsSite:
    """20 outlets on 127.0.0.1-20; records in-flight requests per host."""

    start: datetime
    servers: list[ThreadingHTTPServer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    requests: int = 0

    def host(self, site: int) -> str:
        return f"127.0.0.{site + 1}"

    def base(self, site: int) -> str:
        host, port = self.servers[site].server_address[:2]
        return f"http://{host!s}:{port}"

    def feeds(self, sites: int = SITES, per_site: int = FEEDS_PER_SITE) -> list[FeedConfig]:
        """The feeds of the first ``sites`` outlets, ``per_site`` each."""
        return [
            FeedConfig(
                url=f"{self.base(s)}/feed/{f}.xml",
                outlet=f"outlet{s:02d}",
                lang="en",
                on_topic=True,
            )
            for s in range(sites)
            for f in range(per_site)
        ]

    @staticmethod
    def events_of(site: int) -> list[int]:
        """Events outlet ``site`` reports: each event by OUTLETS_PER_EVENT outlets."""
        return [e for e in range(EVENTS) if (e + site) % (SITES // OUTLETS_PER_EVENT) == 0]

    def feed_events(self, site: int, feed: int) -> list[int]:
        mine = self.events_of(site)
        return [mine[feed % len(mine)]]

    def published(self, event: int) -> datetime:
        return self.start - SPACING * (EVENTS - event)

    def article(self, site: int, event: int) -> str:
        company = f"{COMPANIES[event % 10]}{PARTS[event // 10]} Labs"
        sector, product = SECTORS[event % len(SECTORS)]
        city = CITIES[event % len(CITIES)]
        amount = 100 + 5 * event + (10 * site if event % 4 == 0 else 0)
        title = f"{company} raises ${amount} million for AI in {sector}"
        body = (
            f"<p>{company}, a {city} start-up that builds {product}, has raised ${amount} "
            f"million in a Series B round, the company said. It uses artificial intelligence "
            f"for {sector}.</p><p>{company} employs {120 + event} people in {city} and plans "
            f"to double its team of {sector} specialists within a year.</p>"
            f"<p>Outlet {site} reported the details of the {company} deal.</p>"
        )
        return (
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<meta property='article:published_time' "
            f"content='{self.published(event).isoformat()}'></head>"
            f"<body><article><h1>{title}</h1>{body}</article></body></html>"
        )

    def feed(self, site: int, feed: int) -> str:
        items = []
        for event in self.feed_events(site, feed):
            url = f"{self.base(site)}/a/{event}.html"
            items.append(
                f"<item><title>Event {event}</title><link>{url}</link><guid>{url}</guid>"
                f"<pubDate>{format_datetime(self.published(event), usegmt=True)}</pubDate>"
                f"<description>AI start-up funding {event}</description></item>"
            )
        return (
            "<?xml version='1.0' encoding='UTF-8'?><rss version='2.0'><channel>"
            f"<title>outlet {site}</title><link>{self.base(site)}/</link>"
            "<description>x</description>" + "".join(items) + "</channel></rss>"
        )

    def handle(self, host: str, path: str) -> tuple[int, str, str]:
        site = int(host.rsplit(".", 1)[1]) - 1
        if m := re.fullmatch(r"/feed/(\d+)\.xml", path):
            return 200, "application/rss+xml", self.feed(site, int(m[1]))
        if m := re.fullmatch(r"/a/(\d+)\.html", path):
            return 200, "text/html; charset=utf-8", self.article(site, int(m[1]))
        return 404, "text/plain", "not found"

    def __enter__(self) -> NewsSite:
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                host = self.connection.getsockname()[0]
                with site.lock:
                    site.requests += 1
                    site.active[host] = site.active.get(host, 0) + 1
                    site.peak[host] = max(site.peak.get(host, 0), site.active[host])
                try:
                    time.sleep(REPLY_DELAY_S)
                    status, ctype, body = site.handle(str(host), self.path)
                    data = body.encode("utf-8")
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with site.lock:
                        site.active[host] -= 1

        for i in range(SITES):
            server = ThreadingHTTPServer((self.host(i), 0), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            self.servers.append(server)
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()


def write_config(cfg: Path, alerts_log: Path) -> None:
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "feeds.toml").write_text("# feeds are in the database\n")
    (cfg / "newsdrift.toml").write_text(
        "[fetch]\nallow_private = true\n"
        f"per_domain_concurrency = {BUDGET}\nper_domain_min_gap_s = 0.0\n"
        "obey_robots = false\nrefetch_ladder_minutes = []\n"
        f'[alerts]\nconsole = false\nlog_file = "{alerts_log}"\n'
    )


def start_worker(
    db: str, cfg: Path, log: Path, *, verbose: bool = False
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            *(["-v"] if verbose else []),
            "--db",
            db,
            "--config",
            str(cfg),
            "worker",
            "--concurrency",
            "2",
            "--feed-threads",
            "3",
            "--claim-ttl",
            "3",
            "--stalled-after",
            "4",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def scalar(store: Store, sql: str, **params: Any) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def finished(store: Store, since: datetime) -> bool:
    return not scalar(
        store,
        "SELECT (SELECT count(*) FROM feeds WHERE next_due_at IS NULL OR next_due_at <= :t)"
        " + (SELECT count(*) FROM article_versions WHERE processed_at IS NULL)"
        " + (SELECT count(*) FROM deliveries WHERE status = 'pending')"
        " + (SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        "    AND task_name NOT IN ('newsdrift.sweep', 'newsdrift.refetch',"
        "    'newsdrift.retry_stalled'))",
        t=since,
    )


@pytest.mark.slow
def test_three_workers_one_killed(pg_cluster: PgCluster, tmp_path: Path) -> None:
    db = pg_cluster.create_database("workers")
    cfg, alerts_log = tmp_path / "cfg", tmp_path / "alerts.log"
    write_config(cfg, alerts_log)
    store = Store.open(db)
    start = datetime.now(UTC)
    with NewsSite(start=start) as site:
        with store.unit() as repo:
            for feed in site.feeds():
                repo.add_feed(feed, start)
        workers = [start_worker(db, cfg, tmp_path / f"w{i}.log") for i in range(3)]
        try:
            t0 = time.monotonic()
            killed = False
            while time.monotonic() - t0 < DEADLINE_S:
                done = scalar(store, "SELECT count(*) FROM feeds WHERE next_due_at > :t", t=start)
                if not killed and done >= SITES * FEEDS_PER_SITE // 2:
                    workers[0].send_signal(signal.SIGKILL)
                    workers[0].wait()
                    killed = True
                if killed and finished(store, start):
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - t0
            assert killed and finished(store, start), (
                f"not finished after {elapsed:.0f}s; "
                + (tmp_path / "w1.log").read_text(errors="replace")[-3000:]
            )
        finally:
            for w in workers[1:]:
                w.send_signal(signal.SIGTERM)
            for w in workers[1:]:
                try:
                    w.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    w.kill()
    for w in workers[1:]:
        assert w.returncode == 0, (tmp_path / "w1.log").read_text(errors="replace")[-3000:]

    # no job failed for good (a dead worker's superseded jobs end as "aborted")
    assert scalar(store, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'") == 0
    # every article stored exactly once, with one version
    expected = {(s, e) for s in range(SITES) for e in NewsSite.events_of(s)}
    assert scalar(store, "SELECT count(*) FROM articles") == len(expected)
    assert scalar(store, "SELECT count(*) FROM article_versions") == len(expected)
    # one story per event, whichever worker assigned its articles
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT url, story_id FROM articles")).all()
    by_event: dict[int, set[int]] = {}
    for url, story in rows:
        by_event.setdefault(int(re.search(r"/a/(\d+)\.html", url)[1]), set()).add(story)  # type: ignore[index]
    assert all(len(s) == 1 and None not in s for s in by_event.values()), by_event
    assert len({next(iter(s)) for s in by_event.values()}) == EVENTS
    # every story's drift computed: recomputing every story queues nothing new
    settings = load_settings(cfg)
    report = RunReport()
    story_ids = [sid for s in by_event.values() for sid in s]
    update_alerts(
        store,
        story_ids,
        Analysis.from_settings(settings, use_topic=False),
        [],
        lambda: datetime.now(UTC),
        report,
    )
    assert report.alerts_new == 0
    # the drift summaries the update_story jobs kept let drift --diverging show what a
    # read of every story shows (a story merged away may wait for the sweep: read whole)
    app = App(db_url=db, settings=settings, channels=[], sync_feeds=False)
    diverging = app.drift_rows(diverging=True)
    with store.unit() as repo:
        everything = findings(repo.observations(), drift_rules(settings))
    expected = [
        (f.story_id, o.article)
        for f in everything
        if f.status == "diverging"
        for o in f.observations
    ]
    assert sorted((r["story"], r["article"]) for r in diverging) == sorted(expected) != []
    app._store().close()
    # the disagreeing events alerted, each alert delivered once
    alerts = scalar(store, "SELECT count(*) FROM alerts WHERE kind = 'disagreement'")
    assert alerts == len([e for e in range(EVENTS) if e % 4 == 0])
    keys = re.findall(r"newsdrift-alert-key: (\S+)", alerts_log.read_text())
    assert len(keys) == len(set(keys)) >= alerts
    # the per-domain budget held across the three workers
    assert max(site.peak.values()) <= BUDGET, site.peak
    assert len(site.peak) == SITES
    store.close()


# --- the coordination primitives, in one process ---------------------------------------------


@pytest.fixture
def pg_store(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[Store]:
    store = Store.open(pg_cluster.create_database(f"u_{request.node.name}"))
    yield store
    store.close()


def add_feeds(store: Store, n: int, now: datetime) -> None:
    with store.unit() as repo:
        for i in range(n):
            repo.add_feed(FeedConfig(url=f"http://127.0.0.1/f{i}", outlet="o", lang="en"), now)


def test_claims_skip_locked_rows_and_lapse_when_not_renewed(pg_store: Store) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ttl = timedelta(seconds=30)
    add_feeds(pg_store, 6, now)
    with Session(pg_store.engine) as a, Session(pg_store.engine) as b:
        got_a = claim_feeds(a, "A", now, ttl, 4)  # not committed: rows still locked
        got_b = claim_feeds(b, "B", now, ttl, 4)  # skips A's locked rows, does not wait
        assert len(got_a) == 4 and len(got_b) == 2 and not set(got_a) & set(got_b)
        a.commit()
        b.commit()
    with Session(pg_store.engine) as c:
        assert claim_feeds(c, "C", now + ttl / 2, ttl, 10) == []  # leases still held
        c.commit()
    with Session(pg_store.engine) as a:
        assert renew_claims(a, "A", now + ttl / 2, ttl) == 4  # A is alive, B died
        a.commit()
    with Session(pg_store.engine) as c:
        assert claim_feeds(c, "C", now + ttl, ttl, 10) == got_b  # B's lapsed, A's renewed
        release_feed(c, got_b[0], "C")
        release_feed(c, got_a[0], "C")  # not C's: untouched
        c.commit()
    with Session(pg_store.engine) as d:
        assert claim_feeds(d, "D", now + ttl, ttl, 10) == [got_b[0]]
        d.commit()


def test_shared_politeness_bounds_concurrency_across_workers(pg_store: Store) -> None:
    """Two workers' budgets (two SharedPoliteness objects) on one domain: at most
    BUDGET requests at once in total, and starts spaced by the gap."""
    gap = 0.05
    workers = [
        SharedPoliteness(pg_store.engine, max_concurrent=BUDGET, min_gap_s=gap) for _ in range(2)
    ]
    lock = threading.Lock()
    active, peak, starts = [0], [0], []

    def fetch(p: SharedPoliteness) -> None:
        with p.slot("example.org"):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                starts.append(time.monotonic())
            time.sleep(0.05)  # the request in flight
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=fetch, args=(workers[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == BUDGET
    # Starts are reserved gap apart on the database clock; the threads see them with
    # scheduling jitter, so the span is checked, allowing one gap of jitter.
    assert max(starts) - min(starts) >= (len(starts) - 2) * gap
    workers[0].defer("example.org", 60)
    assert 55 < workers[1].blocked_for("example.org") <= 60


EVENT_TEXT = (
    "Juniwick Labs, a Lisbon start-up that builds robot arms that pick parcels, has raised "
    "${amount} million in a Series B round, the company said. It uses artificial "
    "intelligence for warehouse robots. Juniwick Labs employs 140 people in Lisbon and "
    "plans to double its team of warehouse robots specialists within a year."
)


def _two_reports(store: Store, now: datetime) -> list[int]:
    ids = []
    with store.unit() as repo:
        for outlet, amount in (("wire", 120), ("ledger", 130)):
            text_ = EVENT_TEXT.replace("{amount}", str(amount))
            aid, _ = repo.add_article(
                key=f"https://{outlet}.example/juniwick",
                url=f"https://{outlet}.example/juniwick",
                outlet=outlet,
                lang="en",
                published=now,
                title=f"Juniwick Labs raises ${amount} million for AI in warehouse robots",
                now=now,
            )
            repo.add_version(
                aid, title="", text=text_, method="given", fetched_at=now, content_hash=outlet
            )
            ids.append(aid)
    return ids


def _assign_concurrently(store: Store, now: datetime) -> set[int | None]:
    """A assigns its article and keeps its transaction open until B is either waiting
    on a lock or done; then both commit."""
    analysis = Analysis.from_settings(load_settings(None), use_topic=False)
    first, second = _two_reports(store, now)
    a_done, b_done = threading.Event(), threading.Event()

    def waiting_on_lock() -> bool:
        with store.engine.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                ).scalar()
            )

    def a() -> None:
        with store.unit() as repo:
            [art] = repo.pending_versions(article_id=first)
            analyse_version(repo, art, analysis, now)
            a_done.set()
            while not b_done.is_set() and not waiting_on_lock():
                b_done.wait(0.01)

    def b() -> None:
        a_done.wait(10)
        with store.unit() as repo:
            [art] = repo.pending_versions(article_id=second)
            analyse_version(repo, art, analysis, now)
        b_done.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT story_id FROM articles"))}


def test_two_workers_assigning_one_event_at_once_end_with_one_story(pg_store: Store) -> None:
    """B waits for A's commit on their shared keys, then counts its keys and reads its
    candidates: it sees A's article in both, as a serial run would."""
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    app = build_app(str(pg_store.engine.url))
    ensure_schema(app, pg_store)
    counted: list[dict[str, int]] = []
    task_repo = task_repo_class(app)

    class Counting(task_repo):  # type: ignore[valid-type,misc]
        def key_counts(self, keys: Any, since: Any, until: Any = None) -> dict[str, int]:
            counts = super().key_counts(keys, since, until)
            counted.append(counts)
            return counts

    pg_store.repo_class = Counting
    stories = _assign_concurrently(pg_store, now)
    assert len(stories) == 1 and None not in stories
    a, b = counted
    assert a == {}  # A came first: nothing in the window yet
    assert b and max(b.values()) == 1  # A's article, committed while B waited


def test_without_the_key_locks_the_same_race_makes_two_stories(pg_store: Store) -> None:
    """The control: the plain repository reads candidates without locks, so B does not
    see A's uncommitted story: the test above exercises a real race."""
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    assert len(_assign_concurrently(pg_store, now)) == 2


def test_copy_sqlite_to_postgres_keeps_stories_drift_and_alerts(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    """scripts/copy_sqlite_to_pg.py: the same stories, drift rows and alerts after the move."""
    from pipeline.app import App
    from pipeline.models import IngestItem

    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    site = NewsSite(start=now)
    items = [
        IngestItem(
            id=f"{s}-{e}",
            url=f"https://outlet{s}.example/{e}",
            outlet=f"outlet{s}",
            lang="en",
            published=site.published(e),
            title="",
            text=None,
            html=site.article(s, e),
        )
        for s in range(4)
        for e in NewsSite.events_of(s)[:3]
    ]
    write_config(tmp_path / "cfg", tmp_path / "alerts.log")
    settings = load_settings(tmp_path / "cfg")
    source = App(db_url=f"sqlite:///{tmp_path / 'nd.db'}", settings=settings, channels=[])
    source.ingest(items, keep_all=True)
    target_url = pg_cluster.create_database("copy")
    r = subprocess.run(
        [sys.executable, "scripts/copy_sqlite_to_pg.py", source.db_url, target_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    target = App(db_url=target_url, settings=settings, channels=[])
    assert len(source.stories()) == 6  # six events, two outlets each
    assert target.stories() == source.stories()
    assert target.drift_rows() == source.drift_rows() != []
    # the drift summaries came along: the diverging query reads them on the target too
    assert target.status()["stories_unsummarised"] == 0
    assert target.drift_rows(diverging=True) == source.drift_rows(diverging=True) != []
    assert [a.key for a in target.alerts()] == [a.key for a in source.alerts()] != []
    # new rows get fresh ids after the copied ones
    with target._store().unit() as repo:
        assert repo.create_story("new", now) > max(s.id for s in source.stories())


def _refetch_page(n: int, amount: int) -> str:
    return (
        f"<html lang='en'><body><article><h1>Vantor{n} raises</h1><p>Vantor{n} Robotics, "
        f"a maker of warehouse robots, has raised ${amount} million in a Series B round. "
        f"Vantor{n} employs {50 + n} people in Leeds and plans to double its team of "
        "machine learning engineers within a year.</p></article></body></html>"
    )


def _run_refetch_task(
    pg_cluster: PgCluster,
    name: str,
    *,
    edited: set[int],
    per_domain: int,
    abort_after: int | None = None,
) -> tuple[Store, list[Any], int]:
    """Run the worker's real ``refetch`` task once (a real Procrastinate schema and job
    context) over 8 stored articles due on the ladder, whose pages answer after 0.2 s,
    those in ``edited`` with a changed text. ``abort_after``: the job is asked to abort
    (as a stopping worker asks it) once that many pages have been requested. Returns the
    store, the server's requests and the most it had in flight at once."""
    import dataclasses

    import procrastinate
    from procrastinate.job_context import AbortReason
    from procrastinate.jobs import Job

    from pipeline.app import fetch_settings
    from pipeline.extract import extract_article
    from pipeline.feeds import content_hash
    from pipeline.fetch import Fetcher
    from pipeline.run import Workers
    from pipeline.tasks import CONTEXT_KEY, WorkerContext
    from tests.httpserver import LoopbackServer, Reply

    db = pg_cluster.create_database(name)
    app = build_app(db)
    store = Store.open(db)
    store.repo_class = task_repo_class(app)
    ensure_schema(app, store)
    settings = load_settings(None)
    settings = dataclasses.replace(
        settings,
        fetch=dataclasses.replace(
            settings.fetch,
            allow_private=True,
            obey_robots=False,
            per_domain_min_gap_s=0.0,
            per_domain_concurrency=per_domain,
        ),
    )
    now = datetime.now(UTC)
    with LoopbackServer() as server:
        with store.unit() as repo:
            for n in range(8):
                url = server.url(f"/a/{n}")
                aid, _ = repo.add_article(
                    key=url, url=url, outlet="news.example", lang="en", published=now,
                    title=f"Vantor{n} raises", now=now,
                )  # fmt: skip
                first = extract_article(_refetch_page(n, 100), url).text  # as first fetched
                repo.add_version(
                    aid, title=f"Vantor{n} raises", text=first, method="trafilatura",
                    fetched_at=now, content_hash=content_hash(first),
                )  # fmt: skip
                repo.schedule_refetch(aid, step=0, at=now - timedelta(minutes=1))
                served = _refetch_page(n, 900 if n in edited else 100).encode()
                html = {"Content-Type": "text/html; charset=utf-8"}
                server.route(f"/a/{n}", Reply(200, html, served, delay_s=0.2))
        with store.engine.begin() as conn:  # the first versions' analyses ran
            conn.execute(text("DELETE FROM procrastinate_jobs"))

        def abort_reason() -> AbortReason | None:
            asked = abort_after is not None and len(server.requests) >= abort_after
            return AbortReason.SHUTDOWN if asked else None

        with Fetcher(fetch_settings(settings)) as fetcher, Workers(processes=1) as threads:
            ctx = WorkerContext(
                store=store,
                fetcher=fetcher,
                analysis=Analysis.from_settings(settings),
                channels=[],
                clock=lambda: now,
                workers=threads,
            )
            job = Job(id=1, queue="default", lock="refetch", queueing_lock="refetch",
                      task_name="newsdrift.refetch")  # fmt: skip
            context = procrastinate.JobContext(
                app=app,
                job=job,
                start_timestamp=time.time(),
                abort_reason=abort_reason,
                additional_context={CONTEXT_KEY: ctx},
            )
            app.tasks["newsdrift.refetch"](context, timestamp=int(now.timestamp()))
        return store, list(server.requests), server.max_concurrent


def test_the_refetch_task_fetches_due_pages_in_threads_and_stores_the_edits(
    pg_cluster: PgCluster,
) -> None:
    """The worker's periodic ``refetch`` task takes every article due on the edit
    ladder, fetches their pages concurrently (the worker's fetch threads, within the
    per-domain budget), and stores an edited page as a new version, deferring its
    analysis in the same transaction."""
    edited = {2, 5}
    store, requests, in_flight = _run_refetch_task(
        pg_cluster, "refetch_task", edited=edited, per_domain=4
    )
    assert len(requests) == 8 and 1 < in_flight <= 4  # in threads, within the budget
    versions = scalar(store, "SELECT count(*) FROM article_versions")
    assert versions == 8 + len(edited)
    assert scalar(store, "SELECT count(*) FROM articles WHERE refetch_step = 1") == 8
    # each edited article's analysis was deferred with its new version
    deferred = scalar(
        store,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'newsdrift.analyse_article'",
    )
    assert deferred == len(edited)
    store.close()


def test_the_refetch_task_ends_after_the_page_in_hand_when_its_worker_stops(
    pg_cluster: PgCluster,
) -> None:
    """A stopping worker asks its running jobs to abort (after ``shutdown_grace_s``); the
    re-fetch task, which Procrastinate cannot interrupt, ends after the page in hand
    instead of working through every due article, and the rest stay due for the next
    run. Pages one at a time (a budget of 1), so that the stop falls between them."""
    store, requests, _ = _run_refetch_task(
        pg_cluster, "refetch_stop", edited=set(range(8)), per_domain=1, abort_after=2
    )
    assert 2 <= len(requests) <= 3  # the page in hand when asked, at most one more
    moved = scalar(store, "SELECT count(*) FROM articles WHERE refetch_step = 1")
    assert 1 <= moved <= len(requests)
    # a page re-fetched is stored whole: its new version, its rung and its analysis job
    assert scalar(store, "SELECT count(*) FROM article_versions") == 8 + moved
    deferred = scalar(
        store,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'newsdrift.analyse_article'",
    )
    assert deferred == moved
    # the others were not touched: still on their first rung, due as before
    assert scalar(store, "SELECT count(*) FROM articles WHERE refetch_step = 0") == 8 - moved
    store.close()


def test_sighup_reloads_a_worker(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """`systemctl reload` of a worker: newsdrift.toml, the lexicons and feeds.toml are
    read again (a feed the file now lists is added); a file with an error is logged and
    the worker goes on; a changed [fetch] table is noted as needing a restart. Before,
    SIGHUP's default action ended the worker."""
    db = pg_cluster.create_database("reload")
    cfg = tmp_path / "cfg"
    write_config(cfg, tmp_path / "alerts.log")
    log = tmp_path / "w.log"
    worker = start_worker(db, cfg, log, verbose=True)
    store = Store.open(db)
    feed = "http://127.0.0.1:9/reloaded.xml"  # port 9 (discard): its polls fail, on loopback

    def wait_for(what: str, ok: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not ok():
            assert worker.poll() is None, f"the worker ended: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what}: {log.read_text()[-3000:]}"
            time.sleep(0.1)

    try:
        wait_for("start", lambda: "status=started" in log.read_text())
        (cfg / "feeds.toml").write_text(
            f'[[outlet]]\nname = "Reloaded"\nlang = "en"\nfeeds = ["{feed}"]\n'
        )
        settings = cfg / "newsdrift.toml"
        settings.write_text(
            settings.read_text().replace("[fetch]\n", "[fetch]\nread_timeout_s = 9.0\n")
        )
        worker.send_signal(signal.SIGHUP)
        wait_for("reload", lambda: "reload=done" in log.read_text())
        assert "changed=fetch takes_effect=restart" in log.read_text()
        assert scalar(store, "SELECT count(*) FROM feeds WHERE config_url = :u", u=feed) == 1
        settings.write_text(settings.read_text() + "[drift]\nrelative_tolerance = 'wide'\n")
        worker.send_signal(signal.SIGHUP)
        wait_for("the bad file's error", lambda: "reload=failed" in log.read_text())
        assert "relative_tolerance: expected float, got str" in log.read_text()
        time.sleep(1)
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        store.close()
    assert worker.returncode == 0, log.read_text()[-3000:]
