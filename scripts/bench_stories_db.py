#!/usr/bin/env python
"""Benchmark: story assignment through the database, as the cycle does it, as the store grows.

    .venv/bin/python scripts/bench_stories_db.py                 # 1k, 10k, 100k on SQLite
    .venv/bin/python scripts/bench_stories_db.py --max 1000000   # a few GB and a long load
    .venv/bin/python scripts/bench_stories_db.py --db postgresql+psycopg://…/bench

``bench_stories.py`` times ``InMemoryIndex``; the cycle assigns through storage:
``pipeline.run.analyse_version`` reads key counts, candidates and the window size and
writes the article's story and blocking keys (``Repo``). This benchmark streams the same
synthetic articles (``bench_stories.Stream``): background articles are assigned by
``InMemoryIndex`` and bulk-inserted with their stories, fingerprints and blocking keys; at
each size, ``--sample`` further articles are stored and then analysed by
``analyse_version`` itself, in one transaction that is rolled back afterwards (so the
background stays the index's). It prints the mean CPU and wall time of
``analyse_version`` per article at each size.

Two things can grow. The story window holds ``--per-day`` × its days articles. Its size and
its keys' counts are moved from one article to the next, as ``analyse_pending`` does it
(``WindowCounter``); counted whole for every article, they grew with the window until it
was full (measured 2026-11-23 at 20,000 a day, 80,000 in the window, 100k stored: 14.5 ms
an article counted whole, about 3 ms moved; docs/stories.md). Past that, only the store's
size can add cost — a statement that scans a whole table per article (migration 0005
removed three). The verdict is about the second: it fails when the CPU time at the
largest size exceeds ``--ratio`` times that at the first size whose window is full. The
default rate, 2,000 articles a day, fills the window by 10k.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stories import Stream, _rss_mb
from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm import Session

from pipeline import stories
from pipeline.models import Outlet, StoredArticle
from pipeline.run import Analysis, analyse_version
from pipeline.settings import load_settings
from storage.repository import Store, WindowCounter
from storage.tables import ArticleRow, ArticleVersionRow, StoryKeyRow, StoryRow

SIZES = (1_000, 10_000, 100_000, 1_000_000)
FLUSH_EVERY = 5_000  # background rows written per transaction
SAMPLE_ID_BASE = 1_000_000_000  # sample articles' ids: never met by the background's


class Background:
    """Background articles: assigned in memory, written in bulk."""

    def __init__(self, store: Store, outlet_id: int) -> None:
        self.store = store
        self.outlet_id = outlet_id
        self.index = stories.InMemoryIndex()
        self.articles: list[dict[str, Any]] = []
        self.keys: list[dict[str, Any]] = []
        self.new_stories: list[dict[str, Any]] = []
        self.merged: list[dict[str, Any]] = []
        self.seen_merges = 0

    def add(self, article_id: int, fp: stories.Fingerprint) -> None:
        decision = self.index.add(article_id, fp)
        story = self.index.story_of(article_id)
        published = fp.published
        if decision.story_id is None:
            self.new_stories.append(
                {"id": story, "title": fp.title, "first_seen": published, "last_seen": published}
            )
        for from_story, into, _by in self.index.merges[self.seen_merges :]:
            self.merged.append({"from_id": from_story, "into_id": into})
        self.seen_merges = len(self.index.merges)
        self.articles.append(
            {
                "id": article_id,
                "key": f"bench:{article_id}",
                "url": f"https://bench.example/{article_id}",
                "outlet_id": self.outlet_id,
                "lang": fp.lang,
                "published": published,
                "first_seen": published,
                "title": fp.title,
                "story_id": story,
                "story_level": decision.level,
                "story_score": decision.score,
                "fingerprint": fp.to_json(),
            }
        )
        block = sorted(stories.blocking_keys(fp))  # posted as analyse_version posts them
        self.keys += [
            {"key": k, "article_id": article_id, "published": published}
            for k in stories.postings(block, stories.feature_keys(fp))
        ]
        if len(self.articles) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        with self.store.engine.begin() as conn:
            if self.new_stories:
                conn.execute(insert(StoryRow), self.new_stories)
            if self.articles:
                conn.execute(insert(ArticleRow), self.articles)
            if self.keys:
                conn.execute(insert(StoryKeyRow), self.keys)
            for m in self.merged:  # as Repo.merge_stories: articles move, the story points on
                conn.execute(
                    update(ArticleRow)
                    .where(ArticleRow.story_id == m["from_id"])
                    .values(story_id=m["into_id"])
                )
            if self.merged:
                conn.execute(
                    update(StoryRow)
                    .where(StoryRow.id == bindparam("from_id"))
                    .values(merged_into=bindparam("into_id")),
                    self.merged,
                )
        self.articles, self.keys, self.new_stories, self.merged = [], [], [], []


def time_samples(
    store: Store, analysis: Analysis, outlet_id: int, sample: list[stories.Fingerprint]
) -> tuple[float, float]:
    """Mean (CPU, wall) seconds of ``analyse_version`` over ``sample``; rolled back."""
    cpu = wall = 0.0
    windows = WindowCounter()  # as analyse_pending counts the windows
    with Session(store.engine, expire_on_commit=False) as session:
        repo = store.repo_class(session)
        for n, fp in enumerate(sample):
            aid, published = SAMPLE_ID_BASE + n, fp.published
            assert published is not None
            session.execute(
                insert(ArticleRow),
                {
                    "id": aid,
                    "key": f"sample:{aid}",
                    "url": f"https://bench.example/s/{aid}",
                    "outlet_id": outlet_id,
                    "lang": fp.lang,
                    "published": published,
                    "first_seen": published,
                    "title": fp.title,
                },
            )
            version_id = session.execute(
                insert(ArticleVersionRow).returning(ArticleVersionRow.id),
                {
                    "article_id": aid,
                    "number": 1,
                    "content_hash": fp.text_hash,
                    "title": fp.title,
                    "text": "",
                    "method": "bench",
                    "fetched_at": published,
                    "observed_at": published,
                },
            ).scalar_one()
            article = StoredArticle(
                id=aid,
                version_id=version_id,
                key=f"sample:{aid}",
                url=f"https://bench.example/s/{aid}",
                outlet="bench",
                lang=fp.lang,
                published=published,
                title=fp.title,
                text="",
            )
            prepared = ([], fp, sorted(stories.blocking_keys(fp)))
            c0, w0 = time.process_time(), time.perf_counter()
            analyse_version(repo, article, analysis, published, prepared, windows)
            cpu += time.process_time() - c0
            wall += time.perf_counter() - w0
        session.rollback()
    return cpu / len(sample), wall / len(sample)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--max", type=int, default=100_000, help="largest size (default 100k)")
    ap.add_argument("--per-day", type=int, default=2_000, help="articles per day")
    ap.add_argument("--sample", type=int, default=300, help="articles timed at each size")
    ap.add_argument("--ratio", type=float, default=3.0, help="allowed CPU(max)/CPU(first)")
    ap.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    sizes = [s for s in SIZES if s <= args.max] or [args.max]
    with tempfile.TemporaryDirectory(prefix="bench-stories-db-") as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = Store.open(url)
        with store.unit() as repo:
            outlet_id = repo.ensure_outlet(Outlet("bench", "de"))
        analysis = Analysis.from_settings(load_settings(None), use_topic=False)
        stream = Stream(args.seed, args.per_day)
        background = Background(store, outlet_id)
        window = timedelta(days=background.index.thresholds.window_days)
        print(
            f"{store.engine.url.get_backend_name()}, window {window.days} days at "
            f"{args.per_day}/day, {args.sample} timed articles at each size"
        )
        full_at = int(args.per_day * window / timedelta(days=1))
        print(
            f"{'stored':>9} {'in window':>10} {'CPU ms/article':>15} {'wall ms/article':>16} "
            f"{'RSS MB':>7} {'load s':>7}"
        )
        cpu_at: dict[int, float] = {}
        started = time.perf_counter()
        article_id = 0
        for size in sizes:
            while article_id < size:
                article_id += 1
                background.add(article_id, stream.next())
            background.flush()
            loaded = time.perf_counter() - started
            sample = [stream.next() for _ in range(args.sample)]
            cpu, wall = time_samples(store, analysis, outlet_id, sample)
            cpu_at[size] = cpu
            print(
                f"{size:>9} {min(size, full_at):>10} {cpu * 1e3:>15.2f} {wall * 1e3:>16.2f} "
                f"{_rss_mb():>7.0f} {loaded:>7.0f}",
                flush=True,
            )
        store.close()
    full = [s for s in sizes if s >= full_at]
    first, last = (full[0] if full else sizes[0]), sizes[-1]
    if first == last:
        print(f"the window fills at {full_at} articles: no two sizes with it full to compare")
        return 0
    ratio = cpu_at[last] / cpu_at[first]
    print(f"CPU ratio {last} / {first} (window full at both): {ratio:.2f} (limit {args.ratio:g})")
    if ratio > args.ratio:
        print("FAIL: per-article assignment through the database grows with the store")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
