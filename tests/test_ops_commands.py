"""`status`, `prune` and `db upgrade` as a user runs them."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from pipeline.cli import main
from pipeline.feeds import content_hash
from pipeline.models import Figure, Qualifier
from storage.db import HEAD_REVISION
from storage.repository import Store
from tests.pg import DbFactory

T = datetime(2025, 1, 1, tzinfo=UTC)


def fig(metric: str | None) -> Figure:
    return Figure(
        value=1e9,
        unit="USD",
        qualifier=Qualifier.EXACT,
        low=0.95e9,
        high=1.05e9,
        metric=metric,
        subject="X",
        period=None,
        quote="1 Mrd.",
        start=0,
        end=6,
    )


def test_prune_keeps_what_a_drift_row_needs(new_db: DbFactory) -> None:
    url = new_db("prune")
    store = Store.open(url)
    with store.unit() as repo:
        aid, _ = repo.add_article(
            key="a", url="u", outlet="A", lang="de", published=T, title="t", now=T
        )
        versions = [
            repo.add_version(
                aid,
                title="t",
                text=f"text {i}",
                method="m",
                fetched_at=T + timedelta(hours=i),
                content_hash=content_hash(f"text {i}"),
                html=f"<p>{i}</p>",
            )
            for i in range(3)
        ]
        v0, v1, v2 = versions
        assert v0 and v1 and v2
        sid = repo.create_story("t", T)
        repo.attach(aid, sid, level="new", score=0, fingerprint={}, keys=["k"], published=T)
        repo.save_figures(v0, [fig("deal_value")])  # a drift row refers to this old version
        repo.save_figures(v1, [fig(None)])  # no metric: no drift row
    store.close()
    runner = CliRunner()
    result = runner.invoke(main, ["--db", url, "prune", "--older-than", "1d"])
    assert result.exit_code == 0, result.output
    assert "dropped raw HTML of 3 version(s); deleted 1 old version(s)" in result.output
    store = Store.open(url)
    with store.engine.connect() as conn:
        kept = conn.exec_driver_sql("select id, html_gz from article_versions order by id").all()
    assert [r[0] for r in kept] == [v0, v2] and all(r[1] is None for r in kept)
    with store.unit() as repo:
        assert [o.value for o in repo.observations(history=True)] == [1e9]
    store.close()
    bad = runner.invoke(main, ["--db", url, "prune", "--older-than", "soon"])
    assert bad.exit_code == 2 and "expected a number with d, h or m" in bad.output


def test_prune_drops_the_postings_no_story_window_reaches(new_db: DbFactory) -> None:
    """Story postings older than the cut by the story window (4 days) go, newer ones stay,
    and an article published after the cut still joins the story of its window."""
    from pipeline.app import App
    from tests.test_stories import DE_OTHER, EN, ROUND_1, WIRE, text_items

    url = new_db("prune-postings")
    now = T + timedelta(days=60)
    app = App(db_url=url, channels=[], sync_feeds=False, clock=lambda: now)
    old, recent = T + timedelta(days=45), now - timedelta(hours=3)
    app.ingest(
        text_items(
            [("de", ROUND_1), ("de", WIRE), ("de", DE_OTHER)], [old, recent, recent].__getitem__
        ),
        keep_all=True,
    )
    assert app.store is not None
    count = "SELECT count(*) FROM story_keys WHERE article_id IN (SELECT id FROM articles WHERE key = :k)"
    with app.store.engine.connect() as conn:
        before = {k: conn.execute(text(count), {"k": k}).scalar_one() for k in ("a0", "a1", "a2")}
    assert all(before.values())
    # cut at 10 days ago: postings before 14 days ago go (article a0, 15 days old)
    done = app.prune(timedelta(days=10))
    assert done["postings_deleted"] == before["a0"]
    with app.store.engine.connect() as conn:
        after = {k: conn.execute(text(count), {"k": k}).scalar_one() for k in ("a0", "a1", "a2")}
    assert after == {**before, "a0": 0}
    # an English write-up, published now, meets the German ones' story
    app.ingest([replace(text_items([("en", EN)], lambda _: now)[0], id="a3")], keep_all=True)
    (story,) = [s for s in app.stories() if "a1" in s.articles]
    assert set(story.articles) == {"a1", "a2", "a3"}
    with app.store.engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM story_keys")).scalar_one()
    app.store.close()
    # the command line says what went: on the real clock, all of it is long past
    result = CliRunner().invoke(main, ["--db", url, "prune", "--older-than", "1d"])
    assert result.exit_code == 0, result.output
    assert f"and {left} story posting(s)" in result.output


def test_a_run_leaves_the_planner_its_statistics(tmp_path: Path) -> None:
    """An ingest (as a cycle: both hold the lease) ends by taking SQLite's planner
    statistics when the articles have doubled since the last time (PostgreSQL keeps its
    own: tests/test_storage.py)."""
    from pipeline.app import App
    from tests.test_stories import EN, WIRE, text_items

    app = App(db_url=f"sqlite:///{tmp_path / 's.db'}", channels=[], sync_feeds=False)
    app.ingest(text_items([("de", WIRE), ("en", EN)], lambda i: T), keep_all=True)
    assert app.store is not None
    with app.store.engine.connect() as conn:
        stat = conn.execute(text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'articles'"))
        assert {row[0].split()[0] for row in stat} == {"2"}
    app.store.close()


def test_statistics_that_fail_leave_the_run_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The run's work is committed before the statistics are taken: a database locked at
    that moment postpones them, logged, and the run ends as it would have."""
    from sqlalchemy.exc import OperationalError

    from pipeline.app import App
    from tests.test_stories import WIRE, text_items

    def locked(self: Store) -> bool:
        raise OperationalError("ANALYZE", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(Store, "refresh_statistics", locked)
    app = App(db_url=f"sqlite:///{tmp_path / 'x.db'}", channels=[], sync_feeds=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.app"):
        report = app.ingest(text_items([("de", WIRE)], lambda i: T), keep_all=True)
    assert report.articles_new == 1 and [s.articles for s in app.stories()] == [("a0",)]
    assert "stage=statistics refreshed=no error=" in caplog.text
    assert app.store is not None
    app.store.close()


def test_prune_reads_no_table_whole_and_goes_a_day_at_a_time(tmp_path: Path) -> None:
    """SQLite stores a version's ``fetched_at`` after its text and page, so a scan that
    tests it walks every row's overflow pages: prune finds the HTML to drop through the
    partial index of the versions still holding it (migration 0010), and the superseded
    versions in the (article, number) index, reading only their rows. Pages and postings
    go a day per transaction, so a running cycle never waits for years of them."""
    from sqlalchemy import event

    from pipeline.app import App

    app = App(
        db_url=f"sqlite:///{tmp_path / 'plan.db'}",
        channels=[],
        sync_feeds=False,
        clock=lambda: T + timedelta(days=10),
    )
    store = app._store()
    with store.unit() as repo:
        aid, _ = repo.add_article(
            key="a", url="u", outlet="A", lang="de", published=T, title="t", now=T
        )
        for day in range(3):
            repo.add_version(
                aid,
                title="t",
                text=f"text {day}",
                method="m",
                fetched_at=T + timedelta(days=day),
                content_hash=content_hash(f"text {day}"),
                html="<p>x</p>",
            )
        sid = repo.create_story("t", T)
        repo.attach(aid, sid, level="new", score=0, fingerprint={}, keys=["k"], published=T)
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    done = app.prune(timedelta(days=1))
    event.remove(store.engine, "before_cursor_execute", capture)
    assert done == {"html_dropped": 3, "versions_deleted": 2, "postings_deleted": 1}
    # three days of pages: three transactions, one update each
    assert sum(st.startswith("UPDATE article_versions SET html_gz") for st, _ in seen) == 3
    raw = store.engine.raw_connection()
    try:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        planned, scans = 0, []
        for statement, params in seen:
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            planned += 1
            for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", params):
                words = row[-1].split()
                # "SCAN article_versions_1 USING COVERING INDEX …" reads an index only
                table = any(words[1] == t or words[1].startswith(t + "_") for t in tables)
                if words[0] == "SCAN" and "COVERING" not in words and table:
                    scans.append((row[-1], statement))
    finally:
        raw.close()
        store.close()
    assert planned >= 2
    assert scans == [], "\n".join(f"{plan}: {sql}" for plan, sql in scans)


def test_status_and_db_upgrade(new_db: DbFactory) -> None:
    url = new_db("status")
    runner = CliRunner()
    up = runner.invoke(main, ["--db", url, "db", "upgrade"])
    assert up.exit_code == 0 and f"-> {HEAD_REVISION}" in up.output, up.output
    again = runner.invoke(main, ["--db", url, "db", "upgrade"])
    assert f"{HEAD_REVISION} -> {HEAD_REVISION}" in again.output
    status = json.loads(runner.invoke(main, ["--db", url, "status", "--format", "json"]).output)
    assert status["feeds"] == 0 and status["articles_waiting"] == 0
    assert status["database_bytes"] > 0 and status["schema_revision"] == HEAD_REVISION
    prom = runner.invoke(main, ["--db", url, "status", "--format", "prometheus"]).output
    assert "# TYPE newsdrift_feeds gauge" in prom and "newsdrift_deliveries_failed 0" in prom
