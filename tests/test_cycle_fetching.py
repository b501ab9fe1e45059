"""The fetch side of a cycle against a scripted loopback site: article identity across
headline, GUID and URL changes; edits caught on the re-fetch ladder; a good citizen's day."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.models import FeedConfig
from pipeline.settings import load_settings
from tests.httpserver import LoopbackServer, RecordedRequest, Reply
from tests.pg import DbFactory

T0 = datetime(2025, 6, 13, 8, tzinfo=UTC)

BODY = (
    "Meta beteiligt sich mit 49 Prozent an Scale AI und zahlt dafür {amount} Milliarden Dollar. "
    "Scale-Gründer Alexandr Wang wechselt zu Meta und soll dort das neue Superintelligence-Labor "
    "leiten. Scale AI erzielte im vergangenen Jahr einen Umsatz von mehr als 870 Millionen Dollar. "
    "Der Deal ist eine der größten KI-Investitionen des Jahres. {stamp}"
)


class Site:
    """A feed and its article pages, changeable between cycles."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.entries: list[dict[str, str]] = []
        self.pages: dict[str, str] = {}
        self.etag = '"v1"'
        self.max_age = 1800
        server.route(
            "/robots.txt", Reply(200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n")
        )
        server.route("/feed.xml", self.feed)

    def url(self, path: str) -> str:
        return self.server.url(path)

    def feed(self, req: RecordedRequest) -> Reply:
        headers = {
            "Content-Type": "application/rss+xml",
            "ETag": self.etag,
            "Cache-Control": f"max-age={self.max_age}",
        }
        if req.header("if-none-match") == self.etag:
            return Reply(304, headers)
        items = "".join(
            f"<item><title>{e['title']}</title><link>{e['link']}</link><guid>{e['guid']}</guid>"
            f"<description>{e.get('summary', 'Meta und Scale AI: KI-Deal')}</description><pubDate>{format_datetime(T0)}</pubDate></item>"
            for e in self.entries
        )
        body = f"<rss version='2.0'><channel><title>KI-Nachrichten</title>{items}</channel></rss>"
        return Reply(200, headers, body.encode("utf-8"))

    def page(
        self, path: str, amount: str, stamp: str = "Stand: 08:00 Uhr", etag: str | None = None
    ) -> None:
        html = (
            "<!doctype html><html lang='de'><head><title>Meta steigt bei Scale AI ein</title></head><body>"
            "<nav>Start | KI | Wirtschaft</nav><article><h1>Meta steigt bei Scale AI ein</h1>"
            f"<p>{BODY.format(amount=amount, stamp=stamp)}</p></article><footer>Impressum</footer></body></html>"
        )
        headers = {"Content-Type": "text/html; charset=utf-8"}
        if etag:
            headers["ETag"] = etag
        reply = Reply(200, headers, html.encode("utf-8"))

        def handler(req: RecordedRequest) -> Reply:
            if etag and req.header("if-none-match") == etag:
                return Reply(304, headers)
            return reply

        self.server.route(path, handler)


@pytest.fixture
def site() -> Iterator[Site]:
    with LoopbackServer() as server:
        yield Site(server)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_app(
    tmp_path: Path, site: Site, clock: Clock, db_url: str, *, on_topic: bool = True
) -> App:
    s = load_settings(None)
    s = dataclasses.replace(
        s,
        fetch=dataclasses.replace(s.fetch, allow_private=True, per_domain_min_gap_s=0.0),
        alerts=dataclasses.replace(s.alerts, console=False, log_file=str(tmp_path / "a.log")),
    )
    app = App(db_url=db_url, settings=s, sync_feeds=False, clock=clock)
    with app._store().unit() as repo:
        repo.add_feed(
            FeedConfig(
                url=site.url("/feed.xml"), outlet="ki.example", lang="de", on_topic=on_topic
            ),
            clock(),
        )
    return app


def make_due(app: App, clock: Clock) -> None:
    with app._store().unit() as repo:
        for feed in repo.feeds():
            repo.record_feed_ok(
                feed.id, now=clock(), next_due=clock(), etag=None, last_modified=None
            )


def test_headline_guid_and_url_changes_make_no_second_article(
    tmp_path: Path, site: Site, new_db: DbFactory
) -> None:
    clock = Clock(T0 + timedelta(minutes=1))
    site.page("/a/1", "14,8")
    site.entries = [
        {"title": "Meta steigt bei Scale AI ein", "link": site.url("/a/1"), "guid": "g-1"}
    ]
    app = make_app(tmp_path, site, clock, new_db())
    assert app.run_once().articles_new == 1
    assert app.store is not None
    with app.store.engine.connect() as conn:  # which decoding step gave the text is recorded
        assert (
            conn.exec_driver_sql("select decoded_by from article_versions").scalar_one() == "http"
        )

    # Headline edited, GUID scheme changed, tracking parameters added.
    site.etag = '"v2"'
    site.entries = [
        {
            "title": "Meta kauft 49 Prozent von Scale AI",
            "link": site.url("/a/1?utm_source=rss&amp;utm_medium=feed"),
            "guid": "urn:ki:1",
        }
    ]
    make_due(app, clock)
    assert app.run_once().articles_new == 0

    # The same article moved to a new URL with a new GUID: its content identifies it.
    site.page("/a/1-neu", "14,8", stamp="Stand: 09:30 Uhr")
    site.etag = '"v3"'
    site.entries = [
        {
            "title": "Meta kauft 49 Prozent von Scale AI",
            "link": site.url("/a/1-neu"),
            "guid": "urn:ki:1-neu",
        }
    ]
    make_due(app, clock)
    assert app.run_once().articles_new == 0
    assert len(app.articles()) == 1


def test_edits_are_caught_on_the_refetch_ladder(
    tmp_path: Path, site: Site, new_db: DbFactory
) -> None:
    clock = Clock(T0 + timedelta(minutes=1))
    site.page("/a/1", "14,8", etag='"p1"')
    site.entries = [
        {"title": "Meta steigt bei Scale AI ein", "link": site.url("/a/1"), "guid": "g-1"}
    ]
    app = make_app(tmp_path, site, clock, new_db())
    app.run_once()

    # 15 minutes on: the page answers 304 to the conditional re-fetch.
    clock.now = T0 + timedelta(minutes=16)
    first = app.run_once()
    page_requests = [r for r in site.server.requests if r.path == "/a/1"]
    assert len(page_requests) == 2 and page_requests[1].header("if-none-match") == '"p1"'
    assert first.articles_edited == 0

    # Only the timestamp changes: no edit.
    site.page("/a/1", "14,8", stamp="Stand: 09:12 Uhr", etag='"p2"')
    clock.now = T0 + timedelta(minutes=61)
    assert app.run_once().articles_edited == 0

    # The figure changes: a new version, its figures read again, a revision.
    site.page("/a/1", "14,3", stamp="Stand: 11:40 Uhr", etag='"p3"')
    clock.now = T0 + timedelta(minutes=181)
    report = app.run_once()
    assert report.articles_edited == 1 and report.versions_processed == 1
    rows = app.drift_rows(revisions=True)
    assert sorted((r["version"], r["value"]) for r in rows) == [(1, 14.8e9), (2, 14.3e9)]
    assert [r["value"] for r in app.drift_rows(metric="deal_value")] == [14.3e9]
    # ... and what we knew before the edit is still there.
    before = app.drift_rows(metric="deal_value", as_of=T0 + timedelta(minutes=100))
    assert [r["value"] for r in before] == [14.8e9]

    # After the last rung (3 days) the article is left alone.
    clock.now = T0 + timedelta(days=10)
    app.run_once()
    clock.now = T0 + timedelta(days=11)
    count = len([r for r in site.server.requests if r.path == "/a/1"])
    app.run_once()
    assert len([r for r in site.server.requests if r.path == "/a/1"]) == count


def test_a_partial_article_gets_its_page_on_the_refetch_ladder(
    tmp_path: Path, site: Site, new_db: DbFactory
) -> None:
    """A page that fails while the feed has a summary is stored from the summary
    (partial) and put on the re-fetch ladder; when the page comes, its text is the
    article's newest version, the article is kept, and the summary's rounder figure is
    no revision of the page's."""
    clock = Clock(T0 + timedelta(minutes=1))
    site.server.route("/a/1", Reply(503, {"Content-Type": "text/plain"}, b"busy"))
    site.entries = [
        {
            "title": "Meta steigt bei Scale AI ein",
            "link": site.url("/a/1"),
            "guid": "g-1",
            "summary": "Meta zahlt 14 Milliarden Dollar für 49 Prozent an Scale AI.",
        }
    ]
    app = make_app(tmp_path, site, clock, new_db())
    first = app.run_once()
    assert first.articles_partial == 1 and first.articles_new == 0

    def stored() -> list[tuple[str, str]]:
        assert app.store is not None
        with app.store.engine.connect() as conn:
            return [
                (status, method)
                for status, method in conn.exec_driver_sql(
                    "select a.status, v.method from articles a"
                    " join article_versions v on v.article_id = a.id order by v.number"
                )
            ]

    assert stored() == [("partial", "feed-summary")]

    site.page("/a/1", "14,8")  # the outlet's server is back
    clock.now = T0 + timedelta(minutes=16)  # the ladder's first rung
    second = app.run_once()
    assert second.articles_completed == 1 and second.articles_edited == 0
    assert stored() == [("kept", "feed-summary"), ("kept", "trafilatura")]
    assert [r["value"] for r in app.drift_rows(metric="deal_value")] == [14.8e9]
    assert app.drift_rows(revisions=True) == []
    assert [a.kind for a in app.alerts() if a.kind == "revision"] == []


OFF_TOPIC = (
    "Die Stadt führt im Rathaus ein neues Buchungssystem für Termine ein. Bürgerinnen und "
    "Bürger können ab Montag online Termine für Pässe und Ausweise vereinbaren. Die "
    "Öffnungszeiten bleiben unverändert. Der Gemeinderat hatte die Anschaffung im Frühjahr "
    "beschlossen; sie kostet 120.000 Euro."
)


@pytest.mark.parametrize(("body", "status"), [(OFF_TOPIC, "skipped"), (BODY, "kept")])
def test_a_completed_article_of_a_general_feed_is_judged_on_its_text(
    tmp_path: Path, site: Site, new_db: DbFactory, body: str, status: str
) -> None:
    """A general feed's partial article passed the topic test on its summary alone; when
    its page comes on the ladder, the text decides, as on a first fetch. Off topic, it is
    skipped: out of its story and the blocking index, off the ladder, its rows kept."""
    clock = Clock(T0 + timedelta(minutes=1))
    site.server.route("/a/1", Reply(503, {"Content-Type": "text/plain"}, b"busy"))
    site.entries = [
        {
            "title": "Rathaus digital",
            "link": site.url("/a/1"),
            "guid": "g-1",
            # A teaser that names AI: kept on the entry alone.
            "summary": "Die Stadt führt ein Computerprogramm ein, das mit künstlicher "
            "Intelligenz arbeitet; Meta und Scale AI liefern die Technik.",
        }
    ]
    app = make_app(tmp_path, site, clock, new_db(), on_topic=False)
    assert app.run_once().articles_partial == 1
    assert [(a.status, a.topic_stage) for a in app.articles()] == [("partial", "entry")]
    assert [s.articles for s in app.stories()] == [(site.url("/a/1"),)]

    html = (
        "<!doctype html><html lang='de'><head><title>Rathaus digital</title></head><body>"
        f"<article><h1>Rathaus digital</h1><p>{body.format(amount='14,8', stamp='')}</p>"
        f"<p>{body.format(amount='14,8', stamp='')}</p></article></body></html>"
    )
    site.server.route(
        "/a/1", Reply(200, {"Content-Type": "text/html; charset=utf-8"}, html.encode())
    )
    clock.now = T0 + timedelta(minutes=16)  # the ladder's first rung
    report = app.run_once()
    assert report.articles_completed == 1
    [article] = app.articles()
    assert (article.status, article.topic_stage) == (status, "text")
    assert app.store is not None
    with app.store.engine.connect() as conn:
        methods = conn.exec_driver_sql("select method from article_versions order by number")
        assert [m for (m,) in methods] == ["feed-summary", "trafilatura"]  # nothing lost
        keys = conn.exec_driver_sql("select count(*) from story_keys").scalar_one()
    requested = len([r for r in site.server.requests if r.path == "/a/1"])
    clock.now = T0 + timedelta(minutes=61)  # the next rung
    app.run_once()
    again = len([r for r in site.server.requests if r.path == "/a/1"]) - requested
    if status == "skipped":
        assert app.stories() == [] and keys == 0
        assert again == 0  # an off-topic article is not watched for edits
        assert app.drift_rows() == []
    else:
        assert [s.articles for s in app.stories()] == [(site.url("/a/1"),)] and keys > 0
        assert again == 1
        assert [r["value"] for r in app.drift_rows(metric="deal_value")] == [14.8e9]


def test_a_good_citizen_over_a_simulated_day(tmp_path: Path, site: Site, new_db: DbFactory) -> None:
    clock = Clock(T0)
    site.page("/a/1", "14,8")
    site.entries = [
        {"title": "Meta steigt bei Scale AI ein", "link": site.url("/a/1"), "guid": "g-1"}
    ]
    site.max_age = 3600  # longer than the feed's 30-minute interval
    app = make_app(tmp_path, site, clock, new_db())
    times: list[datetime] = []
    while clock.now < T0 + timedelta(days=1):
        before = len([r for r in site.server.requests if r.path.startswith("/feed.xml")])
        app.run_once()
        after = [r for r in site.server.requests if r.path.startswith("/feed.xml")]
        if len(after) > before:
            times.append(clock.now)
        clock.now += timedelta(minutes=5)
    feed_requests = [r for r in site.server.requests if r.path.startswith("/feed.xml")]
    assert all(r.path == "/feed.xml" for r in feed_requests)  # never junk query parameters
    assert all(r.header("if-none-match") == '"v1"' for r in feed_requests[1:])  # conditional
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= timedelta(seconds=3600)  # never sooner than max-age allows
    assert 12 <= len(feed_requests) <= 25
    status = json.loads(json.dumps(app.status(), default=str))
    assert status["feeds_failing"] == 0


def test_broken_feeds_fail_alone_with_clear_messages(
    tmp_path: Path, site: Site, new_db: DbFactory
) -> None:
    clock = Clock(T0 + timedelta(minutes=1))
    site.page("/a/1", "14,8")
    site.entries = [
        {"title": "Meta steigt bei Scale AI ein", "link": site.url("/a/1"), "guid": "g-1"}
    ]
    server = site.server
    server.route("/404.xml", Reply(404, {"Content-Type": "text/plain"}, b"no"))
    server.route("/500.xml", Reply(500, {"Content-Type": "text/plain"}, b"oops"))
    server.route("/410.xml", Reply(410, {"Content-Type": "text/plain"}, b"gone"))
    server.route(
        "/bad.xml",
        Reply(200, {"Content-Type": "application/rss+xml"}, b"<rss><channel><item><title>x</ti"),
    )
    server.route(
        "/page.xml",
        Reply(
            200,
            {"Content-Type": "text/html"},
            b"<!doctype html><html><body><p>Hello</p></body></html>",
        ),
    )
    server.route("/loop.xml", Reply(301, {"Location": "/loop2.xml"}))
    server.route("/loop2.xml", Reply(301, {"Location": "/loop.xml"}))
    server.route(
        "/huge.xml",
        Reply(
            200, {"Content-Type": "application/rss+xml"}, b"<rss>" + b" " * 3_000_000 + b"</rss>"
        ),
    )
    app = make_app(tmp_path, site, clock, new_db())
    assert app.settings is not None
    app.settings = dataclasses.replace(
        app.settings, fetch=dataclasses.replace(app.settings.fetch, max_bytes=1_000_000)
    )
    broken = ["/404.xml", "/500.xml", "/410.xml", "/bad.xml", "/page.xml", "/loop.xml", "/huge.xml"]
    with app._store().unit() as repo:
        for path in broken:
            repo.add_feed(
                FeedConfig(url=site.url(path), outlet=f"broken{path}", lang="de", on_topic=True),
                clock(),
            )
    report = app.run_once()
    assert report.feeds_polled == 8 and report.feeds_failed == 7, report.errors
    assert report.articles_new == 1  # the good feed went through
    health = {f.url.rsplit("/", 1)[1]: f for f in app.feeds()}
    assert health["feed.xml"].status == "ok"
    assert health["410.xml"].status == "gone"
    for path in broken:
        f = health[path.lstrip("/")]
        assert f.status in ("error", "gone") and f.last_error and f.last_error_at == clock()
        assert site.url(path) in f.last_error  # says where
    assert "404" in health["404.xml"].last_error
    assert "500" in health["500.xml"].last_error
    assert "redirect" in health["loop.xml"].last_error.lower()
    assert (
        "1000000" in health["huge.xml"].last_error.replace(",", "").replace("_", "")
        or "large" in health["huge.xml"].last_error.lower()
    )

    # The good feed breaks too: what is stored stays.
    server.route("/feed.xml", Reply(500, {}, b""))
    make_due(app, clock)
    app.run_once()
    assert len(app.articles()) == 1 and len(app.stories()) == 1


def test_an_article_listed_twice_in_one_feed_is_fetched_and_stored_once(
    tmp_path: Path, site: Site, new_db: DbFactory
) -> None:
    """Two entries (two GUIDs) pointing at one page, one of them with tracking parameters:
    the feed's entries are screened together, so the page is requested once."""
    clock = Clock(T0 + timedelta(minutes=1))
    site.page("/a/1", "14,8")
    site.entries = [
        {"title": "Meta steigt bei Scale AI ein", "link": site.url("/a/1"), "guid": "g-1"},
        {
            "title": "Meta kauft 49 Prozent",
            "link": site.url("/a/1?utm_source=rss"),
            "guid": "g-1-copy",
        },
    ]
    app = make_app(tmp_path, site, clock, new_db())
    report = app.run_once()
    assert report.articles_new == 1 and report.articles_failed == 0
    assert len([r for r in site.server.requests if r.path.startswith("/a/1")]) == 1
    assert len(app.articles()) == 1


def test_a_page_that_failed_for_a_passing_cause_is_tried_again_while_listed(
    tmp_path: Path, new_db: DbFactory
) -> None:
    """An entry without a summary whose page answers 503 cannot be stored even as
    partial; the feed's validators are then not kept, so the next poll is unconditional
    (no 304 hiding the entry) and the page is fetched again. A page that fails for good
    (404) does not hold the validators back."""
    with LoopbackServer() as server:
        site = Site(server)  # robots.txt; its /feed.xml is replaced below
        pages = {"/a/1": 0}
        etag = '"f1"'

        def feed(req: RecordedRequest) -> Reply:
            headers = {"Content-Type": "application/rss+xml", "ETag": etag}
            if req.header("if-none-match") == etag:
                return Reply(304, headers)
            items = "".join(
                f"<item><title>Meta steigt bei Scale AI ein</title><link>{server.url(p)}</link>"
                f"<guid>{p}</guid><pubDate>{format_datetime(T0)}</pubDate></item>"
                for p in ("/a/1", "/a/404")
            )
            body = f"<rss version='2.0'><channel><title>KI</title>{items}</channel></rss>"
            return Reply(200, headers, body.encode("utf-8"))

        def page(req: RecordedRequest) -> Reply:
            pages["/a/1"] += 1
            if pages["/a/1"] == 1:
                return Reply(503, {"Content-Type": "text/plain"}, b"busy")
            html = (
                "<html lang='de'><head><title>Meta steigt bei Scale AI ein</title></head><body>"
                f"<article><h1>Meta steigt bei Scale AI ein</h1><p>{BODY.format(amount='14,8', stamp='')}"
                "</p></article></body></html>"
            )
            return Reply(200, {"Content-Type": "text/html; charset=utf-8"}, html.encode())

        server.route("/feed.xml", feed)
        server.route("/a/1", page)
        server.route("/a/404", Reply(404, {"Content-Type": "text/plain"}, b"no"))
        clock = Clock(T0 + timedelta(minutes=1))
        app = make_app(tmp_path, site, clock, new_db())

        first = app.run_once()
        assert first.articles_new == 0 and first.articles_failed == 2
        assert any("503" in e for e in first.errors)
        make_due(app, clock)
        second = app.run_once()
        feed_requests = server.requests_for("/feed.xml")
        assert feed_requests[1].header("if-none-match") is None  # unconditional
        assert second.articles_new == 1 and pages["/a/1"] == 2
        assert [a.url for a in app.articles()] == [server.url("/a/1")]

        # What is still missing failed for good (404): the second poll kept the validators.
        make_due(app, clock)
        third = app.run_once()
        assert server.requests_for("/feed.xml")[2].header("if-none-match") == etag
        assert third.articles_new == 0 and third.feeds_not_modified == 1
