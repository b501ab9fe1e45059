"""Shared helpers of the benchmarks: a loopback site in its own process, timing, tables.

The site runs in a child process so that serving pages takes no GIL time from
the pipeline being measured (it still takes CPU on a small machine; the
benchmarks say so). Each "domain" is one listening socket on its own loopback
address (127.0.0.1, 127.0.0.2, …: Linux routes all of 127/8 to lo), so the
fetcher's per-domain politeness budget sees several domains.

Routes are built inside the child by a picklable builder ``(generation,
hosts) -> {path: Resource}``; ``Site.bump()`` asks it for the next
generation (the poll benchmark uses this to change 10 % of the feeds).
A request carrying the resource's ETag in If-None-Match gets 304.
"""

from __future__ import annotations

import gzip
import multiprocessing as mp
import os
import resource
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Resource:
    body: bytes
    content_type: str
    etag: str | None = None
    gzip: bool = False  # body is gzip-compressed; sent with Content-Encoding: gzip


Routes = Mapping[str, Resource]
# (generation, [(host, port)]) -> routes; must be a module-level function (pickled).
Builder = Callable[[int, Sequence[tuple[str, int]]], Routes]


@dataclass
class _Stats:
    requests: int = 0
    bytes_out: int = 0
    not_modified: int = 0
    ok: int = 0
    missing: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client hanging up is not the benchmark's business


def _handler(state: dict[str, Any], lock: threading.Lock, stats: _Stats, latency_s: float) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            if latency_s:
                time.sleep(latency_s)  # a stand-in for network round trips and server time
            routes: Routes = state["routes"]
            res = routes.get(self.path.split("?", 1)[0])
            if res is None:
                status, headers, body = 404, [("Content-Type", "text/plain")], b"not found"
            elif res.etag is not None and self.headers.get("If-None-Match") == res.etag:
                status, headers, body = 304, [("ETag", res.etag)], b""
            else:
                status, body = 200, res.body
                headers = [("Content-Type", res.content_type)]
                if res.etag is not None:
                    headers.append(("ETag", res.etag))
                if res.gzip:
                    headers.append(("Content-Encoding", "gzip"))
            headers.append(("Content-Length", str(len(body))))
            head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
            raw = head.encode("latin-1") + b"\r\n" + body
            self.wfile.write(raw)
            with lock:
                stats.requests += 1
                stats.bytes_out += len(raw)
                if status == 304:
                    stats.not_modified += 1
                elif status == 200:
                    stats.ok += 1
                else:
                    stats.missing += 1

    return Handler


def _serve(builder: Builder, hosts: Sequence[str], conn: Connection, latency_s: float) -> None:
    state: dict[str, Any] = {}
    lock = threading.Lock()
    stats = _Stats()
    servers = [_Server((h, 0), _handler(state, lock, stats, latency_s)) for h in hosts]
    bound = [(h, int(s.server_address[1])) for h, s in zip(hosts, servers, strict=True)]
    generation = 0
    state["routes"] = builder(generation, bound)
    for s in servers:
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    conn.send(bound)
    while True:
        msg = conn.recv()
        if msg == "bump":
            generation += 1
            state["routes"] = builder(generation, bound)
            conn.send(generation)
        elif msg == "stats":
            with lock:
                conn.send(
                    {
                        "requests": stats.requests,
                        "bytes_out": stats.bytes_out,
                        "ok": stats.ok,
                        "not_modified": stats.not_modified,
                        "missing": stats.missing,
                    }
                )
        elif msg == "reset":
            with lock:
                stats.requests = stats.bytes_out = stats.not_modified = 0
                stats.ok = stats.missing = 0
            conn.send(True)
        else:
            break
    for s in servers:
        s.shutdown()
        s.server_close()


class Site:
    """A loopback site in a child process; ``hosts`` are loopback addresses, one per domain.

    ``latency_s`` delays every answer (what a real network and server add; 0 on loopback).
    """

    def __init__(self, builder: Builder, hosts: Sequence[str], latency_s: float = 0.0) -> None:
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(builder, list(hosts), child, latency_s), daemon=True
        )
        self.bound: list[tuple[str, int]] = []

    def __enter__(self) -> Site:
        self._proc.start()
        self.bound = self._conn.recv()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._conn.send("stop")
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.terminate()

    def bump(self) -> int:
        self._conn.send("bump")
        return int(self._conn.recv())

    def stats(self) -> dict[str, int]:
        self._conn.send("stats")
        return dict(self._conn.recv())

    def reset_stats(self) -> None:
        self._conn.send("reset")
        self._conn.recv()


def loopback_hosts(n: int) -> list[str]:
    return [f"127.0.0.{i + 1}" for i in range(n)]


def base_url(bound: Sequence[tuple[str, int]], i: int) -> str:
    host, port = bound[i % len(bound)]
    return f"http://{host}:{port}"


def rss(title: str, link: str, items: Iterable[tuple[str, str, datetime, str]]) -> bytes:
    """An RSS 2.0 document; items are (title, url, published, summary)."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        f"<title>{escape(title)}</title><link>{escape(link)}</link>",
        "<description>newsdrift benchmark feed</description>",
    ]
    for t, url, published, summary in items:
        parts.append(
            f"<item><title>{escape(t)}</title><link>{escape(url)}</link>"
            f'<guid isPermaLink="true">{escape(url)}</guid>'
            f"<pubDate>{format_datetime(published)}</pubDate>"
            f"<description>{escape(summary)}</description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode("utf-8")


ROBOTS = Resource(b"User-agent: *\nAllow: /\n", "text/plain")


def load_corpus(path: Path) -> list[tuple[str, bytes]]:
    """The gzip HTML pages of the extraction benchmark: (name, decompressed bytes), sorted."""
    pages = []
    for p in sorted((path / "html").glob("*.html.gz")):
        pages.append((p.name.removesuffix(".html.gz"), gzip.decompress(p.read_bytes())))
    if not pages:
        raise SystemExit(f"no html/*.html.gz under {path}")
    return pages


# --- measuring ----------------------------------------------------------------------------


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


class ChildrenPeakRss:
    """The largest peak RSS (``VmHWM``) among this process's child processes, sampled
    from /proc every ``every_s`` while inside ``with`` (which may be entered again).

    ``RUSAGE_CHILDREN``'s ``ru_maxrss`` is no measure of a spawned pool worker: it counts
    the forked copy of the parent before ``exec``, so a worker started by a big
    parent reports the parent's size.
    """

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s, self.peak_kb = every_s, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def mb(self) -> float:
        return self.peak_kb / 1024

    def sample(self) -> None:
        me = str(os.getpid())
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # The parent pid is the second field after the parenthesised name.
                if stat.read_text().rpartition(")")[2].split()[1] != me:
                    continue
                status = (stat.parent / "status").read_text()
            except OSError:
                continue  # gone meanwhile
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> ChildrenPeakRss:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain fixed-width table (scripts print it)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            "  ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(r, widths, strict=True))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:,.3f}" if abs(c) < 10 else f"{c:,.1f}"
    if isinstance(c, int):
        return f"{c:,}"
    return str(c)


def free_port_ok(host: str) -> bool:
    """Whether ``host`` can be bound (127.0.0.x beyond .1 needs Linux's 127/8 on lo)."""
    with socket.socket() as s:
        try:
            s.bind((host, 0))
        except OSError:
            return False
    return True
