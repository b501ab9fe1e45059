"""A general feed of 50 entries on loopback: clearly off-topic entries are never fetched,
every decision is recorded with its terms, and stories and figures use kept articles only."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from pipeline.app import App
from pipeline.models import FeedConfig
from pipeline.settings import load_settings
from pipeline.topic import decide_entry, load_topic
from tests.pg import DbFactory

DATA = Path(__file__).resolve().parent / "data" / "topic" / "dev.en.jsonl"
T0 = datetime(2025, 6, 13, 8, tzinfo=UTC)


def entries() -> list[dict[str, Any]]:
    rows = [
        json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    # A general feed: mostly off topic, some AI-industry news among it.
    on = [r for r in rows if r["keep"]][:15]
    off = [r for r in rows if not r["keep"]][:35]
    return sorted(on + off, key=lambda r: r["id"])


def page(item: dict[str, Any]) -> str:
    body = "".join(f"<p>{escape(item['summary'])} {escape(item['title'])}.</p>" for _ in range(3))
    return (
        f"<!doctype html><html lang='en'><head><title>{escape(item['title'])}</title></head><body>"
        f"<nav>Home | World | Business</nav><article><h1>{escape(item['title'])}</h1>{body}</article>"
        "<footer>© General Daily</footer></body></html>"
    )


class _Site(BaseHTTPRequestHandler):
    items: list[dict[str, Any]]
    requested: list[str]
    base: list[str]

    def do_GET(self) -> None:
        self.requested.append(self.path)
        if self.path == "/robots.txt":
            return self._send(200, "text/plain", "User-agent: *\nAllow: /\n")
        if self.path == "/feed.xml":
            items = "".join(
                f"<item><title>{escape(it['title'])}</title><link>{self.base[0]}/a/{it['id']}</link>"
                f"<guid>{it['id']}</guid><description>{escape(it['summary'])}</description>"
                f"<pubDate>{format_datetime(T0 - timedelta(minutes=i))}</pubDate></item>"
                for i, it in enumerate(self.items)
            )
            return self._send(
                200,
                "application/rss+xml",
                f"<rss version='2.0'><channel><title>General Daily</title>{items}</channel></rss>",
            )
        ident = self.path.removeprefix("/a/")
        match = [it for it in self.items if it["id"] == ident]
        if not match:
            return self._send(404, "text/plain", "not found")
        return self._send(200, "text/html; charset=utf-8", page(match[0]))

    def _send(self, status: int, ctype: str, text: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[str, list[str], list[dict[str, Any]]]]:
    items, requested, base = entries(), [], [""]
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0),
        type("S", (_Site,), {"items": items, "requested": requested, "base": base}),
    )
    base[0] = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield base[0], requested, items
    server.shutdown()
    server.server_close()


def test_off_topic_entries_are_not_fetched(
    tmp_path: Path, site: tuple[str, list[str], list[dict[str, Any]]], new_db: DbFactory
) -> None:
    db_url = new_db()
    base, requested, items = site
    settings = load_settings(None)
    settings = dataclasses.replace(
        settings,
        fetch=dataclasses.replace(settings.fetch, allow_private=True, per_domain_min_gap_s=0.0),
        alerts=dataclasses.replace(
            settings.alerts, console=False, log_file=str(tmp_path / "a.log")
        ),
    )
    app = App(db_url=db_url, settings=settings, sync_feeds=False)
    with app._store().unit() as repo:
        repo.add_feed(FeedConfig(url=f"{base}/feed.xml", outlet="General Daily", lang="en"), T0)
    report = app.run_once()
    assert report.feeds_failed == 0

    topic = load_topic()
    dropped_early = {
        it["id"]
        for it in items
        if decide_entry(topic, it["title"], it["summary"], "en").keep is False
    }
    fetched = {p.removeprefix("/a/") for p in requested if p.startswith("/a/")}
    assert len(dropped_early) >= 20
    assert not dropped_early & fetched  # no request for a clearly off-topic entry
    assert fetched == {it["id"] for it in items} - dropped_early

    records = {a.key.rsplit("/", 1)[1]: a for a in app.articles()}
    assert set(records) == {it["id"] for it in items}  # every entry seen is on record
    skipped = {k: a for k, a in records.items() if a.status == "skipped"}
    assert dropped_early <= set(skipped)
    for k in dropped_early:
        assert skipped[k].topic_stage == "entry" and skipped[k].topic_score is not None
    # Stories hold kept articles only.
    in_stories = {key.rsplit("/", 1)[1] for s in app.stories() for key in s.articles}
    assert in_stories and not in_stories & set(skipped)
    # What was dropped is listed with the terms that decided.
    from click.testing import CliRunner

    from pipeline.cli import main

    out = CliRunner().invoke(
        main,
        ["--db", db_url, "articles", "--skipped", "--format", "json"],
    )
    rows = json.loads(out.output)
    assert {r["article"].rsplit("/", 1)[1] for r in rows} == set(skipped)
    assert all(r["stage"] in ("entry", "text") for r in rows)
