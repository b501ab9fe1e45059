#!/usr/bin/env python
"""Articles per second with 1 and 2 `newsdrift worker` processes on one PostgreSQL.

    .venv/bin/python scripts/bench_workers.py                # 500 feeds on 20 sites
    .venv/bin/python scripts/bench_workers.py --sites 10 --feeds-per-site 20

Starts a throwaway PostgreSQL cluster (tests/pg.py; run scripts/install-postgres
first), serves the synthetic outlets of tests/test_workers_pg.py on 127.0.0.1-N,
and for each worker count: a fresh database, the feeds, N workers started at once;
the clock stops when every feed was polled, every version analysed, every job and
delivery done. Prints articles/s from launch (worker start-up included) and from the
first stored article, and the ratio of 2 workers to 1 on the same machine and run.
Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.tasks import build_app, ensure_schema  # noqa: E402
from storage.repository import Store  # noqa: E402
from tests import test_workers_pg as site_mod  # noqa: E402
from tests.pg import PgCluster  # noqa: E402

# Give up on one run after this long (seconds).
RUN_TIMEOUT_S = 600.0


def one_run(
    cluster: PgCluster, workers: int, sites: int, feeds_per_site: int, tmp: Path
) -> tuple[int, float, float, float]:
    """(articles, seconds from launch, seconds from the first stored article, CPU seconds
    of the worker processes)."""
    db = cluster.create_database(f"bench_{workers}")
    cfg = tmp / f"cfg{workers}"
    site_mod.write_config(cfg, tmp / f"alerts{workers}.log")
    store = Store.open(db)
    ensure_schema(build_app(db), store)  # before polling the job table
    start = datetime.now(UTC)
    with site_mod.NewsSite(start=start) as site:
        with store.unit() as repo:
            for feed in site.feeds(sites, feeds_per_site):
                repo.add_feed(feed, start)
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        procs = [
            site_mod.start_worker(db, cfg, tmp / f"bench{workers}-{i}.log") for i in range(workers)
        ]
        try:
            while not site_mod.finished(store, start):
                if time.monotonic() - t0 > RUN_TIMEOUT_S:
                    raise SystemExit(f"{workers} worker(s): not finished in {RUN_TIMEOUT_S:.0f}s")
                time.sleep(0.2)
            elapsed = time.monotonic() - t0
            end_wall = datetime.now(UTC)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    articles = int(site_mod.scalar(store, "SELECT count(*) FROM articles"))
    first = site_mod.scalar(store, "SELECT min(first_seen) FROM articles")
    steady = (end_wall - first).total_seconds()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    store.close()
    return articles, elapsed, steady, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sites", type=int, default=site_mod.SITES)
    ap.add_argument("--feeds-per-site", type=int, default=site_mod.FEEDS_PER_SITE)
    args = ap.parse_args()
    if args.sites != site_mod.SITES or args.feeds_per_site != site_mod.FEEDS_PER_SITE:
        site_mod.SITES = args.sites
        site_mod.FEEDS_PER_SITE = args.feeds_per_site
    results = {}
    loads = {}
    with tempfile.TemporaryDirectory() as d, PgCluster.start() as cluster:
        for n in (1, 2):
            loads[n] = os.getloadavg()[0]
            results[n] = one_run(cluster, n, args.sites, args.feeds_per_site, Path(d))
    print(f"machine: {os.cpu_count()} cores; {args.sites} sites x {args.feeds_per_site} feeds")
    print(
        f"{'workers':>8} {'articles':>9} {'seconds':>8} {'art/s':>7} {'art/s after start-up':>21}"
        f" {'worker CPU-s/article':>21} {'load before':>12}"
    )
    for n, (articles, elapsed, steady, cpu) in results.items():
        print(
            f"{n:>8} {articles:>9} {elapsed:>8.1f} {articles / elapsed:>7.1f} "
            f"{articles / steady:>21.1f} {cpu / articles:>21.3f} {loads[n]:>12.1f}"
        )
    (a1, e1, s1, _), (a2, e2, s2, _) = results[1], results[2]
    print(
        f"ratio 2 workers / 1 worker: {(a2 / e2) / (a1 / e1):.2f} "
        f"(after start-up: {(a2 / s2) / (a1 / s1):.2f})"
    )
    print(
        "(the ratio is bounded by the idle cores: a load above the core count before a "
        "run means other processes compete for the CPU)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
