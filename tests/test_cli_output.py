"""How the CLI prints: numbers (every digit in CSV, JSON and Prometheus, a readable scale in
tables) and log levels."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import pytest

from pipeline.cli import emit

ROWS = [
    {"metric": "deal_value", "value": 1234567890.0, "high": float("inf")},
    {"metric": "stake", "value": 49.0, "high": 49.5},
    {"metric": "cash", "value": 900e6, "high": 905e6},
]


def test_csv_keeps_every_digit(capsys: pytest.CaptureFixture[str]) -> None:
    emit(ROWS, "csv", ["metric", "value"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [float(r["value"]) for r in rows] == [1234567890.0, 49.0, 900e6]


def test_json_keeps_every_digit(capsys: pytest.CaptureFixture[str]) -> None:
    emit(ROWS, "json", ["metric", "value"])
    assert [r["value"] for r in json.loads(capsys.readouterr().out)] == [1234567890.0, 49.0, 9e8]


def test_table_shows_numbers_in_a_readable_scale(capsys: pytest.CaptureFixture[str]) -> None:
    emit(ROWS, "table", ["metric", "value", "high"])
    out = capsys.readouterr().out
    assert "1.234568 bn" in out and "inf" not in out  # an open bound is empty, as in JSON
    assert "900 m" in out and "905 m" in out and "49.5" in out
    assert "e+" not in out


def test_prometheus_gauges_keep_every_digit() -> None:
    from pipeline.metrics import prometheus_text

    text = prometheus_text(
        {"articles": 1234567, "database_bytes": 234567891, "last_cycle_seconds": 12.3456789}
    )
    assert "newsdrift_articles 1234567\n" in text
    assert "newsdrift_database_bytes 234567891\n" in text
    assert "newsdrift_last_cycle_seconds 12.3456789\n" in text
    assert "newsdrift_last_cycle_errors" not in text  # no cycle yet


def test_prometheus_tells_a_cycle_with_errors() -> None:
    from pipeline.metrics import prometheus_text

    text = prometheus_text(
        {
            "last_cycle": {
                "errors": ["feed https://a.example/rss: HTTP 500", "feeds.toml not applied: …"],
                "feeds_file_error": "feeds.toml:3: outlet[0].lang: expected one of de, en",
            }
        }
    )
    assert "newsdrift_last_cycle_errors 2\n" in text
    assert "newsdrift_last_cycle_feeds_file_error 1\n" in text
    clean = prometheus_text({"last_cycle": {"errors": [], "feeds_file_error": None}})
    assert "newsdrift_last_cycle_errors 0\n" in clean
    assert "newsdrift_last_cycle_feeds_file_error 0\n" in clean


@pytest.mark.parametrize(
    ("verbose", "quiet", "ours", "http", "pages"),
    [
        (0, 0, logging.WARNING, logging.ERROR, logging.CRITICAL),
        (1, 0, logging.INFO, logging.WARNING, logging.ERROR),
        (2, 0, logging.DEBUG, logging.WARNING, logging.WARNING),
        (0, 1, logging.ERROR, logging.CRITICAL, logging.CRITICAL + 10),
        (0, 3, logging.CRITICAL, logging.CRITICAL + 10, logging.CRITICAL + 20),
    ],
)
def test_verbosity_flags(verbose: int, quiet: int, ours: int, http: int, pages: int) -> None:
    """``http``: the level of httpx and the like (one step quieter than newsdrift);
    ``pages``: of the extraction libraries (two steps)."""
    from pipeline.cli import QUIETER_LOGGERS, setup_logging

    root = logging.getLogger()
    libs = [logging.getLogger(name) for name in QUIETER_LOGGERS]
    handlers, levels = root.handlers[:], [lg.level for lg in (root, *libs)]
    try:
        setup_logging(verbose, quiet, "text")
        assert root.level == ours
        assert {lg.name: lg.level for lg in libs} == {
            name: http if steps == 1 else pages for name, steps in QUIETER_LOGGERS.items()
        }
    finally:  # setLevel, not .level =: it also clears the loggers' cached levels
        root.handlers[:] = handlers
        for lg, level in zip((root, *libs), levels, strict=True):
            lg.setLevel(level)


def test_extract_names_the_file_of_a_page_without_text(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main

    page = tmp_path / "empty.html"
    page.write_text("<html><body><nav>Home</nav></body></html>", encoding="utf-8")
    result = CliRunner().invoke(main, ["extract", str(page)])
    assert result.exit_code == 1
    assert f"{page}: " in result.output and "<html>" not in result.output


def test_a_page_that_is_no_html_is_reported_once(tmp_path: Path) -> None:
    """trafilatura logs its own error for a document it cannot parse ("parsed tree length:
    1, wrong data type or not valid HTML"); by default only newsdrift's shows."""
    from click.testing import CliRunner

    from pipeline.cli import main

    page = tmp_path / "noise.bin"
    page.write_bytes(bytes(range(1, 256)) * 4)
    result = CliRunner().invoke(main, ["extract", str(page)])
    assert result.exit_code == 1
    assert f"{page}: no HTML document found" in result.output
    assert "trafilatura" not in result.output, result.output
    verbose = CliRunner().invoke(main, ["-v", "extract", str(page)])
    assert "trafilatura" in verbose.output
