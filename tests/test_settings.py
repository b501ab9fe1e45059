"""Config loading: shipped defaults, overlays, and located error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.paths import shipped_config_dir
from pipeline.settings import load_feeds, load_settings


def test_shipped_settings_load() -> None:
    s = load_settings(None)
    assert s.fetch.allow_private is False
    assert s.drift.relative_tolerance > 0
    assert "deal_value" in s.drift.metrics


def test_shipped_feed_list_is_a_real_starter_list() -> None:
    feeds = load_feeds(shipped_config_dir() / "feeds.toml")
    assert len(feeds.feeds) >= 20
    assert {o.lang for o in feeds.outlets} == {"de", "en"}
    assert all(f.url.startswith("https://") for f in feeds.feeds)


def test_user_overlay_overrides_one_key(tmp_path: Path) -> None:
    (tmp_path / "newsdrift.toml").write_text("[drift]\nrelative_tolerance = 0.05\n")
    s = load_settings(tmp_path)
    assert s.drift.relative_tolerance == 0.05
    assert s.fetch.max_redirects == load_settings(None).fetch.max_redirects


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[fetch]\nmax_bytes = -1\n", "newsdrift.toml:2: fetch.max_bytes: must be greater than 0"),
        ("[fetch]\n\nmax_bytes = 'x'\n", "newsdrift.toml:3: fetch.max_bytes: expected int"),
        ("[fetch]\nmax_byte = 1\n", "newsdrift.toml:2: fetch.max_byte: unknown key"),
        ("[drift]\nmetrics = ['deal_value', 'price']\n", "drift.metrics: unknown metric 'price'"),
        ("[alert]\nx = 1\n", "newsdrift.toml:1: alert: unknown section"),
        ("[fetch\n", "newsdrift.toml:1: invalid TOML"),
        ("[fetch]\nallow_private = 1\n", "fetch.allow_private: expected bool"),
        ("[fetch]\nprocesses = -2\n", "newsdrift.toml:2: fetch.processes: expected 0 (one per"),
        ("[fetch]\nprocesses = true\n", "fetch.processes: expected a number"),
    ],
)
def test_bad_settings_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "newsdrift.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path)
    assert expected in str(e.value)
    assert str(tmp_path) in str(e.value)


GOOD = """
[[outlet]]
name = "A"
lang = "de"
feeds = ["https://a.example/feed.xml"]

[[outlet]]
name = "B"
lang = "en"
on_topic = true
feeds = ["https://b.example/rss"]
"""


def test_feeds_file(tmp_path: Path) -> None:
    p = tmp_path / "feeds.toml"
    p.write_text(GOOD)
    f = load_feeds(p, default_interval=45)
    assert [x.outlet for x in f.feeds] == ["A", "B"]
    assert f.feeds[0].interval_minutes == 45
    assert f.feeds[1].on_topic is True


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (
            ('lang = "en"', 'lang = "fr"'),
            "feeds.toml:9: outlet[1].lang: expected one of de, en, got 'fr'",
        ),
        (
            ('"https://b.example/rss"', '"ftp://b.example/rss"'),
            "outlet[1].feeds: not an http(s) URL",
        ),
        (('name = "B"', 'name = "A"'), "feeds.toml:8: outlet[1].name: duplicate outlet name 'A'"),
        (("on_topic = true", "on_topic = 'yes'"), "outlet[1].on_topic: expected bool"),
    ],
)
def test_bad_feeds_name_file_line_and_key(
    tmp_path: Path, replace: tuple[str, str], expected: str
) -> None:
    p = tmp_path / "feeds.toml"
    p.write_text(GOOD.replace(*replace))
    with pytest.raises(ConfigError) as e:
        load_feeds(p)
    assert expected in str(e.value)
