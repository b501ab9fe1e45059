"""The repository on a real SQLite file: migrations, idempotent writes, the lease."""

from __future__ import annotations

import math
import multiprocessing
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import LeaseHeld, StorageError
from pipeline.feeds import content_hash
from pipeline.models import Alert, FeedConfig, Figure, Qualifier
from storage.repository import Repo, Store, WindowCounter, _analysed_rows, host_id, lease_holder
from tests.pg import DbFactory

T = datetime(2025, 6, 13, 8, tzinfo=UTC)


@pytest.fixture
def store(new_db: DbFactory) -> Store:
    s = Store.open(new_db())
    yield s
    s.close()


def test_migrations_create_schema_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    Store.open(f"sqlite:///{db}").close()
    Store.open(f"sqlite:///{db}").close()  # a second upgrade is a no-op
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert {
        "outlets",
        "feeds",
        "articles",
        "article_versions",
        "stories",
        "figures",
        "alerts",
        "deliveries",
        "leases",
        "alembic_version",
    } <= tables
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    con.close()


def _open_at_the_barrier(url: str, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        Store.open(url).close()
    except StorageError as e:
        errors.put(str(e))


def test_two_processes_opening_a_new_database_at_once_both_open_it(tmp_path: Path) -> None:
    """Two cron runs starting together on a new file both switch it to WAL; SQLite
    answered one of them "database is locked" at once (about one round in four here)."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for i in range(25):
        url = f"sqlite:///{tmp_path / f'new{i}.db'}"
        barrier = ctx.Barrier(2)
        procs = [
            ctx.Process(target=_open_at_the_barrier, args=(url, barrier, errors)) for _ in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0]
        assert errors.empty(), errors.get()


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match="invalid database URL"):
        Store.open("not a url")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:secret@h/db", r"unsupported database 'mysql' in mysql://u:\*\*\*@h/db"),
        ("foo://bar", "newsdrift stores to SQLite .* or PostgreSQL"),
        ("postgresql+nodriver://h/db", "cannot use database URL postgresql\\+nodriver://h/db"),
    ],
)
def test_unsupported_url_is_a_clear_error(url: str, message: str) -> None:
    """An engine SQLAlchemy cannot load was a traceback (NoSuchModuleError, or the
    ImportError of a driver not installed); a password stays hidden in the message."""
    with pytest.raises(StorageError, match=message) as raised:
        Store.open(url)
    assert "secret" not in str(raised.value)


def test_feed_add_is_idempotent(store: Store) -> None:
    feed = FeedConfig(url="https://a.example/feed", outlet="A", lang="de")
    with store.unit() as repo:
        assert repo.add_feed(feed, T) is True
        assert repo.add_feed(feed, T) is False
    with store.unit() as repo:
        [f] = repo.feeds(due_at=T)
        assert f.status == "new" and f.outlet == "A"
        assert repo.feeds(due_at=T - timedelta(minutes=1)) == []


def test_articles_and_versions_are_keyed(store: Store) -> None:
    with store.unit() as repo:
        aid, created = repo.add_article(
            key="k1",
            url="https://a.example/1",
            outlet="A",
            lang="de",
            published=T,
            title="t",
            now=T,
        )
        assert created
        assert repo.add_article(
            key="k1",
            url="https://a.example/1",
            outlet="A",
            lang="de",
            published=T,
            title="t",
            now=T,
        ) == (aid, False)
        v1 = repo.add_version(
            aid,
            title="t",
            text="eins  zwei",
            method="m",
            fetched_at=T,
            content_hash=content_hash("eins  zwei"),
        )
        assert v1 is not None
        # Whitespace-only changes are not a new version.
        assert (
            repo.add_version(
                aid,
                title="t",
                text="eins zwei",
                method="m",
                fetched_at=T,
                content_hash=content_hash("eins zwei"),
            )
            is None
        )
        v2 = repo.add_version(
            aid,
            title="t",
            text="eins drei",
            method="m",
            fetched_at=T,
            content_hash=content_hash("eins drei"),
        )
        assert v2 is not None and v2 != v1
    with store.unit() as repo:
        assert [p.version_id for p in repo.pending_versions()] == [v1, v2]


def test_a_failed_unit_rolls_back_alone(store: Store) -> None:
    with pytest.raises(RuntimeError), store.unit() as repo:
        repo.add_article(key="k1", url="u", outlet="A", lang="de", published=T, title="t", now=T)
        raise RuntimeError("boom")
    with store.unit() as repo:
        assert repo.articles() == []


def test_figures_round_trip_with_open_interval(store: Store) -> None:
    fig = Figure(
        value=29e9,
        unit="USD",
        qualifier=Qualifier.AT_LEAST,
        low=29e9,
        high=math.inf,
        metric="valuation",
        subject="Scale AI",
        period=None,
        quote="über 29 Milliarden Dollar",
        start=3,
        end=28,
    )
    with store.unit() as repo:
        aid, _ = repo.add_article(
            key="k", url="u", outlet="A", lang="de", published=T, title="t", now=T
        )
        vid = repo.add_version(
            aid, title="t", text="x", method="m", fetched_at=T, content_hash=content_hash("x")
        )
        assert vid is not None
        sid = repo.create_story("t", T)
        repo.attach(
            aid, sid, level="new", score=0, fingerprint={}, keys=["n:scale ai"], published=T
        )
        assert repo.save_figures(vid, [fig, fig]) == 1
        assert repo.save_figures(vid, [fig]) == 1  # re-analysis replaces, never duplicates
    with store.unit() as repo:
        [o] = repo.observations()
        assert o.high == math.inf and o.qualifier is Qualifier.AT_LEAST and o.article == "k"
        assert repo.figures_of_article(aid) == [fig]


def test_story_merge_is_recorded_and_followed(store: Store) -> None:
    with store.unit() as repo:
        a, _ = repo.add_article(
            key="a", url="a", outlet="A", lang="de", published=T, title="a", now=T
        )
        b, _ = repo.add_article(
            key="b", url="b", outlet="B", lang="de", published=T, title="b", now=T
        )
        s1, s2 = repo.create_story("a", T), repo.create_story("b", T)
        repo.attach(a, s1, level="new", score=0, fingerprint={"x": 1}, keys=["k"], published=T)
        repo.attach(b, s2, level="new", score=0, fingerprint={"x": 2}, keys=["k"], published=T)
        repo.merge_stories(s2, s1, b, T)
        repo.merge_stories(s2, s1, b, T)
    with store.unit() as repo:
        assert repo.live_story(s2) == s1
        [story] = repo.stories()
        assert story.id == s1 and set(story.articles) == {"a", "b"}
        cands = repo.candidates(["k"], T - timedelta(days=1), min_shared=1)
        assert {c[1] for c in cands} == {s1}


def test_alert_outbox_is_keyed_and_tracks_deliveries(store: Store) -> None:
    alert = Alert(
        key="1|s|deal_value||disagreement", kind="disagreement", title="t", body="b", created_at=T
    )
    with store.unit() as repo:
        assert repo.add_alert(alert, ["console", "mail"]) is True
        assert repo.add_alert(alert, ["console", "mail"]) is False
    with store.unit() as repo:
        pending = repo.pending_deliveries(T)
        assert [p.channel for p in pending] == ["console", "mail"]
        repo.record_delivery(pending[0].id, ok=True, now=T)
        repo.record_delivery(
            pending[1].id, ok=False, now=T, error="down", retry_at=T + timedelta(minutes=2)
        )
    with store.unit() as repo:
        assert repo.pending_deliveries(T) == []
        assert [p.channel for p in repo.pending_deliveries(T + timedelta(minutes=3))] == ["mail"]
        [rec] = repo.alerts()
        assert rec.status == "pending"


def test_lease_excludes_a_second_holder_until_it_expires(store: Store) -> None:
    ttl = timedelta(minutes=30)
    with store.unit() as repo:
        repo.acquire_lease("cycle", "host:1", T, ttl)
    with pytest.raises(LeaseHeld, match="host:1"), store.unit() as repo:
        repo.acquire_lease("cycle", "host:2", T + timedelta(minutes=1), ttl)
    with store.unit() as repo:
        repo.acquire_lease("cycle", "host:2", T + ttl + timedelta(seconds=1), ttl)  # expired
        repo.release_lease("cycle", "host:2")
    with store.unit() as repo:
        repo.acquire_lease("cycle", "host:3", T, ttl)


def test_lease_of_a_dead_local_process_is_taken_over_at_once(store: Store) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    holder = f"{host_id()}:{dead.stdout.strip()}:abcd"
    with store.unit() as repo:
        repo.acquire_lease("cycle", holder, T, timedelta(minutes=30))
    with store.unit() as repo:
        repo.acquire_lease("cycle", lease_holder(), T + timedelta(minutes=1), timedelta(minutes=30))
    with pytest.raises(LeaseHeld), store.unit() as repo:  # a live local holder still excludes
        repo.acquire_lease(
            "cycle", f"{socket.gethostname()}:1", T + timedelta(minutes=2), timedelta(minutes=30)
        )


def test_head_revision_is_the_newest_migration() -> None:
    """``HEAD_REVISION`` lets a current database open without Alembic: it must name the
    newest migration script."""
    from alembic.script import ScriptDirectory

    from storage.db import HEAD_REVISION, MIGRATIONS

    assert ScriptDirectory(str(MIGRATIONS)).get_current_head() == HEAD_REVISION


def test_a_current_database_opens_without_importing_alembic(new_db: DbFactory) -> None:
    """Alembic is imported to migrate only: a command on a current database (``status``, a
    cron cycle) does not pay for its import."""
    import subprocess
    import sys

    from storage.db import HEAD_REVISION, current_revision

    url = new_db("current")
    Store.open(url).close()  # creates the schema: Alembic runs here
    probe = (
        "import sys; from storage.repository import Store; "
        f"Store.open({url!r}).close(); print('alembic' in sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, check=True
    )
    assert out.stdout.strip() == "False"
    s = Store.open(url)
    assert current_revision(s.engine) == HEAD_REVISION
    s.close()


def test_migrations_match_the_models(new_db: DbFactory) -> None:
    """The schema the migrations build is the schema the code declares."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from storage.tables import Base

    s = Store.open(new_db("m"))
    with s.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    s.close()
    assert diff == []


@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_per_article_lookups_use_indexes_not_table_scans(tmp_path: Path) -> None:
    """Storing and attaching an article must not get slower as the database grows: every
    statement of the per-article path is planned by SQLite with an index (migration 0005
    added the three that scanned ``story_keys``, ``article_versions`` and ``articles``)."""
    from sqlalchemy import event

    store = Store.open(f"sqlite:///{tmp_path / 'plan.db'}")
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not executemany:
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    with store.unit() as repo:
        aid, _ = repo.add_article(
            key="k", url="https://a.example/x", outlet="A", lang="de", published=T, title="t", now=T
        )
        repo.add_version(
            aid, title="t", text="x", method="m", fetched_at=T, content_hash=content_hash("x")
        )
        repo.find_by_content("A", content_hash("x"))
        repo.find_article(keys=["https://a.example/x"])
        sid = repo.create_story("t", T)
        repo.attach(aid, sid, level="new", score=0.0, fingerprint={}, keys=["a", "b"], published=T)
        counts = repo.key_counts(["a", "b"], T - timedelta(days=4), T)
        repo.candidates(["a", "b"], T - timedelta(days=4), until=T, counts=counts, min_shared=1)
        repo.window_size(T - timedelta(days=4), T)
        moved = (T - timedelta(days=4), T), (T - timedelta(days=3), T + timedelta(days=1))
        repo.window_shift(*moved)
        repo.key_edges(*moved)
    event.remove(store.engine, "before_cursor_execute", capture)
    raw = store.engine.raw_connection()
    try:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        scans = []
        for statement, params in seen:
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            plan = raw.cursor().execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
            # "SCAN t" and "SCAN t USING COVERING INDEX i" read a whole table or index; a scan
            # of a subquery's own rows ("SCAN p0", "SCAN anon_1") is not one
            scans += [
                (row[-1], statement)
                for row in plan
                if row[-1].startswith("SCAN ") and row[-1].split()[1] in tables
            ]
    finally:
        raw.close()
        store.close()
    assert len(seen) > 10
    assert scans == [], "\n".join(f"{plan}: {sql}" for plan, sql in scans)


def test_candidates_of_an_article_with_hundreds_of_keys(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of tables has hundreds of numbers, each a blocking key: more branches than
    SQLite allows in one compound SELECT. Such an article takes the window-function
    statement, which ranks as the branch statement does."""
    from storage import repository

    numbers = [f"x:n:{i}" for i in range(600)]
    since = T - timedelta(days=4)
    with store.unit() as repo:
        sid = repo.create_story("t", T)
        ids = []
        for i, keys in enumerate([numbers[:400], numbers[:5], numbers[3:40], ["e:other"]]):
            url = f"https://a.example/{i}"
            aid, _ = repo.add_article(
                key=url, url=url, outlet="A", lang="en", published=T, title="t", now=T
            )
            repo.attach(aid, sid, level="new", score=0.0, fingerprint={}, keys=keys, published=T)
            ids.append(aid)
        found = [aid for aid, _s, _f in repo.candidates(numbers, since, until=T)]
        assert found == [ids[0], ids[2], ids[1]]  # 400, 37 and 5 keys shared
        # both statements rank alike where both apply
        few = numbers[:40]
        branches = repo.candidates(few, since, until=T, min_shared=1)
        monkeypatch.setattr(repository, "_MAX_BRANCHES", 8)
        assert repo.candidates(few, since, until=T, min_shared=1) == branches
        assert [aid for aid, _s, _f in branches] == [ids[0], ids[2], ids[1]]


def test_candidates_read_each_keys_newest_postings_from_the_covering_index(
    tmp_path: Path,
) -> None:
    """Each key's branch of the ranking statement reads its newest postings in index order
    from (key, published, article_id) alone: no table look-up, no sort (migration 0006)."""
    from sqlalchemy import event

    store = Store.open(f"sqlite:///{tmp_path / 'postings.db'}")
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "UNION ALL" in statement:
            seen.append((statement, parameters))

    with store.unit() as repo:
        sid = repo.create_story("t", T)
        for i in range(5):  # five articles with the same publication time: ties by id
            url = f"https://a.example/{i}"
            aid, _ = repo.add_article(
                key=url, url=url, outlet="A", lang="de", published=T, title="t", now=T
            )
            keys = ["a", "b", "c"] if i % 2 else ["a", "b"]
            repo.attach(aid, sid, level="new", score=0.0, fingerprint={}, keys=keys, published=T)
        event.listen(store.engine, "before_cursor_execute", capture)
        found = repo.candidates(
            ["a", "b", "c"], T - timedelta(days=4), until=T, per_key=2, min_shared=1
        )
        event.remove(store.engine, "before_cursor_execute", capture)
    # per key the 2 newest, the higher id first on a tie: a -> 5, 4; b -> 5, 4; c -> 4, 2;
    # ranked by keys shared (4: 3, 5: 2, 2: 1)
    assert [aid for aid, _sid, _fp in found] == [4, 5, 2]
    raw = store.engine.raw_connection()
    try:
        ((statement, params),) = seen
        plan = [row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", params)]
    finally:
        raw.close()
        store.close()
    branches = [p for p in plan if "story_keys" in p]
    assert len(branches) == 16  # three keys, padded to the smallest statement size
    assert all("USING COVERING INDEX ix_story_keys_postings" in p for p in branches), plan
    assert not any("TEMP B-TREE" in p and "ORDER BY" in p and "RIGHT PART" in p for p in plan), plan


def test_planner_statistics_are_taken_as_the_articles_double(store: Store) -> None:
    """SQLite plans the drift queries well only with statistics (ANALYZE): they are taken
    once there are articles, and again each time the articles have doubled; PostgreSQL's
    autovacuum keeps its own."""

    added = 0

    def add(n: int) -> None:
        nonlocal added
        with store.unit() as repo:
            for i in range(added, added + n):
                repo.add_article(
                    key=f"k{i}", url=f"u{i}", outlet="A", lang="en", published=T, title="t", now=T
                )
        added += n

    def analysed() -> int | None:
        with store.engine.connect() as conn:
            return _analysed_rows(conn, "articles")

    sqlite = store.engine.dialect.name == "sqlite"
    assert store.refresh_statistics() is False  # nothing to measure yet
    add(3)
    assert store.refresh_statistics() is sqlite
    if not sqlite:
        return
    assert analysed() == 3
    assert store.refresh_statistics() is False
    add(2)  # 5 < 2 x 3
    assert store.refresh_statistics() is False and analysed() == 3
    add(1)
    assert store.refresh_statistics() is True and analysed() == 6


def test_an_upgrade_takes_the_planner_statistics(tmp_path: Path) -> None:
    """A migration may add indexes, which SQLite's planner weighs by statistics: an
    upgraded database (not a new one) is analysed as it is migrated."""
    from alembic import command

    from storage.db import alembic_config

    url = f"sqlite:///{tmp_path / 'up.db'}"
    s = Store.open(url)
    with s.unit() as repo:
        repo.add_article(key="k", url="u", outlet="A", lang="en", published=T, title="t", now=T)
    with s.engine.connect() as conn:
        assert _analysed_rows(conn, "articles") is None  # a new database: not analysed
    with s.engine.begin() as conn:
        cfg = alembic_config(s.engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    s.close()
    s = Store.open(url)  # migrates to the head
    with s.engine.connect() as conn:
        assert _analysed_rows(conn, "articles") == 1
    s.close()


BIG_STATISTICS = (  # sqlite_stat1 of scripts/bench_query.py's database, after ANALYZE
    ("article_versions", "ix_article_versions_article_id", "206110 2"),
    ("article_versions", "ix_article_versions_content_hash", "206110 1"),
    ("article_versions", "ix_article_versions_html_fetched", "206110 1"),
    ("article_versions", "ix_article_versions_newest", "206110 2 1 1 1"),
    ("article_versions", "ix_article_versions_observed", "206110 1 1 1 1"),
    ("article_versions", "ix_article_versions_processed_at", "206110 1"),
    ("article_versions", "sqlite_autoindex_article_versions_1", "206110 2 1"),
    ("articles", "ix_articles_published", "187291 1"),
    ("articles", "ix_articles_story_id", "187291 4"),
    ("articles", "ix_articles_url", "187291 1"),
    ("articles", "sqlite_autoindex_articles_1", "187291 1"),
    ("drift_summary", "ix_drift_summary_metric_observed", "88231 12605 1"),
    ("drift_summary", "ix_drift_summary_observed", "88231 2"),
    ("drift_summary", "sqlite_autoindex_drift_summary_1", "88231 2 1 1 1"),
    ("figures", "ix_figures_metric", "1000037 142863"),
    ("figures", "ix_figures_version_id", "1000037 5"),
    ("figures", "ix_figures_version_metric", "1000037 5 3 3"),
    ("figures", "sqlite_autoindex_figures_1", "1000037 5 1 1 1"),
    ("outlets", "sqlite_autoindex_outlets_1", "40 1"),
    ("stories", "ix_stories_last_seen", "50000 1"),
)


def test_drift_queries_read_versions_from_indexes_alone(tmp_path: Path) -> None:
    """SQLite stores a version's ``observed_at`` and ``method`` after its text and page,
    in the row's overflow pages: planned with the statistics of a large database, the
    drift queries read them, and the newest-version test, from the covering indexes of
    migration 0010, never from the versions' rows."""
    from sqlalchemy import event

    from pipeline.drift import DriftRules

    store = Store.open(f"sqlite:///{tmp_path / 'drift.db'}")
    with store.unit() as repo:
        sid = repo.create_story("t", T)
        for i in range(2):
            url = f"https://a.example/{i}"
            aid, _ = repo.add_article(
                key=url, url=url, outlet=f"O{i}", lang="en", published=T, title="t", now=T
            )
            vid = repo.add_version(
                aid,
                title="t",
                text="x " * 3000,
                method="m",
                fetched_at=T,
                content_hash=content_hash(str(i)),
                html="<p>x</p>" * 2000,
            )
            assert vid is not None
            repo.attach(aid, sid, level="new", score=0.0, fingerprint={}, keys=["k"], published=T)
            repo.save_figures(
                vid,
                [
                    Figure(
                        value=1e9 * (1 + i),
                        unit="USD",
                        qualifier=Qualifier.EXACT,
                        low=1e9 * (1 + i),
                        high=1e9 * (1 + i),
                        metric="deal_value",
                        subject="X",
                        period=None,
                        quote="q",
                        start=0,
                        end=1,
                    )
                ],
            )
    # the planner's statistics of bench_query.py's database (1M observations, 50k stories)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.exec_driver_sql("DELETE FROM sqlite_stat1")
        for row in BIG_STATISTICS:
            conn.exec_driver_sql("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", row)
    store.engine.dispose()  # connections opened from now on load them
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "figures" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    rules = DriftRules()
    with store.unit() as repo:
        day = T - timedelta(days=1)
        assert len(repo.observations(story_id=sid)) == 2
        assert len(repo.observations(metric="deal_value", since=day)) == 2
        within = repo.maybe_diverging(rules.tolerance_by_kind, rules.relative_tolerance, since=day)
        assert len(repo.observations(since=day, within=within)) == 2
    event.remove(store.engine, "before_cursor_execute", capture)
    raw = store.engine.raw_connection()
    try:
        plans = [
            [row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", params)]
            for statement, params in seen
        ]
    finally:
        raw.close()
        store.close()
    assert len(plans) == 3
    for plan in plans:
        versions = [p for p in plan if "article_versions" in p]
        assert len(versions) == 2, plan  # the versions read, and the newest-version test
        assert all("USING COVERING INDEX ix_article_versions_" in p for p in versions), plan


def _on_grid(rng: random.Random) -> datetime:
    """A time in the 8 days from T, on a 10-minute grid: window bounds, on the same grid,
    often fall exactly on articles."""
    return T + timedelta(minutes=10 * rng.randrange(8 * 24 * 6))


def _walk(rng: random.Random, steps: int) -> Iterator[datetime]:
    """Window centres: forward ten minutes mostly, standing still, stepping back, moving
    hours, and jumping past the windows' width (back into the middle of the 8 days)."""
    at = T + timedelta(days=3)
    for _ in range(steps):
        at += timedelta(minutes=10 * rng.choice([0, 1, 1, 1, 3, 7, 60, -1, -45, 3 * 24 * 6]))
        if not T + timedelta(days=2) <= at <= T + timedelta(days=6):
            at = T + timedelta(days=2, minutes=10 * rng.randrange(2 * 24 * 6))
        yield at


def _story_article(
    repo: Any, story: int, key: str, at: datetime, keys: list[str], *, dated: bool = True
) -> None:
    """An article seen at ``at`` (published then, or undated), attached to ``story``."""
    aid, _ = repo.add_article(
        key=key,
        url=f"https://a.example/{key}",
        outlet="A",
        lang="en",
        published=at if dated else None,
        title="t",
        now=at,
    )
    repo.attach(aid, story, level="new", score=0.0, fingerprint={}, keys=keys, published=at)


def _counting(repo: Any, name: str) -> list[tuple[Any, ...]]:
    """Record the calls of ``repo``'s method ``name`` (their arguments, one entry a call)."""
    calls: list[tuple[Any, ...]] = []
    method = getattr(repo, name)

    def counted(*args: Any) -> Any:
        calls.append(args)
        return method(*args)

    setattr(repo, name, counted)
    return calls


def test_window_counter_counts_what_counting_each_window_whole_counts(store: Store) -> None:
    """``WindowCounter`` moves the previous count instead of counting the window again; it
    must give ``window_size`` exactly as the windows walk (``_walk``), with articles
    without a publication time (their first sighting counts), articles without a story
    (not counted), and stories attached along the way."""
    rng = random.Random(7)
    width = timedelta(days=2)
    with store.unit() as repo:
        story = repo.create_story("s", T)
        for i in range(400):
            at = _on_grid(rng)
            if i % 3:
                _story_article(repo, story, f"k{i}", at, [], dated=bool(i % 5))
            else:  # stored, never analysed: no story
                repo.add_article(
                    key=f"k{i}",
                    url=f"https://a.example/k{i}",
                    outlet="A",
                    lang="en",
                    published=at,
                    title="t",
                    now=at,
                )
    windows = WindowCounter()
    with store.unit() as repo:
        moved = _counting(repo, "window_shift")
        for step, at in enumerate(_walk(rng, 260)):
            assert windows.size(repo, at - width, at + width) == repo.window_size(
                at - width, at + width
            ), f"step {step}"
            if step % 4 == 0:  # an article analysed here gets its first story
                _story_article(repo, story, f"n{step}", at, [])
                windows.attached(at, [])
    assert len(moved) > 150  # most counts were moved, not counted whole


def test_window_counter_key_counts_are_what_counting_them_whole_gives(store: Store) -> None:
    """``WindowCounter.key_counts`` holds each key's count once taken and moves it with the
    window; it must give ``key_counts`` exactly as the windows walk (``_walk``: by a little
    and by more than a sixteenth of their width), as articles with keys are attached and
    reported, and after ``forget``."""
    rng = random.Random(11)
    width = timedelta(days=2)
    vocabulary = [f"k{i}" for i in range(12)]
    with store.unit() as repo:
        story = repo.create_story("s", T)
        for i in range(300):
            keys = rng.sample(vocabulary, rng.randrange(1, 6))
            _story_article(repo, story, f"a{i}", _on_grid(rng), keys)
    windows = WindowCounter()
    with store.unit() as repo:
        moved = _counting(repo, "key_edges")
        whole = _counting(repo, "key_counts")
        asked = 0
        for step, at in enumerate(_walk(rng, 300)):
            wanted = sorted(rng.sample(vocabulary, rng.randrange(1, 8)))
            got = windows.key_counts(repo, wanted, at - width, at + width)
            asked += len(wanted)
            assert got == Repo.key_counts(repo, wanted, at - width, at + width), f"step {step}"
            windows.size(repo, at - width, at + width)
            if step % 3 == 0:  # an article analysed here is attached with its keys
                keys = rng.sample(vocabulary, rng.randrange(1, 6))
                _story_article(repo, story, f"n{step}", at, keys)
                windows.attached(at, keys)
            if step % 97 == 96:
                windows.forget()
    assert len(moved) > 100  # most counts were moved, ...
    # ... and held keys were not counted again, though 4 steps in 10 jump by more than a
    # sixteenth of the width (6 hours) and start over
    assert sum(len(keys) for keys, *_ in whole) < asked * 2 / 3


def test_migration_0007_posts_the_count_only_keys_of_stored_articles(new_db: DbFactory) -> None:
    """A database analysed before 0007 has blocking postings only: the migration posts each
    recent analysed article's other feature keys (``COUNT_ONLY``) exactly as analysis now
    does, at the time of its other postings; an article from before the horizon (30 days
    before the newest posting) keeps its postings as they were."""
    from alembic import command
    from sqlalchemy import text

    from pipeline.app import App
    from pipeline.stories import COUNT_ONLY
    from storage.db import alembic_config
    from tests.test_stories import BREAK_IN, COLLISION, DE_OTHER, EN, ROUND_1, WIRE, text_items

    url = new_db("migrate")
    app = App(db_url=url, channels=[], sync_feeds=False)
    texts = [("de", WIRE), ("de", DE_OTHER), ("en", EN), ("de", BREAK_IN), ("de", COLLISION)]
    texts.insert(0, ("de", ROUND_1))  # published 40 days before the others

    def published(i: int) -> datetime:
        return T + timedelta(hours=i) - timedelta(days=40 if i == 0 else 0)

    app.ingest(text_items(texts, published), keep_all=True)
    assert app.store is not None
    postings = "SELECT key, article_id, published FROM story_keys ORDER BY article_id, key"
    with app.store.engine.connect() as conn:
        analysed = conn.execute(text(postings)).all()
    app.store.close()
    counted_only = [r for r in analysed if r[0].startswith(COUNT_ONLY)]
    assert len({r[1] for r in counted_only}) == len(texts)  # every article has some
    # the same database as 0006 left it
    s = Store.open(url)
    with s.engine.begin() as conn:
        cfg = alembic_config(s.engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")  # 0007's downgrade drops the count-only postings
    s.close()
    s = Store.open(url)  # migrates
    old = {r[1] for r in analysed if r[2] == min(r[2] for r in analysed)}
    with s.engine.connect() as conn:
        migrated = conn.execute(text(postings)).all()
    assert migrated == [r for r in analysed if not (r[1] in old and r[0].startswith(COUNT_ONLY))]
    s.close()
