"""`status`, `prune` and `db upgrade` as a user runs them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

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
