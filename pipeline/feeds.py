"""Feed bytes → entries. Pure: feedparser only ever parses bytes we fetched.

RSS 0.9x/1.0/2.0 and Atom go through feedparser after we decode the bytes
ourselves (HTTP charset, BOM, XML declaration, detection) and hand it UTF-8;
JSON Feed is parsed here with :mod:`json`. Entries get absolute URLs, UTC
datetimes and plain-text summaries; duplicate GUIDs within one feed are
dropped (first one wins).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import courlan
import feedparser
import lxml.html
from lxml import etree

from pipeline.errors import ParseError
from pipeline.extract import decode_document
from pipeline.models import FeedEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    entries: list[FeedEntry]
    ttl_minutes: int | None
    kind: str  # "rss" | "atom" | "json"
    version: str = ""  # feedparser's version string ("rss20", "atom10", …) or "json1.1"
    link: str | None = None
    charset_how: str = ""  # how the bytes were decoded: http | bom | meta | detected
    duplicates_dropped: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)


_JSON_FEED_TYPES = ("application/feed+json", "application/json")
_HTML_START_RE = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html\b)", re.I | re.S)
_SY_PERIOD_MINUTES = {
    "hourly": 60,
    "daily": 1440,
    "weekly": 10080,
    "monthly": 43200,
    "yearly": 525600,
}


def parse_feed(content: bytes, url: str, headers: Mapping[str, str] | None = None) -> ParsedFeed:
    """Parse one feed document; raises ParseError when it is not a usable feed."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    if not content.strip():
        raise ParseError(url, "empty document")
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    stripped = content.lstrip(b"\xef\xbb\xbf \t\r\n")
    if content_type in _JSON_FEED_TYPES or stripped.startswith(b"{"):
        return _parse_json_feed(content, url, headers)
    text, how = decode_document(content, headers, markup="xml")
    if _HTML_START_RE.match(stripped[:2048]) or _HTML_START_RE.match(text[:2048].encode()):
        raise ParseError(url, "an HTML page, not a feed (served as a feed URL)")
    parsed = feedparser.parse(
        text.encode("utf-8"),
        response_headers={"content-type": "application/xml; charset=utf-8"},
        sanitize_html=True,
        resolve_relative_uris=True,
    )
    version = str(parsed.get("version") or "")
    warnings: list[str] = []
    if parsed.get("bozo"):
        warnings.append(
            f"{type(parsed.get('bozo_exception')).__name__}: {parsed.get('bozo_exception')}"
        )
    if not version:
        problem = warnings[0] if warnings else "no RSS, Atom or RDF root element"
        raise ParseError(url, f"not a feed: {problem}")
    feed = parsed.feed
    entries: list[FeedEntry] = []
    seen: set[str] = set()
    dropped = 0
    for raw in parsed.entries:
        entry = _entry_from_feedparser(raw, url)
        if entry is None:
            continue
        key = entry.guid or normalize_url(entry.url)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        entries.append(entry)
    if parsed.get("bozo") and not entries and not parsed.feed.get("title"):
        # Broken XML with nothing usable (feedparser may still return empty shells).
        raise ParseError(url, f"malformed XML yields nothing: {warnings[0]}")
    if dropped:
        log.info("feeds: url=%s duplicate entries dropped=%d", url, dropped)
    if warnings:
        log.info("feeds: url=%s parsed with problems: %s", url, warnings[0])
    kind = "atom" if version.startswith("atom") else "rss"
    return ParsedFeed(
        title=_detail_text(feed, "title"),
        entries=entries,
        ttl_minutes=_ttl(feed),
        kind=kind,
        version=version,
        link=feed.get("link"),
        charset_how=how,
        duplicates_dropped=dropped,
        warnings=tuple(warnings),
    )


def _entry_from_feedparser(raw: Any, feed_url: str) -> FeedEntry | None:
    link = raw.get("link")
    if not link:
        for candidate in raw.get("links", []):
            if candidate.get("rel", "alternate") == "alternate" and candidate.get("href"):
                link = candidate["href"]
                break
    guid = raw.get("id") or None
    if not link and guid and str(guid).startswith(("http://", "https://")):
        link = guid
    url = urljoin(feed_url, str(link).strip()) if link else ""
    if not url.startswith(("http://", "https://")):
        log.info("feeds: url=%s entry without an http(s) link skipped (guid=%s)", feed_url, guid)
        return None
    summary = raw.get("summary") or ""
    if not summary and raw.get("content"):
        summary = raw["content"][0].get("value", "")
    return FeedEntry(
        url=url,
        guid=str(guid).strip() if guid else None,
        title=_detail_text(raw, "title"),
        summary=html_to_text(str(summary)),
        published=_struct_time(raw.get("published_parsed") or raw.get("updated_parsed")),
    )


def _detail_text(node: Any, key: str) -> str:
    """A feedparser text construct as plain text (HTML only where the feed says so)."""
    value = str(node.get(key, ""))
    detail = node.get(f"{key}_detail") or {}
    if "html" in str(detail.get("type", "")):
        return html_to_text(value)
    return _clean_text(value)


def _struct_time(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, TypeError):
        return None


def _ttl(feed: Any) -> int | None:
    ttl = str(feed.get("ttl", "")).strip()
    if ttl.isdigit() and int(ttl) > 0:
        return int(ttl)
    period = str(feed.get("sy_updateperiod", "")).strip().lower()
    if period in _SY_PERIOD_MINUTES:
        frequency = str(feed.get("sy_updatefrequency", "1")).strip()
        n = int(frequency) if frequency.isdigit() and int(frequency) > 0 else 1
        return max(1, _SY_PERIOD_MINUTES[period] // n)
    return None


def _parse_json_feed(content: bytes, url: str, headers: Mapping[str, str]) -> ParsedFeed:
    text, how = decode_document(content, headers, markup="json")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ParseError(url, f"invalid JSON: {e}") from e
    if not isinstance(data, dict) or "jsonfeed.org/version" not in str(data.get("version", "")):
        raise ParseError(url, "JSON document is not a JSON Feed (no jsonfeed.org version)")
    items = data.get("items")
    if not isinstance(items, list):
        raise ParseError(url, "JSON Feed without an items list")
    entries: list[FeedEntry] = []
    seen: set[str] = set()
    dropped = 0
    for item in items:
        if not isinstance(item, dict):
            continue
        link = item.get("url") or item.get("external_url")
        guid = item.get("id")
        guid = str(guid) if guid is not None and str(guid) else None
        if not link and guid and guid.startswith(("http://", "https://")):
            link = guid
        if not isinstance(link, str) or not link:
            continue
        entry_url = urljoin(str(data.get("home_page_url") or url), link)
        key = guid or normalize_url(entry_url)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        summary = item.get("summary") or item.get("content_text") or ""
        if not summary and item.get("content_html"):
            summary = html_to_text(str(item["content_html"]))
        entries.append(
            FeedEntry(
                url=entry_url,
                guid=guid,
                title=_clean_text(str(item.get("title") or "")),
                summary=_clean_text(str(summary)),
                published=_iso(item.get("date_published") or item.get("date_modified")),
            )
        )
    version = str(data["version"]).rsplit("/", 1)[-1]
    return ParsedFeed(
        title=_clean_text(str(data.get("title") or "")),
        entries=entries,
        ttl_minutes=None,
        kind="json",
        version=f"json{version}",
        link=data.get("home_page_url"),
        charset_how=how,
        duplicates_dropped=dropped,
    )


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _clean_text(text: str) -> str:
    return " ".join(text.split())


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment (feed summaries), whitespace collapsed."""
    if "<" not in fragment and "&" not in fragment:
        return _clean_text(fragment)
    try:
        root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except (etree.ParserError, ValueError):
        return _clean_text(re.sub(r"<[^>]+>", " ", fragment))
    for bad in root.xpath(".//script|.//style"):
        bad.drop_tree()
    return _clean_text(root.text_content())


# --- identity ------------------------------------------------------------------

# Query parameters that only track the reader, on top of courlan's list.
_TRACKING_PARAMS = re.compile(
    r"^(?:utm_\w+|fbclid|gclid|gclsrc|dclid|msclkid|mc_cid|mc_eid|igshid|yclid|_ga|_gl"
    r"|ocid|cmpid|wt_mc|wt\.mc_id|at_medium|at_campaign|ito|spm|share|smid|taid)$",
    re.IGNORECASE,
)


def normalize_url(url: str) -> str:
    """A URL's identity: lower-case scheme/host, no default port, fragment or tracking params.

    courlan normalises (sorted query, tracking parameters out, default ports
    out); we drop the fragment and a few more trackers it keeps.
    """
    url = url.strip()
    try:
        normalized = courlan.normalize_url(url, strict=False)
    except ValueError:
        normalized = url
    parts = urlsplit(normalized)
    query = urlencode(
        [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if not _TRACKING_PARAMS.match(k)
        ]
    )
    netloc = parts.netloc.lower()
    if (parts.scheme == "http" and netloc.endswith(":80")) or (
        parts.scheme == "https" and netloc.endswith(":443")
    ):
        netloc = netloc.rsplit(":", 1)[0]
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", query, ""))


# Parts of a page's text that change without the article changing: clock
# times, "updated …" stamps, relative times and engagement counters. Masked
# before hashing so that they do not count as edits; amounts, percentages and
# dates in the prose are kept, a change there is an edit. Judgement, with the
# cases in tests/test_feeds.py.
_VOLATILE = (
    # "Stand: 13.06.2025, 10:15 Uhr", "Updated: June 13, 2025 10:15 am", "Aktualisiert am …"
    re.compile(
        r"\b(?:stand|aktualisiert(?:\s+am)?|zuletzt\s+aktualisiert|updated?|last\s+updated"
        r"|published|veröffentlicht(?:\s+am)?)\s*:?\s*[^\n]{0,40}?"
        r"(?:\d{1,2}:\d{2}(?:\s*(?:uhr|am|pm|[a-z]{2,4}))?|\d{1,2}\.\d{2}\s*uhr)",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:\d{1,2}:\d{2}(?::\d{2})?(?:\s*(?:uhr|am|pm|[ap]\.m\.))?|\d{1,2}\.\d{2}\s*uhr)",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:vor\s+\d+\s+(?:sekunden?|minuten?|stunden?|tagen?)"
        r"|\d+\s+(?:seconds?|minutes?|mins?|hours?|hrs?|days?)\s+ago)\b",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b\d[\d.,]*\s*(?:k\s+)?(?:comments?|kommentare?|shares?|views?|aufrufe|likes?"
        r"|reactions?|reaktionen|leser(?:innen)?\s+online)\b",
        re.IGNORECASE,
    ),
)


def stable_text(text: str) -> str:
    """The text with NFKC, collapsed whitespace and volatile stamps/counters masked."""
    normalized = " ".join(unicodedata.normalize("NFKC", text).split())
    for pattern in _VOLATILE:
        normalized = pattern.sub("\u2026", normalized)
    return normalized


def content_hash(text: str) -> str:
    """SHA-256 of :func:`stable_text`: equal for texts that differ only in layout or stamps."""
    return hashlib.sha256(stable_text(text).encode("utf-8")).hexdigest()
