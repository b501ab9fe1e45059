"""HTML → article text and metadata. Pure: takes strings and bytes, never URLs to fetch.

trafilatura does the extraction (``deduplicate=False``: its LRU cache is
process-global state). When the page's visible text carries amounts or
percentages that the precision-oriented extraction dropped (trafilatura loses
some table cells and inline tags), the page is re-extracted with a
recall-oriented setting and the text that keeps more of the page's numbers
wins; ``Extracted.method`` records which.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import charset_normalizer
import trafilatura
from htmldate import find_date
from trafilatura.metadata import examine_meta, extract_meta_json, extract_sitename, extract_title

from pipeline.errors import ExtractionError
from pipeline.models import Extracted

log = logging.getLogger(__name__)

# --- decoding --------------------------------------------------------------

_CHARSET_RE = re.compile(rb"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)
_META_RE = re.compile(rb"<meta\b[^>]*>", re.IGNORECASE)
_XML_DECL_RE = re.compile(rb"""^\s*<\?xml[^>]*\bencoding\s*=\s*["']([A-Za-z0-9_.:\-]+)["']""")
_HEADER_CHARSET_RE = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# WHATWG Encoding: these labels mean windows-1252 in every browser.
_WINDOWS_1252_ALIASES = frozenset(
    {"iso-8859-1", "iso8859-1", "latin-1", "latin1", "us-ascii", "ascii"}
)
META_SNIFF_BYTES = 4096  # how far to look for <meta charset> (HTML spec prescans 1024; pages lie)


def _codec(label: str | None) -> str | None:
    """The Python codec for a charset label, or None when unknown."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    if label in _WINDOWS_1252_ALIASES:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def http_charset(headers: Mapping[str, str] | None) -> str | None:
    """The codec named by the Content-Type header's charset, if any and known."""
    content_type = _header(headers, "content-type")
    if not content_type:
        return None
    match = _HEADER_CHARSET_RE.search(content_type)
    return _codec(match.group(1)) if match else None


def _bom(content: bytes) -> tuple[str, int] | None:
    for bom, name in _BOMS:
        if content.startswith(bom):
            return name, len(bom)
    return None


def _meta_charset(content: bytes) -> str | None:
    head = content[:META_SNIFF_BYTES]
    for tag in _META_RE.findall(head):
        match = _CHARSET_RE.search(tag)
        if match:
            codec = _codec(match.group(1).decode("ascii", "replace"))
            if codec:
                # a page that says utf-16 in ASCII bytes is not utf-16 (HTML spec)
                return "utf-8" if codec.startswith("utf-16") else codec
    return None


def _xml_charset(content: bytes) -> str | None:
    match = _XML_DECL_RE.match(content[:256])
    if not match:
        return None
    codec = _codec(match.group(1).decode("ascii", "replace"))
    return "utf-8" if codec and codec.startswith("utf-16") else codec


# Detection for bytes that are not UTF-8 and declare nothing. charset_normalizer
# alone picks Mac or Turkish code pages for short German text, so windows-1252
# (what browsers assume for Western pages) is preferred unless its reading looks
# wrong: mostly non-ASCII letters (another script) or symbols inside words.
# Judgement, checked on the German/English/Polish/Russian/Greek/Japanese cases
# in tests/test_extract.py.
MAX_NON_ASCII_LETTER_SHARE = 0.3


def _mojibake(text: str) -> int:
    """Non-letters above ASCII squeezed between two letters ("grˆşter"), and C1 controls."""
    bad = 0
    for i in range(1, len(text) - 1):
        c = text[i]
        if ord(c) < 0x80:
            continue
        control = 0x80 <= ord(c) <= 0x9F or c == "\ufffd"
        squeezed = not c.isalpha() and text[i - 1].isalpha() and text[i + 1].isalpha()
        if control or squeezed:
            bad += 1
    return bad


def _non_ascii_letter_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if ord(c) > 0x7F) / len(letters)


def _detect(content: bytes) -> str:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    sample = content[:200_000]
    western = sample.decode("cp1252", errors="replace")
    best = charset_normalizer.from_bytes(sample).best()
    codec = _codec(best.encoding) if best is not None else None
    if codec is None or codec == "cp1252":
        return "cp1252"
    if _non_ascii_letter_share(western) > MAX_NON_ASCII_LETTER_SHARE:
        return codec
    if _mojibake(western) <= _mojibake(sample.decode(codec, errors="replace")):
        return "cp1252"
    return codec


def decode_document(
    content: bytes, headers: Mapping[str, str] | None, *, markup: str = "html"
) -> tuple[str, str]:
    """Decode HTML or XML bytes: HTTP charset, BOM, in-document declaration, detection.

    Returns ``(text, how)`` with ``how`` in ``"http"``, ``"bom"``, ``"meta"``
    (``<meta charset>`` or the XML declaration) and ``"detected"``.
    """
    codec = http_charset(headers)
    how = "http"
    start = 0
    if codec is None:
        bom = _bom(content)
        if bom is not None:
            codec, start = bom
            how = "bom"
    elif (bom := _bom(content)) is not None and bom[0] == codec:
        start = bom[1]
    if codec is None:
        codec = _xml_charset(content) if markup == "xml" else _meta_charset(content)
        if codec is None and markup == "xml":
            codec = _meta_charset(content)
        how = "meta"
    if codec is None:
        codec = _detect(content)
        how = "detected"
    text = content[start:].decode(codec, errors="replace")
    return text.lstrip("\ufeff"), how


def decode_html(content: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    """Decode an HTML page: HTTP charset, BOM, ``<meta charset>``, detection; say which."""
    return decode_document(content, headers, markup="html")


# --- numbers that must survive extraction ----------------------------------

# An amount or percentage as a reader sees it: digits with %, a currency sign
# or code, or a scale word. Judgement, checked on the seed articles and the
# extraction benchmark (scripts/eval_extraction.py).
_AMOUNT_RE = re.compile(
    r"""
    (?:[$€£¥]\s?\d[\d.,]*(?:\s?(?:bn|m|k|mn|million|billion|trillion|Mio\.?|Mrd\.?))?)
    | (?:\d[\d.,]*\s?(?:%|Prozent|percent|per\ cent
         |€|\$|£|EUR|USD|GBP|CHF|Euro|Dollar
         |Mio\.?|Mrd\.?|Millionen|Milliarden|Billionen|million|billion|trillion|bn)(?![A-Za-z]))
    """,
    re.VERBOSE,
)
_DIGITS_RE = re.compile(r"\d+(?:[.,]\d+)*")

# Recall extraction is taken only when it recovers numbers the default run
# lost and does not bloat the text beyond this factor (boilerplate). Set on
# the article-extraction benchmark (181 pages): see docs/fetching.md.
RECALL_MAX_GROWTH = 2.0
# Fewer words than this is "nothing usable" (a consent wall, a row of buttons, a
# paywall stub). The shortest real article body in the extraction benchmark has 18.
MIN_WORDS = 10


def amounts(text: str) -> set[str]:
    """The amounts/percentages in ``text``, as their digit strings (``"14,8"``, ``"49"``)."""
    found: set[str] = set()
    for match in _AMOUNT_RE.finditer(text):
        for digits in _DIGITS_RE.findall(match.group(0)):
            found.add(digits.rstrip(".,"))
    return found


_INVISIBLE_TAGS = frozenset({"script", "style", "template", "noscript", "head", "title"})
_INLINE_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "bdi",
        "bdo",
        "cite",
        "code",
        "data",
        "dfn",
        "em",
        "font",
        "i",
        "kbd",
        "mark",
        "q",
        "s",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "time",
        "u",
        "var",
        "wbr",
        "ins",
        "del",
    }
)


def visible_text(tree: Any) -> str:
    """The text a reader could see: no script, style, template, noscript or hidden parts."""
    body = tree.find(".//body")
    root = body if body is not None else tree
    parts: list[str] = []
    stack: list[Any] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        if item.tail and item is not root:
            stack.append(item.tail)  # a hidden element's tail is still visible
        invisible = (
            not isinstance(item.tag, str)  # comments, processing instructions
            or item.tag in _INVISIBLE_TAGS
            or item.get("hidden") is not None
            or item.get("aria-hidden") == "true"
        )
        if invisible:
            continue
        block = item.tag not in _INLINE_TAGS
        if block:
            stack.append(" ")
        stack.extend(reversed(item))
        if item.text:
            stack.append(item.text)
        if block:
            stack.append(" ")
    # inline elements join without a space: "14<b>,8</b> Mrd." stays "14,8 Mrd."
    return " ".join("".join(parts).split())


def missing_amounts(page_text: str, extracted_text: str) -> set[str]:
    """Amounts on the page whose digits do not occur anywhere in the extracted text."""
    have = set(_DIGITS_RE.findall(extracted_text))
    have |= {d.rstrip(".,") for d in have}
    return {a for a in amounts(page_text) if a not in have}


# --- extraction -------------------------------------------------------------


# htmldate: the original publication date, with a time of day where one is given
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def _bare(tree: Any, url: str | None, *, recall: bool = False) -> Any:
    """One trafilatura run on (a copy of) ``tree``, fast mode: its backup extractors,
    readability and jusText, did not raise the benchmark F1 (docs/fetching.md). Without
    trafilatura's metadata: see ``_metadata``."""
    return trafilatura.bare_extraction(
        tree,
        url=url,
        fast=True,
        with_metadata=False,
        deduplicate=False,
        include_comments=False,
        include_tables=True,
        favor_recall=recall,
    )


def _metadata(tree: Any) -> tuple[str, str | None]:
    """Title and site name as trafilatura's ``extract_metadata`` finds them: its meta-tag
    and JSON-LD steps, then its search of the page for a title.

    The rest of ``extract_metadata`` (author, categories, tags, licence, and htmldate's
    extensive date search) cost a third of an extraction and newsdrift used none of it;
    the date is ``_published``'s, with htmldate only where the page's tags give none.
    """
    meta = examine_meta(tree)
    try:
        meta = extract_meta_json(tree, meta)
    except Exception as e:  # trafilatura guards this step the same way (bugs in its JSON-LD code)
        log.debug("JSON-LD metadata unreadable: %s", e)
    title = " ".join((meta.title or extract_title(tree) or "").split())
    site = (meta.sitename or extract_sitename(tree) or "").strip().lstrip("@")
    return title, site or None


def _text(doc: Any) -> str:
    return (doc.text or "").strip() if doc is not None else ""


# One extraction at a time in a process. libxml2 under trafilatura, lxml and htmldate
# (module-level parser objects shared by every thread) crashed a process with 16 threads
# extracting at once: "double free or corruption", twice in about a dozen benchmark
# cycles and once in 17 stress runs. The GIL made threaded extraction serial anyway; a
# pool worker has one thread, so the lock costs it nothing.
_EXTRACTING = threading.Lock()


def extract_article(html: str, url: str | None = None) -> Extracted:
    """Text and metadata of one article page (one at a time in a process, whatever the
    threads); raises ExtractionError when nothing usable."""
    with _EXTRACTING:
        return _extract_article(html, url)


def _extract_article(html: str, url: str | None) -> Extracted:
    """``extract_article``, unguarded.

    Strategies, in order, each only when the previous one lost amounts the page shows:
    trafilatura (balanced, in its fast mode: no readability/jusText comparison); trafilatura
    with ``favor_recall``; then the blocks inside the article's own container that carry
    the lost amounts are appended ("+rescue"). ``method`` names what won. Title and site
    come from trafilatura's title helpers (``_metadata``), else the page's ``<title>``;
    the date from the page's date tags, else htmldate (``_published``); the language from
    the page's declaration (``_lang``).
    """
    where = url or "<html>"
    if not html or not html.strip():
        raise ExtractionError(where, "empty page")
    # One parse serves everything: trafilatura's runs copy the tree they are given
    # (``bare_extraction``), so the page stays as parsed for newsdrift's own reads.
    # (Walking lxml.html's elements costs more than plain lxml's, visible_text 1.07 ->
    # 1.23 ms a page, but less than the second parse did.)
    page = trafilatura.load_html(html)
    if page is None:
        raise ExtractionError(where, "no HTML document found")
    text = _text(_bare(page, url))
    method = "trafilatura"
    lost = missing_amounts(visible_text(page), text)
    if not text or (lost and _lost_in_article(page, text, lost)):
        recall_text = _text(_bare(page, url, recall=True))
        if recall_text and _recall_is_better(text, recall_text, lost):
            text, method = recall_text, "trafilatura-recall"
            lost = missing_amounts(" ".join(sorted(lost)), text)
    if not text:
        raise ExtractionError(where, "no article text found")
    words = len(text.split())
    if words < MIN_WORDS:
        raise ExtractionError(
            where, f"only {words} words of text found (a consent wall, paywall or empty page?)"
        )
    if lost:
        rescued = rescue_blocks(page, text, lost)
        if rescued:
            text = "\n".join([text, *rescued])
            method += "+rescue"
    title, site = _metadata(page)
    if not title:
        title = _html_title(page)
    canonical = _canonical(page, url)
    return Extracted(
        title=title,
        text=text,
        published=_published(page, canonical or url),
        lang=_lang(page),
        site=site,
        method=method,
        canonical_url=canonical,
    )


def _lost_in_article(tree: Any, text: str, lost: set[str]) -> bool:
    """Whether some of the ``lost`` amounts lie in the article's region of the page: its
    ``<article>`` or ``<main>`` element around the block holding the kept paragraphs,
    else that block's parent (a lede or teaser just outside the block). Amounts
    elsewhere (a ticker, a sidebar, other stories' teasers) are no reason for the
    recall run, which must not bring them in anyway; it cost 9 ms a page on the ~30 %
    of pages that show such amounts."""
    container = _content_container(tree, text)
    if container is None:
        return True  # nowhere to tell the article from the rest: try
    region = next(
        (a for a in (container, *container.iterancestors()) if a.tag in ("article", "main")),
        container.getparent(),
    )
    return bool(amounts(visible_text(region if region is not None else container)) & lost)


def _recall_is_better(text: str, recall_text: str, lost: set[str]) -> bool:
    if not text:
        return True
    if len(recall_text) > RECALL_MAX_GROWTH * len(text):
        return False
    have = set(_DIGITS_RE.findall(recall_text))
    recovered = {a for a in lost if a in have}
    return bool(recovered)


_BLOCK_TAGS = frozenset(
    {
        "p",
        "li",
        "dd",
        "dt",
        "td",
        "th",
        "tr",
        "figcaption",
        "caption",
        "blockquote",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "div",
        "section",
        "pre",
    }
)
# Never rescued from. <aside> is not among them: inside the article's own
# container it is usually a fact box ("the deal in numbers"); link lists are
# caught by the link density.
_BOILERPLATE_TAGS = frozenset(
    {
        "nav",
        "footer",
        "header",
        "form",
        "button",
        "script",
        "style",
        "noscript",
        "template",
        "select",
        "menu",
    }
)
_BOILERPLATE_ATTR_RE = re.compile(
    r"(?:^|[\s_-])(?:related|teaser|promo|newsletter|advert|ads?|sponsor|share|social|comment"
    r"|sidebar|widget|banner|cookie|subscribe|paywall|recommend|more-?stories|footer|nav)"
    r"(?:$|[\s_-])",
    re.IGNORECASE,
)
# The article's container is the deepest element holding this share of the
# page paragraphs trafilatura kept (judgement; benchmark F1 unchanged by it).
CONTAINER_SHARE = 0.8
MIN_MATCH_PARAGRAPH_CHARS = 40
MAX_RESCUE_BLOCK_CHARS = 400
MAX_RESCUE_LINK_DENSITY = 0.5  # a block that is mostly link text is navigation, not article


def _text_content(element: Any) -> str:
    return "".join(element.itertext())


def _norm(text: str) -> str:
    return " ".join(text.split())


def _content_container(tree: Any, text: str) -> Any | None:
    """The deepest element that holds most of the paragraphs the extraction kept."""
    flat = _norm(text)
    matched = [
        p
        for p in tree.iter("p")
        if len(said := _norm(_text_content(p))) >= MIN_MATCH_PARAGRAPH_CHARS and said in flat
    ]
    if not matched:
        return None
    counts: dict[Any, int] = {}
    depth: dict[Any, int] = {}
    for p in matched:
        chain = list(p.iterancestors())
        for d, ancestor in enumerate(reversed(chain)):
            counts[ancestor] = counts.get(ancestor, 0) + 1
            depth[ancestor] = d
    need = CONTAINER_SHARE * len(matched)
    best = max((a for a, n in counts.items() if n >= need), key=lambda a: depth[a], default=None)
    return best


def _is_boilerplate(element: Any, stop: Any) -> bool:
    node = element
    while node is not None and node is not stop:
        if isinstance(node.tag, str):
            if node.tag in _BOILERPLATE_TAGS:
                return True
            attrs = f"{node.get('class') or ''} {node.get('id') or ''}"
            if _BOILERPLATE_ATTR_RE.search(attrs):
                return True
        node = node.getparent()
    return False


def _block_text(element: Any) -> str:
    if element.tag == "tr":
        cells = [_norm(_text_content(c)) for c in element if isinstance(c.tag, str)]
        return " | ".join(c for c in cells if c)
    return _norm(_text_content(element))


def _link_density(element: Any, block: str) -> float:
    linked = sum(len(_norm(_text_content(a))) for a in element.iter("a"))
    return linked / max(1, len(block))


def rescue_blocks(tree: Any, text: str, lost: set[str]) -> list[str]:
    """Texts of blocks inside the article container that carry amounts the extraction lost."""
    container = _content_container(tree, text)
    if container is None:
        return []
    flat = _norm(text)
    out: list[str] = []
    taken: set[Any] = set()
    for element in container.iter():
        if not isinstance(element.tag, str) or element.tag not in _BLOCK_TAGS:
            continue
        # the innermost block: no block child of its own carries the text
        if element.tag != "tr" and any(
            isinstance(c.tag, str) and c.tag in _BLOCK_TAGS for c in element
        ):
            continue
        if element.tag in ("td", "th") and element.getparent() is not None:
            element = element.getparent()
        if element in taken:
            continue
        block = _block_text(element)
        if not block or len(block) > MAX_RESCUE_BLOCK_CHARS or block in flat:
            continue
        if not (amounts(block) & lost):
            continue
        if _is_boilerplate(element, container) or _link_density(element, block) > (
            MAX_RESCUE_LINK_DENSITY
        ):
            continue
        taken.add(element)
        out.append(block)
    return out


# --- metadata ----------------------------------------------------------------


def _html_title(tree: Any) -> str:
    title = tree.find(".//title")
    return " ".join((_text_content(title) if title is not None else "").split())


def _canonical(tree: Any, url: str | None) -> str | None:
    for link in tree.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        href = (link.get("href") or "").strip()
        if "canonical" in rel and href:
            return urljoin(url, href) if url else href
    return None


_PUBLISHED_META = (
    "article:published_time",
    "og:article:published_time",
    "datepublished",
    "date",
    "dc.date",
    "dc.date.issued",
    "dcterms.created",
    "pubdate",
    "publishdate",
    "sailthru.date",
)


def _parse_iso(value: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _published(page: Any, url: str | None) -> datetime | None:
    """The publication time: the page's date tags (meta, JSON-LD, ``<time pubdate>``),
    which carry the time of day; else htmldate's search of the page (``url``: the
    canonical URL, whose path may hold the date)."""
    for meta in page.iter("meta"):
        name = (meta.get("property") or meta.get("name") or meta.get("itemprop") or "").lower()
        if name in _PUBLISHED_META:
            parsed = _parse_iso(meta.get("content") or "")
            if parsed is not None:
                return parsed
    for script in page.iter("script"):
        if (script.get("type") or "").lower() != "application/ld+json":
            continue
        found = _jsonld_date(script.text or "")
        if found is not None:
            return found
    for time_el in page.iter("time"):
        if time_el.get("pubdate") is not None or "published" in (time_el.get("class") or ""):
            parsed = _parse_iso(time_el.get("datetime") or "")
            if parsed is not None:
                return parsed
    date = find_date(
        page, url=url, extensive_search=True, original_date=True, outputformat=_DATE_FORMAT
    )
    return _parse_iso(date) if isinstance(date, str) else None


def _jsonld_date(raw: str) -> datetime | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            value = item.get("datePublished")
            if isinstance(value, str):
                parsed = _parse_iso(value)
                if parsed is not None:
                    return parsed
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
    return None


def _lang(tree: Any | None) -> str | None:
    """The page's declared language (``<html lang>``, Content-Language, og:locale)."""
    lang = None
    if tree is not None:
        root = tree.getroottree().getroot()
        lang = root.get("lang") or root.get("{http://www.w3.org/XML/1998/namespace}lang")
        if not lang:
            for meta in tree.iter("meta"):
                key = (meta.get("http-equiv") or meta.get("property") or "").lower()
                if key in ("content-language", "og:locale"):
                    lang = meta.get("content")
                    break
    if not lang:
        return None
    primary = re.split(r"[-_]", lang.strip())[0].lower()
    return primary if 2 <= len(primary) <= 3 and primary.isalpha() else None
