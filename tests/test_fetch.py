"""The fetcher against a real HTTP server on 127.0.0.1.

Host names other than 127.0.0.1 are resolved by an injected resolver that
maps them to 127.0.0.1 (or to a private address that must never be
connected to), so no test ever asks a real DNS server anything.
"""

from __future__ import annotations

import gzip
import itertools
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from pipeline.errors import (
    BlockedByPolicy,
    FetchError,
    Gone,
    HardFetchError,
    RateLimited,
    SoftFetchError,
)
from pipeline.fetch import (
    DEFAULT_USER_AGENT,
    Fetcher,
    FetchSettings,
    HTTPStatusError,
    ServerError,
    TooLarge,
    address_allowed,
    status_of,
)
from tests.httpserver import LoopbackServer, RecordedRequest, Reply

FIXED_NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def fake_resolver(mapping: dict[str, str] | None = None):
    """Resolve *.test names to 127.0.0.1 (or as mapped); *.invalid fails like real DNS."""
    table = mapping or {}

    def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return [table[host]]
        if host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host.endswith(".test"):
            return ["127.0.0.1"]
        raise AssertionError(f"test tried to resolve a real name: {host}")

    return resolve


def settings(**overrides: object) -> FetchSettings:
    base: dict[str, object] = {
        "allow_private": True,
        "per_domain_min_gap_s": 0.0,
        "per_domain_concurrency": 4,
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "total_timeout": 5.0,
        "max_bytes": 1_000_000,
        "obey_robots": False,
    }
    base.update(overrides)
    return FetchSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(settings(), resolver=fake_resolver(), clock=lambda: FIXED_NOW) as f:
        yield f


# --- conditional GET --------------------------------------------------------

ETAG = 'W/"5f3e-Ab_9+/=ü"'.encode().decode("latin-1")  # non-ASCII bytes, sent back as-is
LAST_MODIFIED = "Sat, 21 Nov 2026 10:00:00 GMT"


def test_200_then_304_echoes_validators_byte_exactly(server: LoopbackServer, fetcher: Fetcher):
    def feed(req: RecordedRequest) -> Reply:
        if req.header("if-none-match") == ETAG:
            return Reply(304, {"ETag": ETAG})
        return Reply(
            200,
            {"ETag": ETAG, "Last-Modified": LAST_MODIFIED, "Content-Type": "application/rss+xml"},
            b"<rss version='2.0'><channel><title>t</title></channel></rss>",
        )

    server.route("/feed.xml", feed)
    first = fetcher.fetch(server.url("/feed.xml"), kind="feed")
    assert first.status == 200 and not first.not_modified
    assert first.etag == ETAG and first.last_modified == LAST_MODIFIED
    assert first.content.startswith(b"<rss")
    assert first.fetched_at == FIXED_NOW

    second = fetcher.fetch(
        server.url("/feed.xml"), etag=first.etag, last_modified=first.last_modified, kind="feed"
    )
    assert second.status == 304 and second.not_modified and second.content == b""
    sent = server.requests_for("/feed.xml")[-1]
    assert sent.header("if-none-match") == ETAG
    assert sent.header("if-modified-since") == LAST_MODIFIED
    assert "if-none-match" not in server.requests_for("/feed.xml")[0].headers


def test_user_agent_names_newsdrift(server: LoopbackServer, fetcher: Fetcher):
    server.route("/a", Reply(200, {}, b"x"))
    fetcher.fetch(server.url("/a"), kind="feed")
    assert server.requests[0].header("user-agent") == DEFAULT_USER_AGENT
    assert DEFAULT_USER_AGENT.startswith("newsdrift/") and "+http" in DEFAULT_USER_AGENT


def test_gzip_body_is_decompressed(server: LoopbackServer, fetcher: Fetcher):
    body = b"<p>hello</p>" * 1000
    server.route("/z", Reply(200, {"Content-Encoding": "gzip"}, gzip.compress(body)))
    server.route("/d", Reply(200, {"Content-Encoding": "deflate"}, zlib.compress(body)))
    assert fetcher.fetch(server.url("/z"), kind="feed").content == body
    assert fetcher.fetch(server.url("/d"), kind="feed").content == body
    assert "gzip" in (server.requests[0].header("accept-encoding") or "")


# --- status classification ----------------------------------------------------


def test_410_is_gone(server: LoopbackServer, fetcher: Fetcher):
    server.route("/old", Reply(410))
    with pytest.raises(Gone) as info:
        fetcher.fetch(server.url("/old"), kind="feed")
    assert "410" in str(info.value) and server.url("/old") in str(info.value)
    assert info.value.kind == "gone" and status_of(info.value) == 410


def test_404_is_hard_and_500_is_soft(server: LoopbackServer, fetcher: Fetcher):
    server.route("/boom", Reply(500))
    with pytest.raises(HTTPStatusError) as hard:
        fetcher.fetch(server.url("/missing"), kind="feed")
    assert hard.value.kind == "hard" and hard.value.status == 404
    assert "HTTP 404" in str(hard.value)
    with pytest.raises(ServerError) as soft:
        fetcher.fetch(server.url("/boom"), kind="feed")
    assert soft.value.kind == "soft" and "HTTP 500" in str(soft.value)


def test_429_with_retry_after_seconds_holds_the_whole_domain(server: LoopbackServer):
    server.route("/feed", Reply(429, {"Retry-After": "120"}))
    server.route("/other", Reply(200, {}, b"x"))
    with Fetcher(settings(), resolver=fake_resolver()) as f:
        with pytest.raises(RateLimited) as info:
            f.fetch(server.url("/feed", host="feeds.example.test"), kind="feed")
        assert info.value.retry_after == 120
        assert info.value.kind == "rate_limited"
        assert "429" in str(info.value)
        # another host of the same registrable domain is not even asked
        with pytest.raises(RateLimited) as held:
            f.fetch(server.url("/other", host="www.example.test"), kind="article")
        assert "example.test" in str(held.value) and held.value.retry_after is not None
        assert 115 <= held.value.retry_after <= 120
    assert [r.path for r in server.requests] == ["/feed"]


def test_503_with_retry_after_http_date_read_against_server_date(server: LoopbackServer):
    # the server's clock is years off; only the difference of its two dates counts
    server.route(
        "/feed",
        Reply(
            503,
            [
                ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
                ("Retry-After", "Mon, 01 Jan 2024 00:05:00 GMT"),
            ],
        ),
    )
    server.route("/plain503", Reply(503))
    with Fetcher(settings(), resolver=fake_resolver(), clock=lambda: FIXED_NOW) as f:
        with pytest.raises(RateLimited) as info:
            f.fetch(server.url("/feed", host="a.test"), kind="feed")
        assert info.value.retry_after == 300
        # 503 without Retry-After is an ordinary soft error
        with pytest.raises(ServerError) as soft:
            f.fetch(server.url("/plain503", host="b.test"), kind="feed")
        assert not isinstance(soft.value, RateLimited)


def test_429_with_retry_after_date_and_no_date_header_uses_clock(server: LoopbackServer):
    server.route("/feed", Reply(429, {"Retry-After": "Sun, 22 Nov 2026 12:01:30 GMT", "Date": ""}))
    with (
        Fetcher(settings(), resolver=fake_resolver(), clock=lambda: FIXED_NOW) as f,
        pytest.raises(RateLimited) as info,
    ):
        f.fetch(server.url("/feed"), kind="feed")
    assert info.value.retry_after == 90


# --- redirects -----------------------------------------------------------------


def test_redirects_are_followed_and_recorded(server: LoopbackServer, fetcher: Fetcher):
    server.route("/a", Reply(301, {"Location": "/b"}))
    server.route("/b", Reply(302, {"Location": server.url("/c")}))
    server.route("/c", Reply(200, {}, b"done"))
    result = fetcher.fetch(server.url("/a"), kind="feed")
    assert result.content == b"done"
    assert result.requested_url == server.url("/a") and result.url == server.url("/c")
    assert result.redirects == ((301, server.url("/b")), (302, server.url("/c")))


def test_redirect_loop_is_detected(server: LoopbackServer, fetcher: Fetcher):
    server.route("/loop1", Reply(302, {"Location": "/loop2"}))
    server.route("/loop2", Reply(301, {"Location": "/loop1"}))
    with pytest.raises(HardFetchError, match="redirect loop") as info:
        fetcher.fetch(server.url("/loop1"), kind="feed")
    assert server.url("/loop1") in str(info.value)
    assert len(server.requests) == 2


def test_redirect_chain_is_capped(server: LoopbackServer):
    for i in range(10):
        server.route(f"/r{i}", Reply(307, {"Location": f"/r{i + 1}"}))
    with (
        Fetcher(settings(max_redirects=3), resolver=fake_resolver()) as f,
        pytest.raises(HardFetchError, match="too many redirects"),
    ):
        f.fetch(server.url("/r0"), kind="feed")
    assert len(server.requests) == 4


# --- address policy ----------------------------------------------------------------


def test_loopback_is_refused_unless_allowed(server: LoopbackServer):
    server.route("/feed", Reply(200, {}, b"x"))
    with Fetcher(settings(allow_private=False), resolver=fake_resolver()) as f:
        with pytest.raises(BlockedByPolicy, match="non-public address"):
            f.fetch(server.url("/feed"), kind="feed")
        with pytest.raises(BlockedByPolicy, match=r"resolves to 127\.0\.0\.1"):
            f.fetch(server.url("/feed", host="sneaky.test"), kind="feed")
    assert server.requests == []


def test_redirect_to_a_private_address_is_refused(server: LoopbackServer):
    # feeds.example.test is trusted by name; where it redirects to is checked anew
    server.route("/to-loopback", Reply(302, {"Location": server.url("/secret")}))
    server.route("/to-metadata", Reply(301, {"Location": "http://169.254.169.254/latest/"}))
    server.route("/to-intranet", Reply(302, {"Location": "http://intranet.test/admin"}))
    server.route("/secret", Reply(200, {}, b"secret"))
    strict = settings(allow_private=False, private_hosts_allowed=("feeds.example.test",))
    resolver = fake_resolver({"intranet.test": "10.1.2.3"})
    with Fetcher(strict, resolver=resolver) as f:
        for path, what in [
            ("/to-loopback", "127.0.0.1"),
            ("/to-metadata", "169.254.169.254"),
            ("/to-intranet", "10.1.2.3"),
        ]:
            with pytest.raises(BlockedByPolicy) as info:
                f.fetch(server.url(path, host="feeds.example.test"), kind="feed")
            assert what in str(info.value)
    assert [r.path for r in server.requests] == ["/to-loopback", "/to-metadata", "/to-intranet"]


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("100.64.0.1", False),
    ],
)
def test_address_policy(address: str, allowed: bool):
    assert address_allowed(address) is allowed


def test_dns_failure_is_hard_and_names_the_host():
    with (
        Fetcher(settings(), resolver=fake_resolver()) as f,
        pytest.raises(
            HardFetchError, match=r"DNS lookup of feeds\.nowhere\.invalid failed"
        ) as info,
    ):
        f.fetch("http://feeds.nowhere.invalid/rss", kind="feed")
    assert info.value.kind == "hard"
    assert "http://feeds.nowhere.invalid/rss" in str(info.value)


def test_unsupported_scheme_is_refused(fetcher: Fetcher):
    with pytest.raises(HardFetchError, match="unsupported URL scheme"):
        fetcher.fetch("file:///etc/passwd", kind="feed")


# --- time and size limits ----------------------------------------------------------


def test_read_timeout_is_soft(server: LoopbackServer):
    server.route("/slow", Reply(200, {}, b"late", delay_s=1.0))
    with Fetcher(settings(read_timeout=0.2), resolver=fake_resolver()) as f:
        started = time.monotonic()
        with pytest.raises(SoftFetchError, match="read timeout") as info:
            f.fetch(server.url("/slow"), kind="feed")
        assert time.monotonic() - started < 0.9
    assert info.value.kind == "soft"


def test_slow_drip_body_is_cut_at_the_total_deadline(server: LoopbackServer):
    # every byte arrives well within the read timeout; only the total deadline stops it
    server.route("/drip", Reply(200, {}, b"x" * 200, drip_bytes=1, drip_interval_s=0.05))
    with Fetcher(settings(read_timeout=1.0, total_timeout=0.5), resolver=fake_resolver()) as f:
        started = time.monotonic()
        with pytest.raises(SoftFetchError, match=r"total deadline of 0\.5s exceeded"):
            f.fetch(server.url("/drip"), kind="article")
        assert time.monotonic() - started < 1.5


def test_a_silent_server_cannot_outlast_the_total_deadline(server: LoopbackServer):
    server.route("/silent", Reply(200, {}, b"late", delay_s=1.5))
    with Fetcher(settings(read_timeout=10.0, total_timeout=0.3), resolver=fake_resolver()) as f:
        started = time.monotonic()
        with pytest.raises(SoftFetchError, match="timeout"):
            f.fetch(server.url("/silent"), kind="feed")
        assert time.monotonic() - started < 1.0


def test_oversized_body_is_refused(server: LoopbackServer):
    server.route("/big", Reply(200, {}, b"a" * 50_000))
    server.route("/big-unsized", Reply(200, {}, b"a" * 50_000, content_length=False))
    with Fetcher(settings(max_bytes=10_000), resolver=fake_resolver()) as f:
        for path in ("/big", "/big-unsized"):
            with pytest.raises(TooLarge, match="exceeds 10000 bytes") as info:
                f.fetch(server.url(path), kind="feed")
            assert info.value.kind == "hard"


def test_gzip_bomb_stops_early(server: LoopbackServer):
    member = gzip.compress(b"\0" * 10_000_000, compresslevel=9)
    bomb = member * 20  # a valid multi-member gzip stream: 200 MB in ~200 kB
    assert len(bomb) < 500_000
    server.route("/bomb", Reply(200, {"Content-Encoding": "gzip"}, bomb))
    with Fetcher(settings(max_bytes=1_000_000), resolver=fake_resolver()) as f:
        started = time.monotonic()
        with pytest.raises(TooLarge, match="decompressed"):
            f.fetch(server.url("/bomb"), kind="feed")
        # inflating 200 MB takes far longer than stopping after the first megabyte
        assert time.monotonic() - started < 1.0


def test_multi_member_gzip_and_raw_deflate(server: LoopbackServer, fetcher: Fetcher):
    server.route("/multi", Reply(200, {"Content-Encoding": "gzip"}, gzip.compress(b"ab") * 3))
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    server.route(
        "/raw", Reply(200, {"Content-Encoding": "deflate"}, raw.compress(b"cd") + raw.flush())
    )
    assert fetcher.fetch(server.url("/multi"), kind="feed").content == b"ababab"
    assert fetcher.fetch(server.url("/raw"), kind="feed").content == b"cd"


def test_corrupt_gzip_is_a_clear_error(server: LoopbackServer, fetcher: Fetcher):
    server.route("/bad", Reply(200, {"Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip at all"))
    with pytest.raises(HardFetchError, match="corrupt gzip body"):
        fetcher.fetch(server.url("/bad"), kind="feed")


# --- TLS -----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_verification_stays_on(tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with LoopbackServer(ssl_context=context) as tls:
        tls.route("/feed", Reply(200, {}, b"x"))
        with (
            Fetcher(settings(), resolver=fake_resolver()) as f,
            pytest.raises(HardFetchError, match="TLS error") as info,
        ):
            f.fetch(tls.url("/feed"), kind="feed")
    assert info.value.kind == "hard"


# --- robots.txt ------------------------------------------------------------------------


def test_robots_disallow_blocks_articles_but_not_feeds(server: LoopbackServer):
    server.route(
        "/robots.txt",
        Reply(200, {}, b"User-agent: *\nDisallow: /private/\n\nUser-agent: badbot\nDisallow: /\n"),
    )
    server.route("/private/story.html", Reply(200, {}, b"<p>x</p>"))
    server.route("/news/story.html", Reply(200, {}, b"<p>y</p>"))
    with Fetcher(settings(obey_robots=True), resolver=fake_resolver()) as f:
        with pytest.raises(BlockedByPolicy, match=r"disallowed by .*/robots\.txt") as info:
            f.fetch(server.url("/private/story.html"), kind="article")
        assert server.url("/private/story.html") in str(info.value)
        assert f.fetch(server.url("/news/story.html"), kind="article").content == b"<p>y</p>"
        assert f.fetch(server.url("/news/story.html"), kind="article").status == 200
        # feeds are what a site offers for polling; robots.txt is about crawling pages
        assert f.fetch(server.url("/private/story.html"), kind="feed").status == 200
    paths = [r.path for r in server.requests]
    assert paths.count("/robots.txt") == 1  # cached per origin inside the fetcher
    assert paths.count("/private/story.html") == 1  # only the feed fetch reached it


def test_robots_missing_allows_and_robots_5xx_blocks(server: LoopbackServer):
    server.route("/page", Reply(200, {}, b"ok"))
    with Fetcher(settings(obey_robots=True), resolver=fake_resolver()) as f:
        assert f.fetch(server.url("/page"), kind="article").status == 200  # robots.txt: 404
    server.route("/robots.txt", Reply(500))
    now = [FIXED_NOW]
    with Fetcher(settings(obey_robots=True), resolver=fake_resolver(), clock=lambda: now[0]) as f:
        with pytest.raises(BlockedByPolicy, match="could not be read"):
            f.fetch(server.url("/page"), kind="article")
        server.route("/robots.txt", Reply(200, {}, b"User-agent: *\nAllow: /\n"))
        now[0] += timedelta(minutes=5)
        with pytest.raises(BlockedByPolicy):  # the failure is remembered for a while …
            f.fetch(server.url("/page"), kind="article")
        now[0] += timedelta(minutes=15)  # … but not for a day
        assert f.fetch(server.url("/page"), kind="article").status == 200


# --- politeness ------------------------------------------------------------------------


def _max_overlap(requests: list[RecordedRequest]) -> int:
    events = sorted([(r.started, 1) for r in requests] + [(r.finished, -1) for r in requests])
    active = peak = 0
    for _, step in events:
        active += step
        peak = max(peak, active)
    return peak


def test_per_domain_budget_holds_under_50_concurrent_fetches(server: LoopbackServer):
    gap = 0.04
    server.route("/item", Reply(200, {}, b"x" * 100, delay_s=0.03))
    server.route("/other", Reply(200, {}, b"y"))
    polite = settings(per_domain_concurrency=2, per_domain_min_gap_s=gap, total_timeout=30.0)
    hosts = ["feeds.example.test", "www.example.test", "example.test", "cdn.example.test"]
    errors: list[FetchError] = []
    with Fetcher(polite, resolver=fake_resolver()) as f:

        def one(i: int) -> None:
            host = hosts[i % len(hosts)]
            kind = "feed" if i % 2 else "article"
            try:
                f.fetch(server.url(f"/item?n={i}", host=host), kind=kind)
            except FetchError as e:
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        # another domain is not held up by the busy one
        started = time.monotonic()
        f.fetch(server.url("/other", host="elsewhere.test"), kind="feed")
        other_latency = time.monotonic() - started
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    items = [r for r in server.requests if r.path.startswith("/item")]
    assert len(items) == 50
    assert _max_overlap(items) <= 2
    # The server sees each start a little late, by however long its handler thread
    # took to be scheduled; that skews single gaps under load but not the totals.
    starts = sorted(r.started for r in items)
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    assert starts[-1] - starts[0] >= 49 * gap - 0.05
    assert gaps[len(gaps) // 2] >= gap * 0.9
    assert other_latency < 1.0


def test_queueing_for_the_domain_budget_does_not_eat_the_deadline(server: LoopbackServer):
    server.route("/q", Reply(200, {}, b"q"))
    polite = settings(per_domain_concurrency=1, per_domain_min_gap_s=0.3, total_timeout=0.25)
    errors: list[FetchError] = []
    with Fetcher(polite, resolver=fake_resolver()) as f:

        def one() -> None:
            try:
                f.fetch(server.url("/q"), kind="feed")
            except FetchError as e:
                errors.append(e)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    assert errors == []
    starts = sorted(r.started for r in server.requests)
    assert starts[-1] - starts[0] >= 0.5  # the last one queued ~0.6 s, longer than its deadline


def test_crawl_delay_raises_the_gap_for_its_domain(server: LoopbackServer):
    server.route("/robots.txt", Reply(200, {}, b"User-agent: *\nCrawl-delay: 5\n"))
    server.route("/a", Reply(200, {}, b"a"))
    slept: list[float] = []
    polite = settings(obey_robots=True, per_domain_min_gap_s=0.0)
    with Fetcher(polite, resolver=fake_resolver(), sleep=slept.append) as f:
        f.fetch(server.url("/a"), kind="article")
        f.fetch(server.url("/a"), kind="article")
    assert len(slept) == 1 and 4.0 < slept[0] <= 5.0


def test_an_injected_transport_is_used():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["user-agent"] == DEFAULT_USER_AGENT
        return httpx.Response(200, headers={"ETag": '"m"'}, content=b"mocked")

    with Fetcher(settings(), transport=httpx.MockTransport(handler)) as f:
        result = f.fetch("https://feeds.example.com/rss", kind="feed")
    assert (result.content, result.etag) == (b"mocked", '"m"')


def test_status_of_maps_errors():
    assert status_of(HardFetchError("u", "m")) is None
    assert status_of(ServerError("u", "m", status=502)) == 502
