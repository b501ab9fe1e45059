"""JSONL input for `newsdrift ingest`: each bad line fails alone, with file:line."""

from __future__ import annotations

import json

from pipeline.ingest import read_jsonl

GOOD = {
    "id": "a1",
    "url": "https://a.example/1",
    "outlet": "a.example",
    "lang": "de",
    "published": "2025-06-13T08:00:00+00:00",
    "title": "T",
    "text": "Text",
}


def test_good_and_bad_lines() -> None:
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps({**GOOD, "lang": "fr"}),
        json.dumps({k: v for k, v in GOOD.items() if k != "text"}),
        "",
        json.dumps({**GOOD, "id": "a2", "published": "2025-06-13"}),
        json.dumps({**GOOD, "published": "yesterday"}),
    ]
    items, errors = read_jsonl(lines, "in.jsonl")
    assert [i.id for i in items] == ["a1", "a2"]
    assert items[1].published.tzinfo is not None
    assert errors[0].startswith("in.jsonl:2: invalid JSON")
    assert errors[1].startswith("in.jsonl:3: lang")
    assert errors[2] == "in.jsonl:4: needs 'text' or 'html' (a string)"
    assert errors[3].startswith("in.jsonl:7: published: not ISO 8601")
