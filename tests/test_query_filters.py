"""The query commands' filters: a name that matches nothing known is an error, not an
empty table (a typo in ``--outlet`` or ``--metric`` must not read as "no drift")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from pipeline.app import App
from pipeline.cli import main
from pipeline.errors import ConfigError
from storage.repository import Store
from tests.pg import DbFactory

T = datetime(2025, 6, 13, 8, tzinfo=UTC)


@pytest.fixture
def db(new_db: DbFactory) -> str:
    """Two stories of one article each, the second merged into the first."""
    url = new_db()
    store = Store.open(url)
    with store.unit() as repo:
        a, _ = repo.add_article(
            key="a", url="a", outlet="netzmarkt.example", lang="de", published=T, title="a", now=T
        )
        b, _ = repo.add_article(
            key="b", url="b", outlet="aiwire.example", lang="en", published=T, title="b", now=T
        )
        s1, s2 = repo.create_story("a", T), repo.create_story("b", T)
        repo.attach(a, s1, level="new", score=0, fingerprint={}, keys=["k"], published=T)
        repo.attach(b, s2, level="new", score=0, fingerprint={}, keys=["k"], published=T)
        repo.merge_stories(s2, s1, b, T)
    store.close()
    assert (s1, s2) == (1, 2)
    return url


def test_known_filters_with_nothing_to_show_give_an_empty_table(db: str) -> None:
    app = App(db_url=db, channels=[], sync_feeds=False)
    assert app.drift_rows(story_id=1, outlet="aiwire.example", metric="valuation") == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"outlet": "netzmarkt"}, "no outlet named 'netzmarkt'; did you mean 'netzmarkt.example'?"),
        ({"outlet": "heise"}, "no outlet named 'heise'"),
        ({"story_id": 9}, "no story with id 9"),
        ({"story_id": 2}, "story 2 was merged into story 1"),
    ],
)
def test_unknown_names_are_errors(db: str, query: dict[str, object], message: str) -> None:
    app = App(db_url=db, channels=[], sync_feeds=False)
    with pytest.raises(ConfigError) as e:
        app.drift_rows(**query)  # type: ignore[arg-type]
    assert str(e.value) == message


def test_cli_names_the_bad_filter(db: str) -> None:
    runner = CliRunner()
    bad_metric = runner.invoke(main, ["--db", db, "drift", "--metric", "valuaton"])
    assert bad_metric.exit_code == 2
    assert "'valuaton' is not one of" in bad_metric.output
    bad_outlet = runner.invoke(main, ["--db", db, "drift", "--outlet", "netzmarkt"])
    assert bad_outlet.exit_code == 1
    assert "did you mean 'netzmarkt.example'?" in bad_outlet.output
    merged = runner.invoke(main, ["--db", db, "story", "2"])
    assert merged.exit_code == 1
    assert "story 2 was merged into story 1" in merged.output


def test_since_and_as_of_take_a_time_or_an_age(db: str) -> None:
    """`--since 24h` is the last day, as `prune --older-than` reads ages; a time without a
    zone is UTC; anything else is refused with both forms named."""
    import click

    from pipeline.cli import _parse_time

    before = datetime.now(UTC)
    day_ago = _parse_time("24h")
    assert (
        before - timedelta(hours=24, seconds=1)
        <= day_ago
        <= datetime.now(UTC) - timedelta(hours=24)
    )
    assert _parse_time("2025-06-13T08:00") == T
    assert _parse_time("2025-06-13T10:00+02:00") == T
    with pytest.raises(click.BadParameter, match="an ISO 8601 time or an age such as 24h"):
        _parse_time("yesterday")
    runner = CliRunner()
    recent = runner.invoke(main, ["--db", db, "drift", "--since", "7d", "--format", "json"])
    assert recent.exit_code == 0 and recent.output.strip() == "[]", recent.output
    bad = runner.invoke(main, ["--db", db, "drift", "--as-of", "last week"])
    assert bad.exit_code == 2 and "an age such as 24h or 7d" in bad.output


def test_stories_by_time_and_by_how_many_outlets_report_them(db: str) -> None:
    """At a million articles `stories` listed every story; `--since` and `--min-outlets`
    take the recent ones, and those more than one outlet reports (where drift is)."""
    import json

    runner = CliRunner()

    def stories(*args: str) -> list[int]:
        out = runner.invoke(main, ["--db", db, "stories", "--format", "json", *args])
        assert out.exit_code == 0, out.output
        return [s["story"] for s in json.loads(out.output)]

    assert stories() == [1]  # story 2 was merged into it: two outlets
    assert stories("--min-outlets", "2") == [1]
    assert stories("--min-outlets", "3") == []
    assert stories("--since", "2025-06-13T08:00") == [1]
    assert stories("--since", "2025-06-13T08:01") == []
    assert stories("--since", "7d") == []
    zero = runner.invoke(main, ["--db", db, "stories", "--min-outlets", "0"])
    assert zero.exit_code == 2


def test_articles_and_alerts_since(db: str) -> None:
    """`articles` and `alerts` listed everything stored; `--since` takes the recent part."""
    import json

    from pipeline.models import Alert

    store = Store.open(db)
    with store.unit() as repo:
        repo.add_alert(Alert(key="k1", kind="disagreement", title="t", body="b", created_at=T), [])
        repo.add_alert(
            Alert(
                key="k2",
                kind="disagreement",
                title="t2",
                body="b",
                created_at=T + timedelta(days=2),
            ),
            ["logfile"],
        )
    store.close()
    runner = CliRunner()

    def listed(*args: str) -> list[dict[str, object]]:
        out = runner.invoke(main, ["--db", db, *args, "--format", "json"])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)  # type: ignore[no-any-return]

    assert [a["id"] for a in listed("alerts")] == [1, 2]
    assert [(a["id"], a["channels"]) for a in listed("alerts", "--since", "2025-06-14")] == [
        (2, ["logfile:pending"])
    ]
    assert [a["article"] for a in listed("articles")] == ["a", "b"]
    assert listed("articles", "--since", "2025-06-13T08:00:01") == []
    assert listed("articles", "--since", "3650d") != []
