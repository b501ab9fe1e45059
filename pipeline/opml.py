"""OPML import and export of feed lists. Pure: bytes in, FeedConfig out, and back.

Import reads every ``<outline>`` with an ``xmlUrl``; the outlet is the
outline's ``title`` (else ``text``), or that of the enclosing category
outline when the feed outline only names the feed; the language comes from
a ``language`` attribute on the outline or an enclosing one, else from the
document's ``<head><language>``/``xml:lang``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from lxml import etree

from pipeline.errors import InputError
from pipeline.models import FeedConfig, is_http_url

log = logging.getLogger(__name__)

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _where(source: str, element: etree._Element | None) -> str:
    line = getattr(element, "sourceline", None)
    return f"{source}:{line}" if line else source


def _lang(value: str | None) -> str:
    if not value:
        return ""
    return value.strip().replace("_", "-").split("-")[0].lower()


def parse_opml(content: bytes, source: str) -> list[FeedConfig]:
    """Feeds of an OPML document; InputError saying where when the document is bad."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as e:
        line = e.position[0] if e.position else None
        where = f"{source}:{line}" if line else source
        raise InputError(f"{where}: not well-formed XML: {e.msg}") from e
    if root.tag != "opml":
        raise InputError(f"{_where(source, root)}: root element is <{root.tag}>, expected <opml>")
    body = root.find("body")
    if body is None:
        raise InputError(f"{source}: OPML without <body>")
    doc_lang = _lang(root.findtext("head/language") or root.get(XML_LANG))
    feeds: list[FeedConfig] = []
    seen: set[str] = set()
    for outline in body.iter("outline"):
        url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
        if not url:
            continue
        if not is_http_url(url):
            raise InputError(f"{_where(source, outline)}: xmlUrl {url!r} is not an http(s) URL")
        if url in seen:
            log.info("opml: source=%s duplicate feed %s skipped", source, url)
            continue
        seen.add(url)
        feeds.append(
            FeedConfig(
                url=url,
                outlet=_outlet(outline, urlsplit(url).hostname or url),
                lang=_outline_lang(outline) or doc_lang,
            )
        )
    return feeds


def _outlet(outline: etree._Element, fallback: str) -> str:
    own = (outline.get("title") or outline.get("text") or "").strip()
    if own:
        return own
    parent = outline.getparent()
    while parent is not None and parent.tag == "outline":
        name = (parent.get("title") or parent.get("text") or "").strip()
        if name:
            return name
        parent = parent.getparent()
    return fallback


def _outline_lang(outline: etree._Element) -> str:
    node: etree._Element | None = outline
    while node is not None and node.tag == "outline":
        lang = node.get("language") or node.get(XML_LANG)
        if lang:
            return _lang(lang)
        node = node.getparent()
    return ""


def to_opml(feeds: Sequence[FeedConfig], *, title: str = "newsdrift feeds") -> bytes:
    """An OPML 2.0 document listing ``feeds``; round-trips through :func:`parse_opml`."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<opml version="2.0">',
        f"  <head><title>{_escape(title)}</title></head>",
        "  <body>",
    ]
    for feed in feeds:
        attrs = {
            "type": "rss",
            "text": feed.outlet,
            "title": feed.outlet,
            "xmlUrl": feed.url,
        }
        if feed.lang:
            attrs["language"] = feed.lang
        rendered = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
        lines.append(f"    <outline {rendered}/>")
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines).encode("utf-8")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
