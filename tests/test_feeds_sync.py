"""feeds.toml applied to the database: the feeds it manages become what it lists.

Before this, the file only added the feeds the database lacked: a feed it stopped listing
was polled on, a changed interval or topic flag never arrived, `feeds remove` of a listed
feed was undone by the next cycle, and a listed feed that had moved to its permanent
redirect was added again under its old URL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.app import App
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.models import FeedState, IngestItem
from tests.pg import DbFactory

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def write_feeds(cfg: Path, *outlets: tuple[str, str, list[str], str]) -> Path:
    """feeds.toml with one [[outlet]] per (name, lang, feeds, extra lines)."""
    blocks = [
        f'[[outlet]]\nname = "{name}"\nlang = "{lang}"\nfeeds = {json.dumps(feeds)}\n{extra}'
        for name, lang, feeds, extra in outlets
    ]
    path = cfg / "feeds.toml"
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def by_url(app: App) -> dict[str, FeedState]:
    with app._store().unit() as repo:
        return {f.url: f for f in repo.feeds()}


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    d = tmp_path / "cfg"
    d.mkdir()
    return d


def test_the_file_adds_updates_and_removes_its_feeds(new_db: DbFactory, cfg: Path) -> None:
    write_feeds(
        cfg,
        ("Alpha", "en", ["https://a.example/1", "https://a.example/2"], ""),
        ("Beta", "de", ["https://b.example/rss"], ""),
    )
    app = App(db_url=new_db(), config_dir=cfg, channels=[], clock=lambda: NOW)
    first = app.sync_config_feeds()
    assert first.added == ("https://a.example/1", "https://a.example/2", "https://b.example/rss")
    assert app.add_feed(
        "https://c.example/feed", outlet="Gamma", lang="en", interval=None, on_topic=False
    )

    # the file drops a feed, renames an outlet and changes an outlet's settings
    write_feeds(
        cfg,
        ("Alpha", "en", ["https://a.example/1"], "interval_minutes = 10\non_topic = true\n"),
        ("Beta Zeitung", "de", ["https://b.example/rss"], 'extra_terms = ["Chip"]\n'),
    )
    second = app.sync_config_feeds()
    assert second.added == ()
    assert second.updated == ("https://a.example/1", "https://b.example/rss")
    assert second.removed == ("https://a.example/2",)
    assert second.renamed == (("Beta", "Beta Zeitung"),)
    feeds = by_url(app)
    assert sorted(feeds) == [
        "https://a.example/1",
        "https://b.example/rss",
        "https://c.example/feed",
    ]
    alpha, beta = feeds["https://a.example/1"], feeds["https://b.example/rss"]
    assert (alpha.interval_minutes, alpha.on_topic) == (10, True)
    assert beta.outlet == "Beta Zeitung"
    with app._store().unit() as repo:
        assert repo.feed_extra_terms(beta.id) == ("Chip",)
    # the feed `feeds add` stored is not the file's to remove
    assert feeds["https://c.example/feed"].outlet == "Gamma"

    assert app.sync_config_feeds() == type(second)()  # applied twice: nothing to do


def test_an_outlet_renamed_in_the_file_keeps_its_articles(new_db: DbFactory, cfg: Path) -> None:
    """A new name for all of an outlet's feeds renames the outlet (its articles and
    figures show the new name); a feed moving to another outlet, or an outlet that keeps
    other feeds, is no rename."""
    write_feeds(
        cfg,
        ("Alpha", "en", ["https://a.example/1"], ""),
        ("Beta", "en", ["https://b.example/1", "https://b.example/2"], ""),
        ("Gamma", "en", ["https://g.example/1"], ""),
    )
    app = App(db_url=new_db(), config_dir=cfg, channels=[], clock=lambda: NOW)
    app.sync_config_feeds()
    app.add_feed("https://g.example/cli", outlet="Gamma", lang="en", interval=30, on_topic=False)
    app.ingest(
        [
            IngestItem(
                id="a1",
                url="https://a.example/story",
                outlet="Alpha",
                lang="en",
                published=NOW,
                title="Alpha story",
                text="Alpha reports that Nordwerk raised 500 million euros.",
                html=None,
            )
        ],
        keep_all=True,
    )
    write_feeds(
        cfg,
        ("Alpha Daily", "en", ["https://a.example/1"], ""),  # renamed
        ("Beta", "en", ["https://b.example/1"], ""),
        ("Beta Tech", "en", ["https://b.example/2"], ""),  # one feed moves out of Beta
        ("Gamma News", "en", ["https://g.example/1"], ""),  # Gamma keeps a feed of its own
    )
    applied = app.sync_config_feeds()
    assert applied.renamed == (("Alpha", "Alpha Daily"),)
    feeds = by_url(app)
    assert {u: f.outlet for u, f in feeds.items()} == {
        "https://a.example/1": "Alpha Daily",
        "https://b.example/1": "Beta",
        "https://b.example/2": "Beta Tech",
        "https://g.example/1": "Gamma News",
        "https://g.example/cli": "Gamma",
    }
    assert [a.outlet for a in app.articles()] == ["Alpha Daily"]


def test_a_shorter_interval_applies_now(new_db: DbFactory, cfg: Path) -> None:
    write_feeds(cfg, ("Alpha", "en", ["https://a.example/1"], "interval_minutes = 1440\n"))
    app = App(db_url=new_db(), config_dir=cfg, channels=[], clock=lambda: NOW)
    app.sync_config_feeds()
    feed = by_url(app)["https://a.example/1"]
    with app._store().unit() as repo:
        repo.record_feed_ok(
            feed.id,
            now=NOW,
            next_due=NOW + timedelta(days=1),
            status="ok",
            etag=None,
            last_modified=None,
        )
    write_feeds(cfg, ("Alpha", "en", ["https://a.example/1"], "interval_minutes = 15\n"))
    app.sync_config_feeds()
    assert by_url(app)["https://a.example/1"].next_due_at == NOW + timedelta(minutes=15)


def test_a_moved_feed_is_not_added_again(new_db: DbFactory, cfg: Path) -> None:
    write_feeds(cfg, ("Alpha", "en", ["https://a.example/old"], ""))
    app = App(db_url=new_db(), config_dir=cfg, channels=[], clock=lambda: NOW)
    app.sync_config_feeds()
    feed = by_url(app)["https://a.example/old"]
    with app._store().unit() as repo:
        assert repo.record_redirect(feed.id, "https://a.example/new", confirm_after=1)
    assert app.sync_config_feeds().added == ()
    assert list(by_url(app)) == ["https://a.example/new"]
    # dropped from the file, the moved feed goes too
    write_feeds(cfg, ("Alpha", "en", ["https://a.example/other"], ""))
    applied = app.sync_config_feeds()
    assert (applied.added, applied.removed) == (
        ("https://a.example/other",),
        ("https://a.example/new",),
    )


def test_a_listed_feed_added_before_is_taken_over(new_db: DbFactory, cfg: Path) -> None:
    write_feeds(cfg, ("Alpha", "en", ["https://z.example/keep"], ""))
    app = App(db_url=new_db(), config_dir=cfg, channels=[], clock=lambda: NOW)
    app.add_feed("https://a.example/1", outlet="Alpha", lang="en", interval=30, on_topic=False)
    write_feeds(cfg, ("Alpha", "en", ["https://z.example/keep", "https://a.example/1"], ""))
    assert app.sync_config_feeds().added == ("https://z.example/keep",)
    write_feeds(cfg, ("Alpha", "en", ["https://z.example/keep"], ""))
    assert app.sync_config_feeds().removed == ("https://a.example/1",)


def test_removing_a_listed_feed_is_refused(new_db: DbFactory, cfg: Path) -> None:
    path = write_feeds(
        cfg,
        ("Alpha", "en", ["https://a.example/10"], ""),
        ("Beta", "en", ["https://a.example/1"], ""),
    )
    db = new_db()
    runner = CliRunner()
    base = ["--db", db, "--config", str(cfg)]
    listed = runner.invoke(main, [*base, "feeds", "list", "--format", "json"])
    assert listed.exit_code == 0, listed.output  # what the next cycle polls
    assert [(f["url"], f["in_feeds_file"]) for f in json.loads(listed.output)] == [
        ("https://a.example/10", True),
        ("https://a.example/1", True),
    ]

    refused = runner.invoke(main, [*base, "feeds", "remove", "https://a.example/1"])
    assert refused.exit_code == 1
    assert f"{path}:9: feed https://a.example/1 is listed here" in refused.output
    assert "the next cycle would add it again; delete it here" in refused.output
    # once the file no longer lists it, the listing shows it gone (the next cycle removes it)
    write_feeds(cfg, ("Alpha", "en", ["https://a.example/2"], ""))
    listed = runner.invoke(main, [*base, "feeds", "list", "--format", "json"])
    assert [f["url"] for f in json.loads(listed.output)] == ["https://a.example/2"]


def test_the_shipped_list_says_how_to_drop_a_feed(new_db: DbFactory) -> None:
    app = App(db_url=new_db(), channels=[], clock=lambda: NOW)  # the shipped config
    app.sync_config_feeds()
    url = app.feeds()[0].url
    with pytest.raises(ConfigError, match="shipped starter list: copy it into your own"):
        app.remove_feed(url)
    assert url in by_url(app)


def test_a_broken_file_leaves_the_stored_feeds_polled(tmp_path: Path, new_db: DbFactory) -> None:
    """A bad line in feeds.toml is not a reason to stop monitoring: the cycle polls the
    feeds already stored (removing none of them), logs the error with file and line, and
    `run` exits 1 so that cron or a timer reports it."""
    from tests.helpers_cli import make_corpus, serve_outlets, write_config

    corpus = make_corpus(tmp_path / "site", mirrors=0)
    db = new_db()
    with serve_outlets(corpus) as site:
        cfg = write_config(tmp_path / "cfg", site, alerts_log=tmp_path / "alerts.log")
        app = App(db_url=db, config_dir=cfg, channels=[])
        app.sync_config_feeds()
        stored = {f.url for f in app.feeds()}
        assert len(stored) == sum(len(o.feed_paths) for o in corpus.outlets)
        feeds_toml = cfg / "feeds.toml"
        lines = feeds_toml.read_text(encoding="utf-8").splitlines()
        lines[2] = 'lang = "fr"'  # the first outlet's language
        feeds_toml.write_text("\n".join(lines) + "\n", encoding="utf-8")

        result = CliRunner().invoke(main, ["--db", db, "--config", str(cfg), "run"])
        assert result.exit_code == 1, result.output
        assert f"{feeds_toml}:3: outlet[0].lang: expected one of de, en, got 'fr'" in (
            result.output
        )
        assert "articles_new=0 " not in result.output
    assert {f.url for f in by_url(App(db_url=db, channels=[], sync_feeds=False)).values()} == (
        stored
    )
    report = App(db_url=db, config_dir=cfg, channels=[], sync_feeds=False).status()
    assert "feeds.toml not applied" in json.dumps(report["last_cycle"])


def test_a_listing_writes_nothing_and_sync_applies_the_file(new_db: DbFactory, cfg: Path) -> None:
    """`feeds list` shows the feeds as the next cycle will have them but changes nothing: a
    listing against the workers' database without their --config must not add the
    shipped starter list. `feeds sync` applies the file now."""
    write_feeds(cfg, ("Alpha", "en", ["https://a.example/1"], ""))
    db = new_db()
    runner = CliRunner()
    base = ["--db", db, "--config", str(cfg), "feeds"]
    listed = runner.invoke(main, [*base, "list", "--format", "json"])
    assert [f["url"] for f in json.loads(listed.output)] == ["https://a.example/1"]
    assert by_url(App(db_url=db, channels=[], sync_feeds=False)) == {}  # nothing written
    shipped = runner.invoke(main, ["--db", db, "feeds", "list", "--format", "json"])
    assert len(json.loads(shipped.output)) > 10  # the starter list, shown, not stored
    assert by_url(App(db_url=db, channels=[], sync_feeds=False)) == {}

    synced = runner.invoke(main, [*base, "sync"])
    assert synced.exit_code == 0 and synced.output == "added https://a.example/1\n"
    assert list(by_url(App(db_url=db, channels=[], sync_feeds=False))) == ["https://a.example/1"]
    again = runner.invoke(main, [*base, "sync"])
    assert again.output == "nothing to change\n"
