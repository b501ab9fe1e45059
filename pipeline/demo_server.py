"""A loopback HTTP server for the demo's bundled sample outlets.

`serve_demo()` serves the files under ``pipeline/demo_data`` (or another root
with the same layout) on ``127.0.0.1`` at a free port, for as long as its
``with`` block runs. Files reference each other through the placeholder
``{base}``, replaced with the server's real base URL when the server starts.
The server behaves like a polite news site: feeds and pages carry the right
``Content-Type``, an ``ETag`` and a ``Last-Modified`` header, conditional
requests are answered with ``304 Not Modified``, ``/robots.txt`` allows
everything and unknown paths get ``404``.

The manifest ``outlets.toml`` in the root lists the outlets (name, language,
homepage, feed paths) and their articles with the story each belongs to.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from pipeline.errors import ConfigError
from pipeline.models import FeedConfig

logger = logging.getLogger(__name__)

DEMO_DATA_DIR = Path(__file__).resolve().parent / "demo_data"
MANIFEST_NAME = "outlets.toml"
BASE_PLACEHOLDER = "{base}"
HOST = "127.0.0.1"

ROBOTS_TXT = b"User-agent: *\nAllow: /\n"

HTML_TYPE = "text/html; charset=utf-8"
RSS_TYPE = "application/rss+xml; charset=utf-8"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
XML_TYPE = "application/xml; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"

# Only these files are served; the manifest and anything else stays private.
_SERVED_SUFFIXES = frozenset({".html", ".xml", ".atom", ".rss", ".txt"})
_ATOM_ROOT = "{http://www.w3.org/2005/Atom}feed"


@dataclass(frozen=True)
class DemoArticle:
    """One article page of a demo outlet, with the story it belongs to."""

    url: str
    story: str
    published: datetime
    source: str


@dataclass(frozen=True)
class DemoOutlet:
    """One demo outlet as listed in the manifest, with URLs on the running server."""

    name: str
    site_name: str
    lang: str
    homepage: str
    feed_urls: tuple[str, ...]
    articles: tuple[DemoArticle, ...]


@dataclass(frozen=True)
class DemoSite:
    """A running demo server: its base URL and the outlets it serves."""

    base_url: str
    outlets: tuple[DemoOutlet, ...]

    def url(self, path: str) -> str:
        """The absolute URL of a path on this server (``/techblick/`` → ``http://…/techblick/``)."""
        return self.base_url + "/" + path.lstrip("/")

    @property
    def feed_urls(self) -> tuple[str, ...]:
        return tuple(url for outlet in self.outlets for url in outlet.feed_urls)

    def feeds(self) -> list[FeedConfig]:
        """Every feed of the demo outlets, as newsdrift subscribes to it."""
        return [
            FeedConfig(url=url, outlet=outlet.name, lang=outlet.lang)
            for outlet in self.outlets
            for url in outlet.feed_urls
        ]

    @property
    def articles(self) -> tuple[DemoArticle, ...]:
        return tuple(article for outlet in self.outlets for article in outlet.articles)


@dataclass(frozen=True)
class Resource:
    """One servable file, already rendered for a base URL."""

    body: bytes
    content_type: str
    etag: str
    last_modified: datetime


# ----------------------------------------------------------------- pure helpers


def substitute_base(data: bytes, base_url: str) -> bytes:
    """Replace every ``{base}`` placeholder in ``data`` by ``base_url`` (no trailing slash)."""
    return data.replace(BASE_PLACEHOLDER.encode(), base_url.rstrip("/").encode())


def content_type_for(path: Path, body: bytes) -> str | None:
    """The Content-Type to serve ``path`` with, or None if the file is not served.

    XML files are told apart by their root element: RSS 2.0 or Atom.
    """
    suffix = path.suffix.lower()
    if suffix not in _SERVED_SUFFIXES:
        return None
    if suffix == ".html":
        return HTML_TYPE
    if suffix == ".txt":
        return TEXT_TYPE
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return XML_TYPE
    if root.tag == "rss":
        return RSS_TYPE
    if root.tag == _ATOM_ROOT:
        return ATOM_TYPE
    return XML_TYPE


def make_etag(body: bytes) -> str:
    """A strong entity tag for ``body``."""
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison of ``If-None-Match`` against ``etag`` (RFC 9110 §13.1.2)."""
    wanted = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


def is_not_modified(
    resource: Resource, *, if_none_match: str | None, if_modified_since: str | None
) -> bool:
    """Whether a GET/HEAD with these request headers should get ``304 Not Modified``.

    ``If-None-Match`` wins over ``If-Modified-Since`` when both are present
    (RFC 9110 §13.2.2). An unparsable date is ignored.
    """
    if if_none_match is not None:
        return _etag_matches(if_none_match, resource.etag)
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return resource.last_modified <= since


def url_path_of(root: Path, file: Path) -> str:
    """The URL path a file under ``root`` is served at (``index.html`` serves its directory)."""
    rel = file.relative_to(root).as_posix()
    if rel == "index.html":
        return "/"
    if rel.endswith("/index.html"):
        return "/" + rel.removesuffix("index.html")
    return "/" + rel


def _require(table: Mapping[str, Any], key: str, kind: type, where: str, path: Path) -> Any:
    value = table.get(key)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {key}: expected {kind.__name__}", path=str(path))
    return value


def _published(value: Any, where: str, path: Path) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise ConfigError(f"{where}: published: not an ISO 8601 time", path=str(path)) from exc
    if parsed.tzinfo is None:
        raise ConfigError(f"{where}: published: needs a UTC offset", path=str(path))
    return parsed.astimezone(UTC)


def load_outlets(root: Path, base_url: str) -> tuple[DemoOutlet, ...]:
    """Read ``outlets.toml`` under ``root`` and resolve its paths against ``base_url``."""
    manifest = root / MANIFEST_NAME
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read demo manifest: {exc}", path=str(manifest)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=str(manifest)) from exc
    base = base_url.rstrip("/")
    outlets = []
    for i, table in enumerate(_require(data, "outlet", list, "top level", manifest)):
        where = f"outlet[{i}]"
        feeds = _require(table, "feeds", list, where, manifest)
        articles = tuple(
            DemoArticle(
                url=base + _require(article, "path", str, f"{where}.article[{j}]", manifest),
                story=_require(article, "story", str, f"{where}.article[{j}]", manifest),
                published=_published(article.get("published"), f"{where}.article[{j}]", manifest),
                source=_require(article, "source", str, f"{where}.article[{j}]", manifest),
            )
            for j, article in enumerate(table.get("article", []))
        )
        outlets.append(
            DemoOutlet(
                name=_require(table, "name", str, where, manifest),
                site_name=str(table.get("site_name", table.get("name"))),
                lang=_require(table, "lang", str, where, manifest),
                homepage=base + _require(table, "homepage", str, where, manifest),
                feed_urls=tuple(base + str(feed) for feed in feeds),
                articles=articles,
            )
        )
    return tuple(outlets)


def build_resources(root: Path, base_url: str) -> dict[str, Resource]:
    """Render every servable file under ``root`` for ``base_url``, keyed by URL path."""
    resources: dict[str, Resource] = {}
    for file in sorted(root.rglob("*")):
        if not file.is_file():
            continue
        body = substitute_base(file.read_bytes(), base_url)
        content_type = content_type_for(file, body)
        if content_type is None:
            continue
        mtime = datetime.fromtimestamp(int(file.stat().st_mtime), tz=UTC)
        resources[url_path_of(root, file)] = Resource(body, content_type, make_etag(body), mtime)
    resources.setdefault(
        "/robots.txt",
        Resource(
            ROBOTS_TXT,
            TEXT_TYPE,
            make_etag(ROBOTS_TXT),
            datetime.fromtimestamp(int(root.stat().st_mtime), tz=UTC),
        ),
    )
    return resources


# ----------------------------------------------------------------- the server


def send_resource(
    handler: BaseHTTPRequestHandler,
    resource: Resource,
    *,
    with_body: bool = True,
    cache_control: str | None = None,
) -> None:
    """Answer with ``resource``: 304 to a matching conditional request, else 200,
    with its validators either way."""
    validators = {
        "ETag": resource.etag,
        "Last-Modified": format_datetime(resource.last_modified, usegmt=True),
    }
    if is_not_modified(
        resource,
        if_none_match=handler.headers.get("If-None-Match"),
        if_modified_since=handler.headers.get("If-Modified-Since"),
    ):
        handler.send_response(HTTPStatus.NOT_MODIFIED)
        for name, value in validators.items():
            handler.send_header(name, value)
        handler.end_headers()
        return
    handler.send_response(HTTPStatus.OK)
    handler.send_header("Content-Type", resource.content_type)
    handler.send_header("Content-Length", str(len(resource.body)))
    for name, value in validators.items():
        handler.send_header(name, value)
    if cache_control:
        handler.send_header("Cache-Control", cache_control)
    handler.end_headers()
    if with_body:
        handler.wfile.write(resource.body)


class _DemoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _DemoHandler)
        self.resources: Mapping[str, Resource] = {}

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed request through ``logging`` instead of printing to stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            logger.debug("demo_server client %s went away: %s", client_address, error)
        else:
            logger.warning("demo_server error serving %s", client_address, exc_info=True)


class _DemoHandler(BaseHTTPRequestHandler):
    server_version = "newsdrift-demo/1.0"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def _respond(self, *, with_body: bool) -> None:
        resources = cast(_DemoHTTPServer, self.server).resources
        path = unquote(urlsplit(self.path).path) or "/"
        resource = resources.get(path)
        if resource is None:
            if path + "/" in resources:
                self._redirect(path + "/")
            else:
                self._send_status(HTTPStatus.NOT_FOUND)
            return
        send_resource(self, resource, with_body=with_body, cache_control="no-cache")

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_status(self, status: HTTPStatus) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", TEXT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("demo_server %s %s", self.address_string(), format % args)


@contextmanager
def serve_demo(root: Path | None = None) -> Iterator[DemoSite]:
    """Serve ``root`` (default: the bundled demo data) on loopback while the block runs."""
    root = (root or DEMO_DATA_DIR).resolve()
    server = _DemoHTTPServer((HOST, 0))
    try:
        host, port = server.server_address[:2]
        base_url = f"http://{host!s}:{port}"
        outlets = load_outlets(root, base_url)
        server.resources = build_resources(root, base_url)
    except BaseException:
        server.server_close()
        raise
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"demo-server-{port}",
        daemon=True,
    )
    thread.start()
    logger.info(
        "demo_server started url=%s outlets=%d files=%d",
        base_url,
        len(outlets),
        len(server.resources),
    )
    try:
        yield DemoSite(base_url=base_url, outlets=outlets)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        logger.info("demo_server stopped url=%s", base_url)
