"""Poll scheduling, redirect decisions and the politeness budget.

The pure functions are tested with values; where the inputs come from HTTP
(Cache-Control, Retry-After, redirects) they are also taken from real
responses of a loopback server, and a simulated day checks that newsdrift is
a good citizen towards a feed that keeps answering 304.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import FetchError, RateLimited
from pipeline.feeds import parse_feed
from pipeline.fetch import Fetcher, FetchSettings, status_of
from pipeline.politeness import Politeness, registrable_domain
from pipeline.polling import (
    GONE_RECHECK,
    JITTER_FRACTION,
    PollObservation,
    freshness,
    next_poll,
    parse_retry_after,
    redirect_decision,
)
from tests.httpserver import LoopbackServer, RecordedRequest, Reply

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RSS = (
    b"<?xml version='1.0'?><rss version='2.0'><channel><title>T</title><ttl>180</ttl>"
    b"<item><title>a</title><link>https://x.example.com/a</link></item></channel></rss>"
)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


def make_fetcher(clock=lambda: NOW) -> Fetcher:
    settings = FetchSettings(allow_private=True, per_domain_min_gap_s=0.0, obey_robots=False)
    return Fetcher(settings, clock=clock)


def poll_after(result_headers: dict[str, str], *, ttl: int | None = None, interval: int = 30):
    return next_poll(
        now=NOW,
        interval_minutes=interval,
        outcome="ok",
        cache_control=result_headers.get("cache-control"),
        expires=result_headers.get("expires"),
        date_header=result_headers.get("date"),
        ttl_minutes=ttl,
        rng=random.Random(1),
    )


def within_jitter(when: datetime, delay: timedelta) -> bool:
    return NOW + delay <= when <= NOW + delay * (1 + JITTER_FRACTION)


# --- freshness from real responses ------------------------------------------------------


def test_cache_control_and_ttl_from_a_real_response(server: LoopbackServer):
    server.route("/ttl", Reply(200, {"Cache-Control": "public, max-age=3600"}, RSS))
    server.route("/maxage", Reply(200, {"Cache-Control": "max-age=14400, must-revalidate"}, RSS))
    with make_fetcher() as f:
        r = f.fetch(server.url("/ttl"), kind="feed")
        feed = parse_feed(r.content, r.url, r.headers)
        assert feed.ttl_minutes == 180
        # <ttl> 3 h beats max-age 1 h beats the 30 min interval
        assert within_jitter(poll_after(dict(r.headers), ttl=feed.ttl_minutes), timedelta(hours=3))
        r = f.fetch(server.url("/maxage"), kind="feed")
        assert within_jitter(poll_after(dict(r.headers), ttl=180), timedelta(hours=4))


def test_expires_is_read_against_the_servers_date(server: LoopbackServer):
    server.route(
        "/feed",
        Reply(
            200,
            {"Date": "Mon, 01 Jan 2024 00:00:00 GMT", "Expires": "Mon, 01 Jan 2024 02:00:00 GMT"},
            RSS,
        ),
    )
    with make_fetcher() as f:
        r = f.fetch(server.url("/feed"), kind="feed")
    assert within_jitter(poll_after(dict(r.headers)), timedelta(hours=2))


def test_freshness_rules():
    fresh = freshness(cache_control="max-age=60", expires="garbage", date_header=None, now=NOW)
    assert fresh == timedelta(seconds=60)  # max-age wins over Expires
    expired = freshness(cache_control=None, expires="0", date_header=None, now=NOW)
    assert expired == timedelta(0)  # invalid Expires means already expired
    assert freshness(cache_control="no-cache", expires=None, date_header=None, now=NOW) is None


def test_interval_is_the_floor():
    # a feed that says max-age=60 is still polled no more often than configured
    when = poll_after({"cache-control": "max-age=60"}, interval=45)
    assert within_jitter(when, timedelta(minutes=45))


def test_cap():
    when = poll_after({"cache-control": "max-age=999999"}, ttl=100000)
    assert within_jitter(when, timedelta(days=1))


# --- failures -----------------------------------------------------------------------------


def test_retry_after_from_429_and_503(server: LoopbackServer):
    server.route("/429", Reply(429, {"Retry-After": "7200"}))
    server.route(
        "/503",
        Reply(
            503,
            {
                "Date": "Tue, 02 Jan 2024 10:00:00 GMT",
                "Retry-After": "Tue, 02 Jan 2024 13:00:00 GMT",
            },
        ),
    )
    seen: list[float] = []
    for path, host in (("/429", "a.test"), ("/503", "b.test")):
        settings = FetchSettings(allow_private=True, per_domain_min_gap_s=0.0, obey_robots=False)
        resolver = lambda h, p: ["127.0.0.1"]  # noqa: E731
        with (
            Fetcher(settings, resolver=resolver, clock=lambda: NOW) as f,
            pytest.raises(RateLimited) as info,
        ):
            f.fetch(server.url(path, host=host), kind="feed")
        assert info.value.retry_after is not None
        seen.append(info.value.retry_after)
        when = next_poll(
            now=NOW,
            interval_minutes=30,
            outcome=info.value.kind,
            consecutive_failures=1,
            retry_after=info.value.retry_after,
            rng=random.Random(2),
            cache_control=None,
            expires=None,
            date_header=None,
            ttl_minutes=None,
        )
        assert within_jitter(when, timedelta(seconds=info.value.retry_after))
    assert seen == [7200.0, 10800.0]


def test_parse_retry_after_forms():
    assert parse_retry_after("120", date_header=None, now=NOW) == 120
    assert parse_retry_after("Sun, 22 Nov 2026 12:10:00 GMT", date_header=None, now=NOW) == 600
    assert (
        parse_retry_after(
            "Sunday, 22-Nov-26 12:10:00 GMT", date_header="Sun, 22 Nov 2026 12:05:00 GMT", now=NOW
        )
        == 300
    )
    assert parse_retry_after("Sun, 22 Nov 2026 11:00:00 GMT", date_header=None, now=NOW) == 0
    assert parse_retry_after("soon", date_header=None, now=NOW) is None
    assert parse_retry_after(None, date_header=None, now=NOW) is None


def test_backoff_grows_is_capped_and_hard_grows_faster():
    def delay(outcome: str, failures: int) -> timedelta:
        when = next_poll(
            now=NOW,
            interval_minutes=30,
            outcome=outcome,
            consecutive_failures=failures,
            rng=random.Random(0),
        )
        return when - NOW

    soft = [delay("soft", n) for n in range(1, 12)]
    assert soft == sorted(soft)
    assert soft[0] < timedelta(minutes=34)
    assert soft[1] >= timedelta(minutes=60)
    assert timedelta(days=1) <= soft[-1] <= timedelta(days=1, minutes=30)
    assert delay("hard", 2) > delay("soft", 2)
    assert delay("hard", 1000) <= timedelta(days=1, minutes=30)  # no overflow


def test_gone_is_rechecked_weekly():
    when = next_poll(now=NOW, interval_minutes=30, outcome="gone", rng=random.Random(0))
    assert NOW + GONE_RECHECK <= when <= NOW + GONE_RECHECK + timedelta(minutes=30)


def test_unknown_outcome():
    with pytest.raises(ValueError, match="unknown poll outcome"):
        next_poll(now=NOW, interval_minutes=30, outcome="fine", rng=random.Random(0))


def test_jitter_spreads_feeds_imported_together():
    rng = random.Random(42)
    times = [next_poll(now=NOW, interval_minutes=60, outcome="ok", rng=rng) for _ in range(100)]
    assert all(NOW + timedelta(minutes=60) <= t <= NOW + timedelta(minutes=66) for t in times)
    assert len({t.replace(microsecond=0) for t in times}) > 80  # ~87 expected of 360 s
    assert max(times) - min(times) > timedelta(minutes=4)


# --- redirects ----------------------------------------------------------------------------


def observe(f: Fetcher, url: str) -> PollObservation:
    try:
        r = f.fetch(url, kind="feed")
    except FetchError as e:
        return PollObservation(getattr(e, "redirects", ()), status_of(e))
    return PollObservation(r.redirects, r.status)


def test_301_moves_the_feed_only_when_confirmed(server: LoopbackServer):
    new = server.url("/new.xml")
    server.route("/old.xml", Reply(301, {"Location": "/new.xml"}))
    server.route("/new.xml", Reply(200, {}, RSS))
    history: list[PollObservation] = []
    decisions = []
    with make_fetcher() as f:
        for _ in range(3):
            history.append(observe(f, server.url("/old.xml")))
            decisions.append(redirect_decision(history))
    assert decisions == [None, None, new]


def test_302_and_307_never_move_the_feed(server: LoopbackServer):
    server.route("/temp.xml", Reply(302, {"Location": "/elsewhere.xml"}))
    server.route("/temp7.xml", Reply(307, {"Location": "/elsewhere.xml"}))
    server.route("/elsewhere.xml", Reply(200, {}, RSS))
    with make_fetcher() as f:
        for path in ("/temp.xml", "/temp7.xml"):
            history = [observe(f, server.url(path)) for _ in range(6)]
            assert history[-1].redirects[0][0] in (302, 307)
            assert redirect_decision(history) is None


def test_301_then_old_url_gone_moves_at_once(server: LoopbackServer):
    server.route("/old.xml", Reply(308, {"Location": "/new.xml"}))
    server.route("/new.xml", Reply(200, {}, RSS))
    with make_fetcher() as f:
        history = [observe(f, server.url("/old.xml"))]
        assert redirect_decision(history) is None
        server.route("/old.xml", Reply(410))
        history.append(observe(f, server.url("/old.xml")))
    assert history[-1] == PollObservation((), 410)
    assert redirect_decision(history) == server.url("/new.xml")


def test_redirect_decision_rules():
    a, b = "https://a.example.com/f", "https://b.example.com/f"
    p = PollObservation(((301, a),), 200)
    assert redirect_decision([p, p, p]) == a
    assert redirect_decision([p, PollObservation(((301, b),), 200), p]) is None  # inconsistent
    assert redirect_decision([PollObservation(((302, a), (301, b)), 200)] * 5) is None
    assert redirect_decision([PollObservation(((301, a), (302, b)), 200)] * 3) == a
    assert redirect_decision([PollObservation((), 404)]) is None
    assert redirect_decision([]) is None
    assert redirect_decision([p, p], confirmations=2) == a


# --- a good citizen over a simulated day -------------------------------------------------


def test_a_simulated_day_against_a_304_feed(server: LoopbackServer):
    etag = '"rev-17"'

    def feed(req: RecordedRequest) -> Reply:
        headers = {"ETag": etag, "Cache-Control": "max-age=3600"}
        if req.header("if-none-match") == etag:
            return Reply(304, headers)
        return Reply(200, {**headers, "Content-Type": "application/rss+xml"}, RSS)

    server.route("/feed.xml", feed)
    clock = [NOW]
    rng = random.Random(7)
    stored_etag: str | None = None
    polls: list[datetime] = []
    ttl: int | None = None  # stored with the feed, like its validators
    with make_fetcher(clock=lambda: clock[0]) as f:
        while clock[0] < NOW + timedelta(days=1):
            polls.append(clock[0])
            r = f.fetch(server.url("/feed.xml"), etag=stored_etag, kind="feed")
            if not r.not_modified:
                ttl = parse_feed(r.content, r.url, r.headers).ttl_minutes
                stored_etag = r.etag
            clock[0] = next_poll(
                now=clock[0],
                interval_minutes=15,
                outcome="not_modified" if r.not_modified else "ok",
                cache_control=r.headers.get("cache-control"),
                expires=r.headers.get("expires"),
                date_header=r.headers.get("date"),
                ttl_minutes=ttl,
                rng=rng,
            )
    requests = server.requests_for("/feed.xml")
    assert len(requests) == len(polls)
    assert all(r.path == "/feed.xml" for r in server.requests)  # no junk query parameters
    assert all(r.header("if-none-match") == etag for r in requests[1:])  # only conditional
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert min(gaps) >= timedelta(hours=3)  # the feed's <ttl> of 180 min, never more often
    assert len(requests) <= 8


# --- politeness -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("www.bbc.co.uk", "bbc.co.uk"),
        ("feeds.bbci.co.uk", "bbci.co.uk"),
        ("news.example.com", "example.com"),
        ("a.b.example.com.au", "example.com.au"),
        ("user.github.io", "user.github.io"),  # a private suffix: each user is a site
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("feeds.example.test", "example.test"),
        ("localhost", "localhost"),
        ("WWW.Heise.DE.", "heise.de"),
    ],
)
def test_registrable_domain(host: str, domain: str):
    assert registrable_domain(host) == domain


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_politeness_gap_per_domain_with_a_fake_clock():
    t = FakeTime()
    budget = Politeness(max_concurrent=2, min_gap_s=1.5, clock=t.clock, sleep=t.sleep)
    starts = []
    for _ in range(3):
        with budget.slot("example.com"):
            starts.append(t.now)
    with budget.slot("other.org"):
        starts.append(t.now)  # another domain does not wait
    assert starts == [1000.0, 1001.5, 1003.0, 1003.0]


def test_politeness_defer_and_crawl_delay():
    t = FakeTime()
    budget = Politeness(max_concurrent=1, min_gap_s=1.0, clock=t.clock, sleep=t.sleep)
    budget.defer("example.com", 120)
    assert budget.blocked_for("example.com") == 120
    assert budget.blocked_for("other.org") == 0
    budget.defer("example.com", 10)  # a shorter wait never shortens a longer one
    t.now += 100
    assert budget.blocked_for("example.com") == 20
    budget.set_min_gap("slow.org", 5.0)
    with budget.slot("slow.org"):
        pass
    with budget.slot("slow.org"):
        pass
    assert t.sleeps == [5.0]


def test_politeness_rejects_nonsense():
    with pytest.raises(ValueError):
        Politeness(max_concurrent=0)
    with pytest.raises(ValueError):
        Politeness(min_gap_s=-1)


# --- properties ------------------------------------------------------------------------------


@given(
    interval=st.integers(min_value=1, max_value=10_000),
    outcome=st.sampled_from(["ok", "not_modified", "hard", "soft", "rate_limited", "blocked"]),
    failures=st.integers(min_value=0, max_value=500),
    max_age=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
    ttl=st.one_of(st.none(), st.integers(min_value=0, max_value=10**7)),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=1e9)),
    seed=st.integers(),
)
def test_next_poll_is_never_early_and_always_capped(
    interval, outcome, failures, max_age, ttl, retry_after, seed
):
    when = next_poll(
        now=NOW,
        interval_minutes=interval,
        outcome=outcome,
        consecutive_failures=failures,
        cache_control=None if max_age is None else f"max-age={max_age}",
        ttl_minutes=ttl,
        retry_after=retry_after,
        rng=random.Random(seed),
    )
    cap = timedelta(days=1)
    floor = min(timedelta(minutes=interval), cap)
    assert NOW + floor <= when <= NOW + cap + timedelta(minutes=30)


def test_stop_waiting_releases_callers_waiting_for_a_slot_or_a_gap():
    """A stopping run must not wait for requests nobody will read: callers queued for a
    busy domain, or sleeping out its gap, give up at once; the one in flight finishes."""
    import threading
    import time

    p = Politeness(max_concurrent=1, min_gap_s=30.0)
    outcomes: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with p.slot("a.example"):
            holding.set()
            release.wait(5)
        outcomes.append("done")

    def attempt(domain: str, out: list[str]) -> None:
        try:
            with p.slot(domain):
                out.append("ran")
        except InterruptedError:
            out.append("gave up")

    first = threading.Thread(target=hold)
    first.start()
    assert holding.wait(5)
    waiters = [threading.Thread(target=attempt, args=("a.example", outcomes)) for _ in range(3)]
    for t in waiters:
        t.start()
    time.sleep(0.2)
    started = time.monotonic()
    p.stop_waiting()
    for t in waiters:
        t.join(5)
    assert time.monotonic() - started < 1.0
    assert outcomes == ["gave up"] * 3
    release.set()
    first.join(5)
    assert outcomes[-1] == "done"
    p.resume()
    with p.slot("b.example"):  # usable again after resume (a fresh domain: no gap)
        pass

    # A caller sleeping out the domain's gap (30 s after the last start) gives up too.
    gap: list[str] = []
    t = threading.Thread(target=attempt, args=("b.example", gap))
    t.start()
    time.sleep(0.2)
    started = time.monotonic()
    p.stop_waiting()
    t.join(5)
    assert gap == ["gave up"] and time.monotonic() - started < 1.0


def test_a_stop_during_an_injected_sleep_ends_the_wait_when_it_returns():
    """With an injected clock (tests, simulations) the gap is slept by the injected
    ``sleep``; a stop that comes meanwhile still ends the request before it starts."""
    t = FakeTime()
    slept: list[float] = []

    def sleep_then_stop(seconds: float) -> None:
        slept.append(seconds)
        t.sleep(seconds)
        p.stop_waiting()

    p = Politeness(max_concurrent=1, min_gap_s=10.0, clock=t.clock, sleep=sleep_then_stop)
    with p.slot("a.example"):  # the first request of a domain has no gap to sleep
        pass
    with pytest.raises(InterruptedError), p.slot("a.example"):
        pytest.fail("a stopped run must not start the request")
    assert slept == [10.0]
