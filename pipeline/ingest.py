"""Read ``newsdrift ingest --jsonl`` input: one article per line, validated."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from pipeline.errors import InputError
from pipeline.models import IngestItem

REQUIRED = ("url", "outlet", "lang", "published", "title")


def parse_line(line: str, where: str) -> IngestItem:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from e
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in REQUIRED:
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise InputError(f"{where}: {key}: missing or not a non-empty string")
    if obj["lang"] not in ("de", "en"):
        raise InputError(f"{where}: lang: expected 'de' or 'en', got {obj['lang']!r}")
    text, html = obj.get("text"), obj.get("html")
    if not isinstance(text, str) and not isinstance(html, str):
        raise InputError(f"{where}: needs 'text' or 'html' (a string)")
    try:
        published = datetime.fromisoformat(obj["published"].replace("Z", "+00:00"))
    except ValueError as e:
        raise InputError(f"{where}: published: not ISO 8601: {obj['published']!r}") from e
    published = (
        published.replace(tzinfo=UTC) if published.tzinfo is None else published.astimezone(UTC)
    )
    ident = obj.get("id")
    if ident is not None and not isinstance(ident, str | int):
        raise InputError(f"{where}: id: expected a string")
    return IngestItem(
        id=str(ident) if ident is not None else None,
        url=obj["url"],
        outlet=obj["outlet"],
        lang=obj["lang"],
        published=published,
        title=obj["title"],
        text=text if isinstance(text, str) else None,
        html=html if isinstance(html, str) else None,
    )


# A line's place in a file: when it was published, its number, its first byte.
Place = tuple[datetime, int, int]


def index_jsonl(fh: BinaryIO, source: str) -> tuple[list[Place], list[str]]:
    """Every line checked, only its place kept (a file of any size is read in constant
    memory but for the index), sorted by publication time then line number; and one
    message per invalid line, including one that is not UTF-8."""
    places: list[Place] = []
    errors: list[str] = []
    offset = 0
    for number, raw in enumerate(fh, start=1):
        start, offset = offset, offset + len(raw)
        where = f"{source}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            errors.append(f"{where}: not UTF-8 text (byte {e.start + 1} of the line)")
            continue
        if not line.strip():
            continue
        try:
            item = parse_line(line, where)
        except InputError as e:
            errors.append(str(e))
            continue
        places.append((item.published, number, start))
    places.sort()
    return places, errors


def read_places(fh: BinaryIO, places: Iterable[Place], source: str) -> Iterator[IngestItem]:
    """The items at ``places`` (from ``index_jsonl`` on the same file), read again one by
    one in the index's order."""
    for _published, number, start in places:
        fh.seek(start)
        yield parse_line(fh.readline().decode("utf-8"), f"{source}:{number}")
