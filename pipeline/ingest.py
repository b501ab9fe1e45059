"""Read ``newsdrift ingest --jsonl`` input: one article per line, validated."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

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


def read_jsonl(lines: Iterable[str], source: str) -> tuple[list[IngestItem], list[str]]:
    """Valid items and one message per invalid line (``file:line: what``).

    A bad line fails alone: the caller ingests the rest and reports the errors.
    """
    items: list[IngestItem] = []
    errors: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append(parse_line(line, f"{source}:{number}"))
        except InputError as e:
            errors.append(str(e))
    return items, errors
