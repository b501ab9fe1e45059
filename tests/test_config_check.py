"""`newsdrift config check`: every config file read, every error with file and line,
without a database or the network."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import main


def check(cfg: Path | None, db: Path) -> tuple[int, str]:
    args = ["--db", f"sqlite:///{db}"] + (["--config", str(cfg)] if cfg else [])
    result = CliRunner().invoke(main, [*args, "config", "check"])
    return result.exit_code, result.output


def test_the_shipped_config_is_whole(tmp_path: Path) -> None:
    code, out = check(None, tmp_path / "never.db")
    assert code == 0, out
    assert "ok: settings: the shipped defaults" in out
    assert "ok: figure lexicons: de, en" in out and "ok: topic filter: ai" in out
    assert not (tmp_path / "never.db").exists()  # no database opened, none created


def test_each_broken_file_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    (cfg / "lexicons").mkdir(parents=True)
    (cfg / "newsdrift.toml").write_text(
        '[[alerts.channel]]\nname = "desk"\nurl = "mailtos://${NEWSDRIFT_TEST_UNSET}@x.example"\n'
        '[[alerts.channel]]\nname = "odd"\nurl = "nosuchscheme://x"\n'
        '[[alerts.channel]]\nname = "hook"\nurl = "json://127.0.0.1:9/hook"\n'
    )
    (cfg / "feeds.toml").write_text(
        '[[outlet]]\nname = "x"\nlang = "fr"\nfeeds = ["https://x.example/rss"]\n'
    )
    (cfg / "lexicons" / "figures.de.toml").write_text("stopwords = [\n")
    code, out = check(cfg, tmp_path / "never.db")
    assert code == 1
    assert f"{cfg / 'feeds.toml'}:3: outlet[0].lang: expected one of de, en, got 'fr'" in out
    assert f"{cfg / 'lexicons' / 'figures.de.toml'}" in out
    assert "alerts channel 'desk': environment variable NEWSDRIFT_TEST_UNSET is not set" in out
    assert "alerts channel 'odd': apprise does not understand its URL" in out
    assert "ok: alerts channel 'hook': json" in out
    assert "ok: topic filter: ai" in out  # the shipped topic, the config has none of its own

    (cfg / "newsdrift.toml").write_text("[fetch]\nmax_bytes = -1\n")
    code, out = check(cfg, tmp_path / "never.db")
    assert code == 1
    assert f"{cfg / 'newsdrift.toml'}:2: fetch.max_bytes: must be greater than 0" in out
    assert not (tmp_path / "never.db").exists()
