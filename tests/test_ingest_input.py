"""JSONL input for `newsdrift ingest`: each bad line fails alone, with file:line; the file
is indexed (each line checked, only its place kept) and read again in publication order."""

from __future__ import annotations

import io
import json
from pathlib import Path

from pipeline.ingest import index_jsonl, read_places
from tests.pg import DbFactory

GOOD = {
    "id": "a1",
    "url": "https://a.example/1",
    "outlet": "a.example",
    "lang": "de",
    "published": "2025-06-13T08:00:00+00:00",
    "title": "T",
    "text": "Text",
}


def test_good_and_bad_lines() -> None:
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps({**GOOD, "lang": "fr"}),
        json.dumps({k: v for k, v in GOOD.items() if k != "text"}),
        "",
        json.dumps({**GOOD, "id": "a2", "published": "2025-06-13"}),
        json.dumps({**GOOD, "published": "yesterday"}),
    ]
    data = io.BytesIO("\n".join(lines).encode("utf-8"))
    places, errors = index_jsonl(data, "in.jsonl")
    items = list(read_places(data, places, "in.jsonl"))
    assert [i.id for i in items] == ["a2", "a1"]  # a2 was published first (midnight)
    assert items[0].published.tzinfo is not None
    assert errors[0].startswith("in.jsonl:2: invalid JSON")
    assert errors[1].startswith("in.jsonl:3: lang")
    assert errors[2] == "in.jsonl:4: needs 'text' or 'html' (a string)"
    assert errors[3].startswith("in.jsonl:7: published: not ISO 8601")


def test_a_line_that_is_not_utf8_fails_alone() -> None:
    """The file was read as UTF-8 text as a whole: one bad byte ended the ingest with a
    UnicodeDecodeError traceback and nothing stored."""
    good = json.dumps({**GOOD, "title": "Münchner KI-Start-up"}, ensure_ascii=False)
    data = io.BytesIO(good.encode("utf-8") + b'\n{"title": "M\xfcnchen"}\n' + good.encode())
    places, errors = index_jsonl(data, "in.jsonl")
    assert errors == ["in.jsonl:2: not UTF-8 text (byte 13 of the line)"]
    assert [i.title for i in read_places(data, places, "in.jsonl")] == ["Münchner KI-Start-up"] * 2


def test_equal_times_keep_the_file_order() -> None:
    lines = [json.dumps({**GOOD, "id": f"a{n}"}) for n in (3, 1, 2)]
    data = io.BytesIO("\n".join(lines).encode())
    places, _ = index_jsonl(data, "x")
    assert [i.id for i in read_places(data, places, "x")] == ["a3", "a1", "a2"]


def test_the_cli_ingests_a_file_and_a_pipe_in_publication_order(
    tmp_path: Path, new_db: DbFactory
) -> None:
    """The command reads a file by its index, and stdin through a temporary file (a pipe
    cannot be read twice); a line that is not UTF-8 is reported, the others stored."""
    import subprocess

    from click.testing import CliRunner

    from pipeline.app import App
    from pipeline.cli import main
    from tests.helpers_cli import _env, cli_args

    lines = [
        json.dumps({**GOOD, "id": "late", "published": "2025-06-14T08:00:00+00:00"}).encode(),
        b'{"id": "bad", "title": "M\xfcnchen"}',
        json.dumps({**GOOD, "id": "early", "text": "Meta zahlt 14,3 Milliarden Dollar."}).encode(),
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    db = new_db()
    result = CliRunner().invoke(main, ["--db", db, "ingest", "--all", "--jsonl", str(src)])
    assert result.exit_code == 1
    assert f"{src}:2: not UTF-8 text" in result.output
    assert "articles_new=2 " in result.output
    app = App(db_url=db, channels=[], sync_feeds=False)
    assert [a.key for a in app.articles()] == ["early", "late"]

    piped = new_db("piped")
    run = subprocess.run(
        cli_args(piped, None, "ingest", "--all", "--jsonl", "-"),
        input=src.read_bytes(),
        capture_output=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert b"<stdin>:2: not UTF-8 text" in run.stderr
    assert [a.key for a in App(db_url=piped, channels=[], sync_feeds=False).articles()] == [
        "early",
        "late",
    ]


def test_pages_given_as_html_are_extracted_ahead_in_the_pool(new_db: DbFactory) -> None:
    """Ingested HTML is extracted by the workers' threads and pool, ahead of the writes,
    as a cycle's pages are; each page's text is what extraction alone gives, the order
    is kept, and a page without article text fails alone."""
    from datetime import UTC, datetime, timedelta

    from pipeline.app import App
    from pipeline.demo_server import DEMO_DATA_DIR
    from pipeline.extract import extract_article
    from pipeline.models import IngestItem

    pages = sorted(DEMO_DATA_DIR.glob("*/**/*.html"))
    pages = [p for p in pages if p.name != "index.html"]
    t0 = datetime(2025, 6, 13, tzinfo=UTC)
    items = [
        IngestItem(
            id=f"p{n}",
            url=f"https://o{n % 3}.example/{n}",
            outlet=f"o{n % 3}.example",
            lang="en",
            published=t0 + timedelta(minutes=n),
            title="",
            text=None,
            html=pages[n % len(pages)].read_text(encoding="utf-8"),
        )
        for n in range(40)  # more than POOL_MIN_PAGES: the pool starts
    ]
    empty = "<html><body><nav>Home</nav></body></html>"
    items.insert(5, IngestItem("nav", "https://o9.example/nav", "o9.example", "en",
                               t0 + timedelta(minutes=4, seconds=30), "", None, empty))  # fmt: skip
    app = App(db_url=new_db(), channels=[], sync_feeds=False)
    report = app.ingest(items, keep_all=True)
    assert (report.articles_new, report.articles_failed) == (40, 1)
    assert report.errors[0].startswith("article nav: ")
    stored = {a.key: a for a in app.articles()}
    assert list(stored) == [f"p{n}" for n in range(40)]
    assert app.store is not None
    with app.store.engine.connect() as conn:
        texts = dict(
            conn.exec_driver_sql(
                "select a.key, v.text from article_versions v join articles a on a.id = v.article_id"
            ).all()
        )
    for n in (0, 7, 39):
        assert texts[f"p{n}"] == extract_article(items[n + (n >= 5)].html or "", None).text
