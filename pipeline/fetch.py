"""HTTP for newsdrift: the only module that imports httpx.

One :class:`Fetcher` per run. It sends conditional GETs, follows redirects by
hand (capped, loops detected), checks every address it connects to against
the address policy, obeys robots.txt for article pages, keeps one politeness
budget per registrable domain, enforces connect/read timeouts and a total
deadline, and caps the body on *decompressed* bytes while streaming. Every
expected failure is raised as a :mod:`pipeline.errors` ``FetchError``
subclass whose message names the URL and what went wrong.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from protego import Protego

from pipeline.errors import (
    BlockedByPolicy,
    FetchError,
    Gone,
    HardFetchError,
    RateLimited,
    SoftFetchError,
)
from pipeline.politeness import Politeness, registrable_domain
from pipeline.polling import parse_retry_after

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "newsdrift/0.1 (+https://github.com/newsdrift/newsdrift)"

# Defaults a site owner would accept (judgement, not measurement): two
# requests in flight per registrable domain, one request start per second.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 20.0
DEFAULT_TOTAL_TIMEOUT_S = 60.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # decompressed; the largest real article page seen is ~2 MB
DEFAULT_MAX_REDIRECTS = 5
RATE_LIMIT_DEFAULT_S = 60.0  # a 429 without Retry-After still holds the domain this long
MAX_DOMAIN_HOLD_S = 24 * 3600.0  # an in-memory hold never outlives the one-day poll cap
ROBOTS_TTL = timedelta(hours=24)  # RFC 9309 §2.4: cache no longer than 24 h
ROBOTS_RETRY = timedelta(minutes=15)  # after 5xx/unreachable (then: disallow everything)
ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309 §2.5: parse at least 500 KiB
MAX_CRAWL_DELAY_S = 60.0  # a Crawl-delay above this is clamped (and logged)
READ_CHUNK = 64 * 1024

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DECOMPRESSIBLE = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 0}


def now_utc() -> datetime:
    return datetime.now(UTC)


Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the operating system; raises ``socket.gaierror``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True)
class FetchSettings:
    user_agent: str = DEFAULT_USER_AGENT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout: float = DEFAULT_READ_TIMEOUT_S
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT_S
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    allow_private: bool = False
    # host names trusted even though they resolve to private addresses (an intranet
    # feed); only the names listed, never where they redirect to
    private_hosts_allowed: tuple[str, ...] = ()
    per_domain_concurrency: int = 2
    per_domain_min_gap_s: float = 1.0
    obey_robots: bool = True


@dataclass(frozen=True)
class FetchResult:
    requested_url: str
    url: str
    status: int
    # lower-case names; values are the server's bytes decoded as latin-1, so a
    # validator stored as str goes back byte-exactly
    headers: Mapping[str, str]
    content: bytes
    not_modified: bool
    redirects: tuple[tuple[int, str], ...]
    fetched_at: datetime
    elapsed_s: float
    content_encoding: str = field(default="identity")

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last-modified")


class HTTPStatusError(HardFetchError):
    """A 4xx answer other than 410/429 (404, 403, …)."""

    def __init__(
        self, url: str, message: str, *, status: int, redirects: tuple[tuple[int, str], ...] = ()
    ) -> None:
        super().__init__(url, message)
        self.status = status
        self.redirects = redirects


class TooLarge(HardFetchError):
    """The body grew past the size cap (counted on decompressed bytes)."""


class ServerError(SoftFetchError):
    """A 5xx answer (or 408) without a Retry-After."""

    def __init__(
        self, url: str, message: str, *, status: int, redirects: tuple[tuple[int, str], ...] = ()
    ) -> None:
        super().__init__(url, message)
        self.status = status
        self.redirects = redirects


def status_of(error: FetchError) -> int | None:
    """The HTTP status behind a fetch error, where there was one."""
    if isinstance(error, Gone):
        return 410
    return getattr(error, "status", None)  # HTTPStatusError, ServerError


# --- address policy ------------------------------------------------------


def address_allowed(address: str) -> bool:
    """Whether a public fetch may connect to ``address`` (an IP literal)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    )


class _AddressRefused(Exception):
    def __init__(self, host: str, address: str) -> None:
        what = f"{address} is" if host == address else f"{host} resolves to {address},"
        super().__init__(f"{what} a non-public address")
        self.host = host
        self.address = address


class _DnsFailure(Exception):
    def __init__(self, host: str, cause: BaseException) -> None:
        super().__init__(f"DNS lookup of {host} failed: {cause}")
        self.host = host


class _PolicyBackend(httpcore.SyncBackend):
    """Resolves with the injected resolver, vets each address, connects to the vetted one.

    Connecting to the very address that was checked (instead of letting the
    socket layer resolve again) closes the DNS-rebinding gap; TLS still
    verifies the certificate against the host name (httpcore passes the
    origin's name as SNI/server_hostname).
    """

    def __init__(
        self, resolver: Resolver, allow_private: bool, trusted_hosts: Sequence[str] = ()
    ) -> None:
        self._resolver = resolver
        self._allow_private = allow_private
        self._trusted = frozenset(h.strip().rstrip(".").lower() for h in trusted_hosts)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        bare = host.strip("[]")
        try:
            ipaddress.ip_address(bare)
            addresses: Sequence[str] = [bare]
        except ValueError:
            try:
                addresses = list(self._resolver(bare, port))
            except (OSError, UnicodeError) as e:
                raise _DnsFailure(bare, e) from e
        if not addresses:
            raise _DnsFailure(bare, OSError("no addresses"))
        if not self._allow_private and bare.rstrip(".").lower() not in self._trusted:
            for address in addresses:
                if not address_allowed(address):
                    raise _AddressRefused(bare, address)
        last: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return super().connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
        assert last is not None
        raise last


class _PolicyTransport(httpx.HTTPTransport):
    """httpx's own transport with a connection pool that uses :class:`_PolicyBackend`.

    httpx offers no public hook for the network backend, so the pool it built
    is replaced by an identical one with ours (same TLS context: verification
    stays on). Proxies from the environment are not used (``trust_env=False``):
    the address policy must see the real peer.
    """

    def __init__(self, backend: _PolicyBackend, limits: httpx.Limits) -> None:
        super().__init__(verify=True, trust_env=False, limits=limits)
        ssl_context = httpx.create_ssl_context(verify=True, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


# --- the fetcher ---------------------------------------------------------


@dataclass
class _Robots:
    parser: Protego | None  # None = everything allowed
    disallow_all: bool
    fetched_at: datetime

    @property
    def ttl(self) -> timedelta:
        # an unreadable robots.txt is asked for again soon, a read one kept for a day
        return ROBOTS_RETRY if self.disallow_all else ROBOTS_TTL


# The connection pool's size, for idle (keep-alive) connections too. Keeping as many idle
# connections as the pool holds means the pool never closes a "surplus" idle one: with
# many fetch threads, httpcore 1.0.9 can close an idle connection that another thread was
# just handed (encode/httpcore#1110), which shows as a ReadError "[Errno 9] Bad file
# descriptor" on a page (seen once in 5,000 pages of scripts/bench_pipeline.py with 20
# idle connections kept); far more than the cycle's fetch threads, so the pool is rarely
# full and seldom closes one to make room.
POOL_CONNECTIONS = 200


class Fetcher:
    """Polite, bounded HTTP GETs. Thread-safe; one instance per run."""

    def __init__(
        self,
        settings: FetchSettings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = now_utc,
        sleep: Callable[[float], None] | None = None,  # None: the real clock, cut by a stop
        monotonic: Callable[[], float] = time.monotonic,
        resolver: Resolver = system_resolver,
        politeness: Politeness | None = None,
    ) -> None:
        self.settings = settings or FetchSettings()
        s = self.settings
        self._clock = clock
        self._monotonic = monotonic
        self.politeness = politeness or Politeness(
            max_concurrent=s.per_domain_concurrency,
            min_gap_s=s.per_domain_min_gap_s,
            clock=monotonic,
            sleep=sleep,
        )
        limits = httpx.Limits(
            max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS
        )
        if transport is None:
            backend = _PolicyBackend(resolver, s.allow_private, s.private_hosts_allowed)
            transport = _PolicyTransport(backend, limits)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(
                connect=s.connect_timeout,
                read=s.read_timeout,
                write=s.read_timeout,
                pool=s.total_timeout,
            ),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": s.user_agent},
        )
        self._lock = threading.Lock()
        self._robots: dict[str, _Robots] = {}
        self._robots_locks: dict[str, threading.Lock] = {}

    # context manager -----------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def stop_waiting(self) -> None:
        """Requests still waiting for their politeness slot give up with
        ``InterruptedError`` (a stopping run); those under way finish."""
        self.politeness.stop_waiting()

    def resume(self) -> None:
        self.politeness.resume()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # public --------------------------------------------------------------

    def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        kind: str = "article",
    ) -> FetchResult:
        """GET ``url`` (``kind`` is "feed", "article" or "robots").

        ``etag`` and ``last_modified`` are sent back byte-exactly as
        If-None-Match / If-Modified-Since; a 304 gives ``not_modified=True``
        and empty content.
        """
        started = self._monotonic()
        deadline = _Deadline(self.settings.total_timeout, self._monotonic)
        current = url
        redirects: list[tuple[int, str]] = []
        seen = {_loop_key(url)}
        while True:
            _check_scheme(url, current)
            if kind == "article" and self.settings.obey_robots:
                self._check_robots(url, current)
            status, headers, content, encoding = self._request(
                url, current, etag=etag, last_modified=last_modified, deadline=deadline
            )
            location = headers.get("location")
            if status in REDIRECT_STATUSES and location:
                target = urljoin(current, location.strip())
                hops = (*redirects, (status, target))
                if _loop_key(target) in seen:
                    chain = " -> ".join([url, *(u for _, u in hops)])
                    raise HardFetchError(url, f"redirect loop: {chain}")
                if len(hops) > self.settings.max_redirects:
                    raise HardFetchError(
                        url, f"too many redirects (more than {self.settings.max_redirects})"
                    )
                seen.add(_loop_key(target))
                redirects.append((status, target))
                current = target
                continue
            break
        elapsed = self._monotonic() - started
        result = FetchResult(
            requested_url=url,
            url=current,
            status=status,
            headers=headers,
            content=content,
            not_modified=status == 304,
            redirects=tuple(redirects),
            fetched_at=self._clock(),
            elapsed_s=elapsed,
            content_encoding=encoding,
        )
        self._raise_for_status(result)
        log.debug(
            "fetch: kind=%s url=%s status=%s bytes=%d elapsed=%.3f",
            kind,
            url,
            status,
            len(content),
            elapsed,
        )
        return result

    # internals -----------------------------------------------------------

    def _raise_for_status(self, r: FetchResult) -> None:
        status = r.status
        if 200 <= status < 300 or status == 304:
            return
        where = "" if r.url == r.requested_url else f" (at {r.url})"
        if status == 410:
            raise Gone(r.requested_url, f"HTTP 410 Gone{where}")
        if status in (429, 503):
            retry_after = parse_retry_after(
                r.headers.get("retry-after"), date_header=r.headers.get("date"), now=self._clock()
            )
            if status == 429 or retry_after is not None:
                hold = retry_after if retry_after is not None else RATE_LIMIT_DEFAULT_S
                hold = min(hold, MAX_DOMAIN_HOLD_S)
                self.politeness.defer(_domain(r.url), hold)
                told = (
                    f"retry after {retry_after:.0f}s"
                    if retry_after is not None
                    else "no Retry-After"
                )
                raise RateLimited(
                    r.requested_url, f"HTTP {status} rate limited{where}; {told}", retry_after
                )
        if status >= 500 or status == 408:
            raise ServerError(
                r.requested_url,
                f"HTTP {status} server error{where}",
                status=status,
                redirects=r.redirects,
            )
        if 300 <= status < 400:
            raise HTTPStatusError(
                r.requested_url,
                f"HTTP {status} without a usable Location{where}",
                status=status,
                redirects=r.redirects,
            )
        raise HTTPStatusError(
            r.requested_url, f"HTTP {status}{where}", status=status, redirects=r.redirects
        )

    def _request(
        self,
        original: str,
        url: str,
        *,
        etag: str | None,
        last_modified: str | None,
        deadline: _Deadline,
        max_bytes: int | None = None,
    ) -> tuple[int, dict[str, str], bytes, str]:
        """One GET of ``url`` inside the domain's politeness slot; no redirect handling."""
        domain = _domain(url)
        blocked = self.politeness.blocked_for(domain)
        if blocked > 0:
            raise RateLimited(
                original,
                f"domain {domain} asked us to wait {blocked:.0f}s more (Retry-After); "
                "not requested",
                blocked,
            )
        headers: list[tuple[bytes, bytes]] = [(b"Accept-Encoding", b"gzip, deflate")]
        if etag is not None:
            headers.append((b"If-None-Match", _header_bytes(etag)))
        if last_modified is not None:
            headers.append((b"If-Modified-Since", _header_bytes(last_modified)))
        limit = max_bytes if max_bytes is not None else self.settings.max_bytes
        with self.politeness.slot(domain):
            blocked = self.politeness.blocked_for(domain)  # a 429 may have come in meanwhile
            if blocked > 0:
                raise RateLimited(
                    original,
                    f"domain {domain} asked us to wait {blocked:.0f}s more (Retry-After); "
                    "not requested",
                    blocked,
                )
            deadline.arm()  # time spent queueing for the domain's budget does not count
            remaining = deadline.remaining()
            if remaining <= 0:
                raise SoftFetchError(
                    original, f"total deadline of {self.settings.total_timeout:g}s exceeded"
                )
            # no single wait may outlast what is left of the total deadline
            effective = replace(
                self.settings,
                connect_timeout=min(self.settings.connect_timeout, remaining),
                read_timeout=min(self.settings.read_timeout, remaining),
            )
            timeout = httpx.Timeout(
                connect=effective.connect_timeout,
                read=effective.read_timeout,
                write=effective.read_timeout,
                pool=remaining,
            )
            try:
                request = self._client.build_request("GET", url, headers=headers, timeout=timeout)
                response = self._client.send(request, stream=True)
            except _AddressRefused as e:
                raise BlockedByPolicy(
                    original, f"refused: {e} (set allow_private to fetch it)"
                ) from e
            except _DnsFailure as e:
                raise HardFetchError(original, str(e)) from e
            except httpx.HTTPError as e:
                raise _wrap_transport_error(original, url, e, effective) from e
            try:
                response_headers = _decode_headers(response.headers.raw)
                status = response.status_code
                if status in REDIRECT_STATUSES or status == 304 or status >= 400:
                    return status, response_headers, b"", "identity"
                encoding = response_headers.get("content-encoding", "identity").strip().lower()
                chunks: Iterator[bytes]
                if response.is_stream_consumed:
                    # an in-memory response (httpx.MockTransport): the bytes as given
                    chunks, encoding = iter([response.content]), "identity"
                else:
                    chunks = response.iter_raw()
                content = _read_body(
                    original,
                    url,
                    chunks,
                    encoding,
                    limit,
                    deadline,
                    self.settings,
                )
                return status, response_headers, content, encoding
            except httpx.HTTPError as e:
                raise _wrap_transport_error(original, url, e, effective) from e
            finally:
                response.close()

    def _check_robots(self, original: str, url: str) -> None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        robots = self._robots_for(original, origin)
        if robots.disallow_all:
            raise BlockedByPolicy(
                original, f"robots.txt of {origin} could not be read; treated as disallow"
            )
        if robots.parser is not None and not robots.parser.can_fetch(url, self.settings.user_agent):
            raise BlockedByPolicy(original, f"disallowed by {origin}/robots.txt")

    def _robots_for(self, original: str, origin: str) -> _Robots:
        with self._lock:
            lock = self._robots_locks.setdefault(origin, threading.Lock())
        with lock:
            now = self._clock()
            cached = self._robots.get(origin)
            if cached is not None and now - cached.fetched_at < cached.ttl:
                return cached
            robots = self._load_robots(original, origin, now)
            with self._lock:
                self._robots[origin] = robots
            return robots

    def _load_robots(self, original: str, origin: str, now: datetime) -> _Robots:
        """RFC 9309 §2.3.1: 4xx → no rules; 5xx / unreachable → disallow everything (for now)."""
        robots_url = f"{origin}/robots.txt"
        deadline = _Deadline(self.settings.total_timeout, self._monotonic)
        current = robots_url
        seen = {robots_url}
        try:
            for _ in range(self.settings.max_redirects + 1):
                status, headers, content, _ = self._request(
                    robots_url,
                    current,
                    etag=None,
                    last_modified=None,
                    deadline=deadline,
                    max_bytes=ROBOTS_MAX_BYTES,
                )
                location = headers.get("location")
                if status in REDIRECT_STATUSES and location:
                    current = urljoin(current, location.strip())
                    if current in seen:
                        break
                    seen.add(current)
                    continue
                break
        except RateLimited:
            log.info("robots: origin=%s rate limited; treated as disallow", origin)
            return _Robots(None, True, now)
        except (SoftFetchError, BlockedByPolicy) as e:
            log.info("robots: origin=%s unreachable (%s); treated as disallow", origin, e.reason)
            return _Robots(None, True, now)
        except TooLarge:
            log.info("robots: origin=%s robots.txt too large; no rules applied", origin)
            return _Robots(None, False, now)
        except HardFetchError as e:
            log.info("robots: origin=%s unreachable (%s); treated as disallow", origin, e.reason)
            return _Robots(None, True, now)
        if 200 <= status < 300:
            parser = Protego.parse(content.decode("utf-8", errors="replace"))
            delay = parser.crawl_delay(self.settings.user_agent)
            if delay:
                if delay > MAX_CRAWL_DELAY_S:
                    log.info("robots: origin=%s crawl-delay %.0fs clamped", origin, delay)
                self.politeness.set_min_gap(_domain(origin), min(float(delay), MAX_CRAWL_DELAY_S))
            return _Robots(parser, False, now)
        if 300 <= status < 500:
            # 4xx, and redirects that lead nowhere: "unavailable", no rules (RFC 9309 §2.3.1)
            return _Robots(None, False, now)
        return _Robots(None, True, now)


# --- helpers -------------------------------------------------------------


def _decode_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Response headers with lower-case names; values decoded as latin-1 (byte-exact).

    Repeated headers are joined with ", " (RFC 9110 §5.3), Set-Cookie aside.
    """
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out and key != "set-cookie" else text
    return out


def _header_bytes(value: str) -> bytes:
    """A stored validator back to the exact bytes the server sent (see _decode_headers)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _domain(url: str) -> str:
    return registrable_domain(urlsplit(url).hostname or "")


def _loop_key(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(fragment="").geturl()


def _check_scheme(original: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise HardFetchError(original, f"unsupported URL scheme {parts.scheme!r} in {url}")
    if not parts.hostname:
        raise HardFetchError(original, f"no host in {url}")


def _wrap_transport_error(
    original: str, url: str, error: httpx.HTTPError, settings: FetchSettings
) -> FetchError:
    at = "" if url == original else f" (at {url})"
    if isinstance(error, httpx.ConnectTimeout):
        return SoftFetchError(original, f"connect timeout after {settings.connect_timeout:g}s{at}")
    if isinstance(error, httpx.ReadTimeout):
        return SoftFetchError(original, f"read timeout after {settings.read_timeout:g}s{at}")
    if isinstance(error, httpx.TimeoutException):
        return SoftFetchError(original, f"timeout: {error}{at}")
    if _is_tls_error(error):
        return HardFetchError(original, f"TLS error: {error}{at}")
    if isinstance(error, httpx.ConnectError):
        return SoftFetchError(original, f"connection failed: {error}{at}")
    if isinstance(error, httpx.DecodingError):
        return HardFetchError(original, f"undecodable response: {error}{at}")
    if isinstance(error, httpx.RemoteProtocolError):
        return SoftFetchError(original, f"protocol error: {error}{at}")
    return SoftFetchError(original, f"network error: {type(error).__name__}: {error}{at}")


def _is_tls_error(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    return "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text


class _Deadline:
    """The total time budget of one fetch, started when its first request may go out."""

    def __init__(self, seconds: float, monotonic: Callable[[], float]) -> None:
        self._seconds = seconds
        self._monotonic = monotonic
        self._at: float | None = None

    def arm(self) -> None:
        if self._at is None:
            self._at = self._monotonic() + self._seconds

    def remaining(self) -> float:
        if self._at is None:
            return self._seconds
        return self._at - self._monotonic()


def _read_body(
    original: str,
    url: str,
    chunks: Iterator[bytes],
    encoding: str,
    max_bytes: int,
    deadline: _Deadline,
    settings: FetchSettings,
) -> bytes:
    """Read and decode the body, stopping at ``max_bytes`` decoded bytes or the deadline.

    Decompression is bounded per step (``max_length``), so a gzip bomb never
    expands beyond the cap in memory.
    """
    at = "" if url == original else f" (at {url})"
    codings = [c.strip() for c in encoding.split(",") if c.strip() and c.strip() != "identity"]
    if len(codings) > 1:
        raise HardFetchError(original, f"stacked content encodings not supported: {encoding}{at}")
    decompressor = None
    if codings:
        wbits = _DECOMPRESSIBLE.get(codings[0])
        if wbits is None:
            raise HardFetchError(original, f"unsupported content encoding {codings[0]!r}{at}")
        decompressor = _Inflater(wbits)
    out = bytearray()

    def add(data: bytes) -> None:
        out.extend(data)
        if len(out) > max_bytes:
            raise TooLarge(original, f"response body exceeds {max_bytes} bytes (decompressed){at}")

    for chunk in chunks:
        if deadline.remaining() <= 0:
            raise SoftFetchError(
                original,
                f"total deadline of {settings.total_timeout:g}s exceeded while reading the body "
                f"({len(out)} bytes so far){at}",
            )
        if decompressor is None:
            add(chunk)
            continue
        try:
            for piece in decompressor.feed(chunk, max_bytes - len(out) + 1):
                add(piece)
        except zlib.error as e:
            raise HardFetchError(original, f"corrupt {codings[0]} body: {e}{at}") from e
    if decompressor is not None:
        try:
            add(decompressor.flush())
        except zlib.error as e:
            raise HardFetchError(original, f"corrupt {codings[0]} body: {e}{at}") from e
    return bytes(out)


class _Inflater:
    """zlib inflate that never produces more than ``step`` bytes per decompress call.

    Handles gzip streams of several members (RFC 1952 §2.2) and "deflate"
    sent raw instead of zlib-wrapped (a common server mistake).
    """

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._obj: Any = None
        self._pending = b""

    def _make(self, data: bytes) -> Any:
        if self._wbits == 0:
            looks_zlib = (data[0] & 0x0F) == 8 and (data[0] << 8 | data[1]) % 31 == 0
            return zlib.decompressobj(zlib.MAX_WBITS if looks_zlib else -zlib.MAX_WBITS)
        return zlib.decompressobj(self._wbits)

    def feed(self, data: bytes, budget: int) -> Iterator[bytes]:
        step = max(1, min(budget, READ_CHUNK))
        data, self._pending = self._pending + data, b""
        while data:
            if self._obj is None:
                if not data.strip(b"\0"):
                    return  # zero padding after the last member
                if len(data) < 2:
                    self._pending = data
                    return
                self._obj = self._make(data)
            piece = self._obj.decompress(data, step)
            if piece:
                yield piece
            if self._obj.eof:
                data = self._obj.unused_data
                self._obj = None  # a further gzip member may follow
                continue
            data = self._obj.unconsumed_tail
            if not piece:
                break

    def flush(self) -> bytes:
        out = b"".join(self.feed(b"", READ_CHUNK)) if self._pending else b""
        if self._obj is None:
            return out
        return out + bytes(self._obj.flush())
