"""A real HTTP server on 127.0.0.1 (port 0) in a thread, with routes a test scripts.

    with LoopbackServer() as server:
        server.route("/feed.xml", Reply(200, {"ETag": '"v1"'}, body=b"..."))
        server.route("/dyn", lambda req: Reply(304) if req.header("if-none-match") else ...)
        fetcher.fetch(server.url("/feed.xml"))
        server.requests        # every request seen, in arrival order
        server.max_concurrent  # the most requests in flight at once

A reply can wait before answering (``delay_s``), drip its body slowly
(``drip_bytes`` every ``drip_interval_s``), and carry any headers. Only the
loopback interface is ever bound.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0  # before the status line
    drip_bytes: int = 0  # > 0: send the body this many bytes at a time …
    drip_interval_s: float = 0.0  # … with this pause between pieces
    content_length: bool = True  # False: no Content-Length, connection closed after the body


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names, values byte-exact (latin-1 decoded)
    raw_headers: tuple[tuple[str, str], ...]
    started: float  # time.monotonic() when the request line was read
    finished: float = 0.0  # time.monotonic() just before the response was sent

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


Handler = Callable[[RecordedRequest], Reply]


class LoopbackServer:
    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._routes: dict[str, Reply | Handler] = {}
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._active = 0
        self.max_concurrent = 0
        self._httpd = _Server(("127.0.0.1", 0), _make_handler(self))
        self.scheme = "http"
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # lifecycle ---------------------------------------------------------------

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # scripting ---------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def route(self, path: str, reply: Reply | Handler) -> None:
        with self._lock:
            self._routes[path] = reply

    def requests_for(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # server side -------------------------------------------------------------

    def _begin(self) -> None:
        with self._lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)

    def _end(self, request: RecordedRequest) -> None:
        with self._lock:
            self._active -= 1
            self.requests.append(request)

    def _lookup(self, path: str) -> Reply | Handler | None:
        with self._lock:
            return self._routes.get(path) or self._routes.get(path.split("?", 1)[0])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = socket.AF_INET

    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that hangs up (timeouts, size caps) is what the tests provoke


def _make_handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            self._serve(send_body=True)

        def do_HEAD(self) -> None:
            self._serve(send_body=False)

        def _serve(self, *, send_body: bool) -> None:
            started = time.monotonic()
            server._begin()
            raw = tuple((k, v) for k, v in self.headers.items())
            request = RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in raw},
                raw_headers=raw,
                started=started,
            )
            ended = False
            try:
                route = server._lookup(self.path)
                if route is None:
                    reply = Reply(404, {"Content-Type": "text/plain"}, b"not found")
                elif isinstance(route, Reply):
                    reply = route
                else:
                    reply = route(request)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                # counted as finished before the first byte goes out: the client
                # holds its slot at least until it has read the answer, so these
                # intervals lie inside the client's and never overstate concurrency
                server._end(replace(request, finished=time.monotonic()))
                ended = True
                self._send(reply, send_body=send_body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                if not ended:
                    server._end(replace(request, finished=time.monotonic()))

        def _send(self, reply: Reply, *, send_body: bool) -> None:
            self.send_response_only(reply.status)
            items = reply.headers.items() if isinstance(reply.headers, Mapping) else reply.headers
            names = set()
            for name, value in items:
                names.add(name.lower())
                if value != "":  # an empty value leaves the header out (e.g. no Date)
                    self.send_header(name, value)
            if "date" not in names:
                self.send_header("Date", self.date_time_string())
            if reply.content_length and "content-length" not in names:
                self.send_header("Content-Length", str(len(reply.body)))
            if not reply.content_length:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if not send_body or reply.status == 304 or not reply.body:
                return
            if reply.drip_bytes <= 0:
                self.wfile.write(reply.body)
                return
            for i in range(0, len(reply.body), reply.drip_bytes):
                self.wfile.write(reply.body[i : i + reply.drip_bytes])
                self.wfile.flush()
                time.sleep(reply.drip_interval_s)

    return _Handler
