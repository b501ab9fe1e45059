#!/usr/bin/env python
"""Benchmark: one poll cycle over 1,000 feeds on loopback, 90 % answering 304.

    .venv/bin/python scripts/bench_poll.py
    .venv/bin/python scripts/bench_poll.py --feeds 1000 --changed 0.1 --domains 50

Each feed lists ``--items`` entries, all already stored (so the cycle measures polling,
not article fetching). A first cycle fetches every feed and stores its validators; then
every feed is made due again and ``--changed`` of them get a new document (a new ETag and
lastBuildDate, same entries). The timed cycle is one ``App.run_once()``: conditional
GETs, 304s, parsing the changed feeds, finding their entries known, recording every
feed's health and next due time. The feeds are spread over ``--domains`` loopback
addresses, each its own politeness domain (default concurrency, no start gap: on
loopback the gap would only measure sleeping).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Resource, Site, base_url, cores, loopback_hosts, rss, table

GOAL_SECONDS = 5.0  # issue 9


def item_url(bound: Sequence[tuple[str, int]], feed: int, item: int) -> str:
    return f"{base_url(bound, feed)}/f{feed}/item{item}.html"


def build_routes(
    feeds: int,
    items: int,
    changed: float,
    now: datetime,
    generation: int,
    bound: Sequence[tuple[str, int]],
) -> dict[str, Resource]:
    every = max(1, round(1 / changed)) if changed > 0 else 0
    routes = {}
    for f in range(feeds):
        gen = generation if every and f % every == 0 else 0
        entries = [
            (f"Item {i} of feed {f}", item_url(bound, f, i), now - timedelta(hours=i), "summary")
            for i in range(items)
        ]
        body = rss(f"feed {f} generation {gen}", base_url(bound, f) + "/", entries)
        routes[f"/f{f}/feed.xml"] = Resource(body, "application/rss+xml", etag=f'"f{f}-g{gen}"')
    return routes


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", "--n", type=int, default=1000)
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--changed", type=float, default=0.1, help="share of feeds answering 200")
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="server delay per request")
    args = ap.parse_args(argv)

    from sqlalchemy import update

    from pipeline.app import App
    from pipeline.models import FeedConfig
    from pipeline.settings import load_settings
    from storage.tables import FeedRow

    now = datetime.now(UTC)
    builder = functools.partial(build_routes, args.feeds, args.items, args.changed, now)
    settings = load_settings(None)
    settings = dataclasses.replace(
        settings,
        fetch=dataclasses.replace(settings.fetch, allow_private=True, per_domain_min_gap_s=0.0),
    )
    with (
        Site(builder, loopback_hosts(args.domains), args.latency_ms / 1000) as site,
        tempfile.TemporaryDirectory() as tmp,
    ):
        app = App(
            db_url=f"sqlite:///{tmp}/poll.db", settings=settings, channels=[], sync_feeds=False
        )
        store = app._store()
        with store.unit() as repo:
            for f in range(args.feeds):
                url = f"{base_url(site.bound, f)}/f{f}/feed.xml"
                repo.add_feed(FeedConfig(url=url, outlet=f"outlet {f}", lang="en"), now)
        with store.unit() as repo:
            for feed in repo.feeds():
                f = int(feed.url.rsplit("/", 2)[1].removeprefix("f"))
                for i in range(args.items):
                    u = item_url(site.bound, f, i)
                    repo.add_article(
                        key=u, url=u, guid=u, outlet=feed.outlet, lang="en",
                        published=now - timedelta(hours=i), title=f"Item {i}", summary="",
                        now=now, feed_id=feed.id, status="kept",
                    )  # fmt: skip
        started = time.perf_counter()
        first = app.run_once()
        first_s = time.perf_counter() - started
        first_served = site.stats()
        with store.engine.begin() as conn:
            conn.execute(update(FeedRow).values(next_due_at=now - timedelta(minutes=1)))
        site.bump()
        site.reset_stats()
        started = time.perf_counter()
        report = app.run_once()
        elapsed = time.perf_counter() - started
        served = site.stats()
        store.close()

    print(f"cores: {cores()}  feeds: {args.feeds}  domains: {args.domains}  ", end="")
    print(f"items per feed: {args.items}  changed: {args.changed:.0%}  ", end="")
    print(f"latency: {args.latency_ms:g} ms a request")
    print(f"timed cycle: {report.summary()}")
    for e in report.errors[:5]:
        print(f"  error: {e}")
    print()
    rows = [
        ["first cycle (all 200)", first.feeds_polled, first_served["ok"], 0,
         first_served["bytes_out"] / 1e3, first_s],
        ["poll cycle (timed)", report.feeds_polled, served["ok"], served["not_modified"],
         served["bytes_out"] / 1e3, elapsed],
    ]  # fmt: skip
    print(table(["cycle", "feeds", "200", "304", "kB served", "seconds"], rows))
    print()
    verdict = "meets" if elapsed < GOAL_SECONDS else "misses"
    print(f"poll cycle: {elapsed:.2f} s ({verdict} the goal < {GOAL_SECONDS:g} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
