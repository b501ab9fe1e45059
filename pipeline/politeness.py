"""One politeness budget per registrable domain, shared by every fetch.

A site owner sees newsdrift as one visitor per registrable domain (eTLD+1):
``feeds.example.co.uk`` and ``www.example.co.uk`` draw from the same budget
of concurrent requests and the same minimum gap between request starts, and a
Retry-After one of them sends holds for all of them.

Thread-safe; the clock and the sleep are injected so that tests never wait
for real time unless they want to.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tld import get_fld

log = logging.getLogger(__name__)


def registrable_domain(host: str) -> str:
    """The eTLD+1 of ``host`` (``www.bbc.co.uk`` → ``bbc.co.uk``).

    Uses the public suffix list snapshot bundled with the ``tld`` package (no
    network; courlan depends on it already). IP addresses are their own
    domain; names under an unlisted suffix follow the PSL default rule.
    """
    host = host.strip().strip("[]").rstrip(".").lower()
    if not host:
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    fld = get_fld(host, fix_protocol=True, fail_silently=True)
    if fld:
        return str(fld)
    # not under a listed suffix: the PSL's default rule "*" makes the last label
    # the public suffix, so the registrable domain is the last two labels
    labels = host.split(".")
    return ".".join(labels[-2:])


@dataclass
class _DomainState:
    active: int = 0
    next_start: float = 0.0  # earliest monotonic time the next request may start
    blocked_until: float = 0.0  # Retry-After remembered (monotonic time)
    min_gap_s: float = 0.0  # per-domain override (robots.txt Crawl-delay), 0 = default


class Politeness:
    """Concurrency slots, start gaps and Retry-After per registrable domain."""

    def __init__(
        self,
        *,
        max_concurrent: int = 2,
        min_gap_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if min_gap_s < 0:
            raise ValueError("min_gap_s must not be negative")
        self._max_concurrent = max_concurrent
        self._min_gap_s = min_gap_s
        self._clock = clock
        self._sleep = sleep  # None: the real clock (see _pause)
        self._cond = threading.Condition()
        self._domains: dict[str, _DomainState] = {}
        self._stopping = threading.Event()

    def _state(self, domain: str) -> _DomainState:
        state = self._domains.get(domain)
        if state is None:
            state = self._domains[domain] = _DomainState()
        return state

    def stop_waiting(self) -> None:
        """Make callers waiting for a slot or a gap give up (``InterruptedError``): the
        run is stopping and will not use their requests."""
        with self._cond:
            self._stopping.set()
            self._cond.notify_all()

    def resume(self) -> None:
        self._stopping.clear()

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, ending with ``InterruptedError`` if ``stop_waiting`` came: on
        the real clock at once, with an injected ``sleep`` (tests) once it returns."""
        if self._sleep is None:
            stopped = self._stopping.wait(seconds)
        else:
            self._sleep(seconds)
            stopped = self._stopping.is_set()
        if stopped:
            raise InterruptedError("the run is stopping")

    @contextmanager
    def slot(self, domain: str) -> Iterator[None]:
        """Hold one request slot of ``domain``; waits for a free slot and the gap."""
        with self._cond:
            state = self._state(domain)
            while state.active >= self._max_concurrent and not self._stopping.is_set():
                self._cond.wait()
            if self._stopping.is_set():
                raise InterruptedError("the run is stopping")
            state.active += 1
            now = self._clock()
            start = max(now, state.next_start)
            state.next_start = start + max(self._min_gap_s, state.min_gap_s)
        try:
            delay = start - now
            if delay > 0:
                self._pause(delay)
            yield
        finally:
            with self._cond:
                state.active -= 1
                self._cond.notify_all()

    def defer(self, domain: str, seconds: float) -> None:
        """Remember that ``domain`` asked us to wait ``seconds`` (Retry-After)."""
        with self._cond:
            state = self._state(domain)
            until = self._clock() + max(0.0, seconds)
            if until > state.blocked_until:
                state.blocked_until = until
                log.info("politeness: domain=%s deferred for %.0fs", domain, seconds)

    def blocked_for(self, domain: str) -> float:
        """Seconds ``domain`` still asked us to wait (0 when free)."""
        with self._cond:
            state = self._domains.get(domain)
            if state is None:
                return 0.0
            return max(0.0, state.blocked_until - self._clock())

    def set_min_gap(self, domain: str, seconds: float) -> None:
        """Raise the gap for one domain (robots.txt Crawl-delay); never lowers the default."""
        with self._cond:
            self._state(domain).min_gap_s = max(0.0, seconds)
