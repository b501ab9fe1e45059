#!/usr/bin/env python
"""Benchmark: a full newsdrift cycle against bare trafilatura, in the same run.

    .venv/bin/python scripts/bench_pipeline.py \
        --corpus ../shared/corpora/article-extraction-benchmark
    .venv/bin/python scripts/bench_pipeline.py --corpus PATH --articles 5000   # the memory line

The 181 pages of the extraction benchmark are repeated to ``--articles`` articles under
distinct URLs: repetition r is outlet r (so the per-outlet content dedupe keeps every
copy, and the copies of one page form a multi-outlet story), spread over ``--domains``
loopback addresses, with RSS feeds of ``--per-feed`` entries each. Pages are served
gzip-encoded from a child process; their ``rel=canonical`` links are neutralised (they
point at the original sites and would make every copy the same article).

One ``App.run_once()`` (poll, fetch, extract, store, figures, stories, drift, alerts) runs
into a fresh SQLite database in a fresh process (so its peak RSS is the cycle's own);
then bare ``trafilatura.extract`` runs over the same HTML in a process pool of the same
size, and so does ``pipeline.extract.extract_article`` (newsdrift's extractor: trafilatura
plus a recall pass when amounts were lost), to separate extractor cost from pipeline cost.
The ratio is pipeline articles/s over bare trafilatura articles/s (goal >= 0.85).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gzip
import multiprocessing as mp
import re
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (
    ROBOTS,
    ChildrenPeakRss,
    Resource,
    Site,
    base_url,
    cores,
    load_corpus,
    loopback_hosts,
    peak_rss_mb,
    rss,
    table,
)

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared/corpora/article-extraction-benchmark"
GOAL_RATIO = 0.85  # issue 9
_CANONICAL = re.compile(rb"""rel\s*=\s*(["']?)canonical\1""", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Layout:
    articles: int
    pages: int
    per_feed: int
    now: datetime

    def page_of(self, i: int) -> int:
        return i % self.pages

    def outlet_of(self, i: int) -> int:
        return i // self.pages

    def outlets(self) -> int:
        return (self.articles + self.pages - 1) // self.pages

    def article_path(self, i: int) -> str:
        return f"/o{self.outlet_of(i)}/a{self.page_of(i)}.html"

    def feeds(self) -> list[tuple[int, int, list[int]]]:
        """(outlet, feed number, article indexes) for every feed."""
        out = []
        for o in range(self.outlets()):
            idx = [i for i in range(o * self.pages, min(self.articles, (o + 1) * self.pages))]
            for k in range(0, len(idx), self.per_feed):
                out.append((o, k // self.per_feed, idx[k : k + self.per_feed]))
        return out


def feed_path(outlet: int, k: int) -> str:
    return f"/o{outlet}/feed{k}.xml"


def build_routes(
    corpus: Path, layout: Layout, generation: int, bound: Sequence[tuple[str, int]]
) -> dict[str, Resource]:
    pages = load_corpus(corpus)
    bodies = [gzip.compress(_CANONICAL.sub(b'rel="x-canonical"', html), 6) for _, html in pages]
    routes: dict[str, Resource] = {"/robots.txt": ROBOTS}
    for i in range(layout.articles):
        routes[layout.article_path(i)] = Resource(
            bodies[layout.page_of(i)], "text/html; charset=utf-8", gzip=True
        )
    for o, k, idx in layout.feeds():
        site = base_url(bound, o)
        items = [
            (
                f"Article {layout.page_of(i)} of outlet {o}",
                site + layout.article_path(i),
                layout.now - timedelta(minutes=layout.page_of(i)),
                "",
            )
            for i in idx
        ]
        routes[feed_path(o, k)] = Resource(
            rss(f"outlet {o}", site + "/", items), "application/rss+xml"
        )
    return routes


def run_cycle_in_child(
    db: str, feeds: list[tuple[str, str]], per_feed: int, refetch: bool = False
) -> dict[str, Any]:
    """One full cycle in this (fresh) process; returns timings and peak RSS. ``refetch``:
    then a second cycle with every stored article due for a re-fetch, without the
    validators of its first fetch (the worst case: every page comes back and is
    extracted again), timed apart as ``refetch_*``."""
    from sqlalchemy import update

    from pipeline.app import App
    from pipeline.models import FeedConfig
    from pipeline.settings import load_settings

    settings = load_settings(None)
    settings = dataclasses.replace(
        settings,
        fetch=dataclasses.replace(
            settings.fetch,
            allow_private=True,
            per_domain_min_gap_s=0.0,
            per_domain_concurrency=8,
            max_articles_per_feed=per_feed,
        ),
    )
    app = App(db_url=f"sqlite:///{db}", settings=settings, channels=[], sync_feeds=False)
    now = datetime.now(UTC)
    with app._store().unit() as repo:
        for url, outlet in feeds:
            repo.add_feed(FeedConfig(url=url, outlet=outlet, lang="en", on_topic=True), now)
    cpu_self, cpu_children = (
        cpu_seconds(resource.RUSAGE_SELF),
        cpu_seconds(resource.RUSAGE_CHILDREN),
    )
    started = time.perf_counter()
    with ChildrenPeakRss() as workers_rss:
        report = app.run_once()
    elapsed = time.perf_counter() - started
    cpu_self = cpu_seconds(resource.RUSAGE_SELF) - cpu_self
    cpu_children = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_children
    counts = app.status()
    again: dict[str, Any] = {}
    if refetch:
        from sqlalchemy import func, or_, select

        from storage.tables import ArticleRow

        mark = datetime.now(UTC)
        with app._store().unit() as repo:
            repo.s.execute(
                update(ArticleRow)
                .where(ArticleRow.status == "kept")
                .values(next_refetch_at=mark, etag=None, last_modified=None)
            )
        cpu_self2, cpu_children2 = (
            cpu_seconds(resource.RUSAGE_SELF),
            cpu_seconds(resource.RUSAGE_CHILDREN),
        )
        started = time.perf_counter()
        with workers_rss:
            second = app.run_once()
        refetch_elapsed = time.perf_counter() - started
        with app._store().unit() as repo:
            moved = or_(ArticleRow.next_refetch_at.is_(None), ArticleRow.next_refetch_at > mark)
            done = repo.s.scalar(select(func.count()).where(ArticleRow.status == "kept", moved))
        again = {
            "refetched": int(done or 0),
            "refetch_elapsed": refetch_elapsed,
            "refetch_cpu_main": cpu_seconds(resource.RUSAGE_SELF) - cpu_self2,
            "refetch_cpu_workers": cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_children2,
            "refetch_summary": second.summary(),
        }
    return {
        **again,
        "elapsed": elapsed,
        "cpu_main": cpu_self,
        "cpu_workers": cpu_children,
        "summary": report.summary(),
        "new": report.articles_new,
        "failed": report.articles_failed + report.articles_partial,
        "stories": counts.get("stories"),
        "rss_main": peak_rss_mb(resource.RUSAGE_SELF),
        "rss_children": workers_rss.mb,
        "errors": report.errors[:5],
    }


def _bare(html: str) -> int:
    import trafilatura

    text = trafilatura.extract(
        html, deduplicate=False, include_comments=False, include_tables=True, with_metadata=True
    )
    return len(text or "")


def _newsdrift(html: str) -> int:
    from pipeline.errors import ParseError
    from pipeline.extract import extract_article

    try:
        return len(extract_article(html, "http://127.0.0.1/a.html").text)
    except ParseError:
        return 0


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def pool_rate(fn: Any, htmls: list[str], workers: int) -> tuple[float, float]:
    """Articles per second of ``fn`` over ``htmls`` in a pool of ``workers`` processes,
    and the CPU seconds the workers used (imports included: they are reaped only at the end).
    """
    before = cpu_seconds(resource.RUSAGE_CHILDREN)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(fn, htmls[:workers], chunksize=1))  # warm the workers' imports
        started = time.perf_counter()
        list(pool.map(fn, htmls, chunksize=4))
        rate = len(htmls) / (time.perf_counter() - started)
    return rate, cpu_seconds(resource.RUSAGE_CHILDREN) - before


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--articles", "--n", type=int, default=2000)
    ap.add_argument("--per-feed", type=int, default=50)
    ap.add_argument("--domains", type=int, default=4)
    ap.add_argument("--workers", type=int, default=cores(), help="baseline pool size")
    ap.add_argument("--no-baseline", action="store_true", help="time the cycle only")
    ap.add_argument("--db", type=Path, help="keep the database here (default: a temp dir)")
    ap.add_argument(
        "--refetch",
        action="store_true",
        help="then time a second cycle that re-fetches every article (no validators)",
    )
    args = ap.parse_args(argv)

    pages = load_corpus(args.corpus)
    layout = Layout(args.articles, len(pages), args.per_feed, datetime.now(UTC))
    builder = functools.partial(build_routes, args.corpus, layout)
    with Site(builder, loopback_hosts(args.domains)) as site, tempfile.TemporaryDirectory() as tmp:
        feeds = [
            (base_url(site.bound, o) + feed_path(o, k), f"outlet {o:02d}")
            for o, k, _ in layout.feeds()
        ]
        db = str(args.db or Path(tmp) / "bench.db")
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as one:
            cycle = one.submit(run_cycle_in_child, db, feeds, args.per_feed, args.refetch).result()
        served = site.stats()

    rate_pipeline = args.articles / cycle["elapsed"]
    cpu_cycle = cycle["cpu_main"] + cycle["cpu_workers"]
    rows: list[list[object]] = [
        [
            "newsdrift cycle (App.run_once)",
            args.articles,
            cycle["elapsed"],
            rate_pipeline,
            "",
            cpu_cycle,
            cpu_cycle / args.articles * 1000,
        ]
    ]
    if args.refetch:
        cpu_again = cycle["refetch_cpu_main"] + cycle["refetch_cpu_workers"]
        rows.append(
            [
                "re-fetch cycle (every article due)",
                cycle["refetched"],
                cycle["refetch_elapsed"],
                cycle["refetched"] / cycle["refetch_elapsed"],
                "",
                cpu_again,
                cpu_again / max(1, cycle["refetched"]) * 1000,
            ]
        )
    if not args.no_baseline:
        from pipeline.extract import decode_html

        decoded = [decode_html(html, {})[0] for _, html in pages]
        htmls = [decoded[layout.page_of(i)] for i in range(args.articles)]
        rate_bare, cpu_bare = pool_rate(_bare, htmls, args.workers)
        rate_nd, cpu_nd = pool_rate(_newsdrift, htmls, args.workers)
        for name, rate, cpu in (
            (f"pipeline.extract.extract_article x{args.workers}", rate_nd, cpu_nd),
            (f"bare trafilatura.extract x{args.workers}", rate_bare, cpu_bare),
        ):
            rows.append(
                [
                    name,
                    args.articles,
                    args.articles / rate,
                    rate,
                    f"{rate_pipeline / rate:.2f}",
                    cpu,
                    cpu / args.articles * 1000,
                ]
            )
    print(f"cores: {cores()}  articles: {args.articles}  feeds: {len(feeds)}  ", end="")
    print(f"outlets: {layout.outlets()}  domains: {args.domains}")
    print(f"cycle: {cycle['summary']}  stories={cycle['stories']}")
    if args.refetch:
        print(f"re-fetch cycle: {cycle['refetch_summary']}")
    print(
        f"served: {served['requests']:,} requests, {served['bytes_out'] / 1e6:,.1f} MB "
        f"(gzip), {served['missing']} not found"
    )
    for e in cycle["errors"]:
        print(f"  error: {e}")
    print()
    headers = ["run", "articles", "seconds", "articles/s", "pipeline ratio", "CPU s", "CPU ms/art"]
    print(table(headers, rows))
    print(
        f"cycle CPU: main process {cycle['cpu_main']:.1f} s (storing, analysis, HTTP), "
        f"worker processes {cycle['cpu_workers']:.1f} s"
    )
    print()
    print(
        f"peak RSS of the cycle: main process {cycle['rss_main']:,.0f} MB, "
        f"largest worker {cycle['rss_children']:,.0f} MB"
    )
    if not args.no_baseline:
        ratio = rate_pipeline / rate_bare
        verdict = "meets" if ratio >= GOAL_RATIO else "misses"
        print(f"ratio pipeline/bare trafilatura = {ratio:.2f} ({verdict} the goal >= {GOAL_RATIO})")
        if args.refetch:
            again = cycle["refetched"] / cycle["refetch_elapsed"] / rate_bare
            print(f"ratio re-fetch cycle/bare trafilatura = {again:.2f}")
        print(
            f"CPU ratio bare/pipeline = {cpu_bare / cpu_cycle:.2f} (what the wall ratio would be "
        )
        print("  on idle cores with perfect overlap; the machine's load skews wall times)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
