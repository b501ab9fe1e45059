"""`newsdrift feeds add/list/remove` against a real database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.models import is_http_url
from tests.pg import DbFactory


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.com/feed", True),
        ("http://127.0.0.1:8080/rss.xml", True),
        ("http://[::1]:8080/rss", True),
        ("htp:/bad", False),
        ("ftp://example.com/feed", False),
        ("https:///feed", False),
        ("https://exa mple.com/feed", False),
        ("https://example.com/feed\n", False),
        ("http://[::1/rss", False),
        ("example.com/feed", False),
    ],
)
def test_is_http_url(url: str, ok: bool) -> None:
    assert is_http_url(url) is ok


def test_feeds_add_list_remove(new_db: DbFactory, tmp_path: Path) -> None:
    (tmp_path / "feeds.toml").write_text("# feeds are in the database\n", encoding="utf-8")
    runner = CliRunner()
    base = ["--db", new_db(), "--config", str(tmp_path)]

    def feeds() -> list[dict[str, object]]:
        out = runner.invoke(main, [*base, "feeds", "list", "--format", "json"])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)  # type: ignore[no-any-return]

    add = [*base, "feeds", "add", "https://example.com/feed", "--outlet", "ex", "--lang", "en"]
    first = runner.invoke(main, add)
    assert first.exit_code == 0 and "added https://example.com/feed" in first.output
    again = runner.invoke(main, add)
    assert again.exit_code == 0 and "already present" in again.output

    bad = runner.invoke(main, [*base, "feeds", "add", "htp:/bad", "--outlet", "x", "--lang", "de"])
    assert bad.exit_code == 1
    assert "not an http(s) URL: 'htp:/bad'" in bad.output
    assert [(f["url"], f["outlet"], f["lang"], f["in_feeds_file"]) for f in feeds()] == [
        ("https://example.com/feed", "ex", "en", False)
    ]

    gone = runner.invoke(main, [*base, "feeds", "remove", "https://example.com/feed"])
    assert gone.exit_code == 0
    assert feeds() == []
    missing = runner.invoke(main, [*base, "feeds", "remove", "https://example.com/feed"])
    assert missing.exit_code == 1 and "no such feed" in missing.output


def test_a_new_outlet_name_close_to_a_stored_one_is_warned_of(
    new_db: DbFactory, tmp_path: Path
) -> None:
    """ "Heise Online" beside "heise online" is one outlet under two names: two histories in
    the drift table. `feeds add` says so (and still adds: it may be meant)."""
    (tmp_path / "feeds.toml").write_text("# feeds are in the database\n", encoding="utf-8")
    runner = CliRunner()
    base = ["--db", new_db(), "--config", str(tmp_path), "feeds", "add"]
    first = runner.invoke(main, [*base, "https://a.example/rss", "--outlet", "heise online",
                                 "--lang", "de"])  # fmt: skip
    assert first.exit_code == 0 and "warning" not in first.output
    variant = runner.invoke(main, [*base, "https://a.example/atom", "--outlet", "Heise Online",
                                   "--lang", "de"])  # fmt: skip
    assert variant.exit_code == 0
    assert "warning: new outlet 'Heise Online'; did you mean 'heise online'?" in variant.output
    same = runner.invoke(main, [*base, "https://a.example/news", "--outlet", "heise online",
                                "--lang", "de"])  # fmt: skip
    assert same.exit_code == 0 and "warning" not in same.output
    other = runner.invoke(main, [*base, "https://b.example/rss", "--outlet", "t3n", "--lang", "de"])
    assert other.exit_code == 0 and "warning" not in other.output
