"""The founding case end to end: the demo outlets through a real loopback server into a
temporary SQLite database, and the seed texts through `newsdrift ingest`."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.app import App
from pipeline.cli import main
from pipeline.demo import run_demo
from pipeline.demo_server import serve_demo
from pipeline.feeds import normalize_url
from pipeline.notify import StreamChannel
from pipeline.settings import load_settings
from tests.pg import DbFactory

DEMO = Path(__file__).resolve().parent.parent / "pipeline" / "demo_data"
SEEDS = Path(__file__).resolve().parent / "data" / "figures" / "seeds"


def _demo_settings():  # type: ignore[no-untyped-def]
    s = load_settings(None)
    return dataclasses.replace(
        s,
        fetch=dataclasses.replace(
            s.fetch, allow_private=True, per_domain_min_gap_s=0.0, per_domain_concurrency=4
        ),
    )


@pytest.fixture(scope="module")
def demo_run(new_db: DbFactory) -> Iterator[dict[str, Any]]:
    """Two cycles over the demo outlets; returns what a user would query."""
    out = io.StringIO()
    manifest = tomllib.loads((DEMO / "outlets.toml").read_text(encoding="utf-8"))
    with serve_demo() as site:
        app = App(
            db_url=new_db("e2e"),
            settings=_demo_settings(),
            channels=[StreamChannel(out)],
            sync_feeds=False,
        )
        now = datetime.now(UTC)
        with app._store().unit() as repo:
            for feed in site.feeds():
                repo.add_feed(feed, now)
        first = app.run_once()
        second = app.run_once()  # nothing is due: no fetch, nothing new
        with app._store().unit() as repo:
            for feed in repo.feeds():
                repo.record_feed_ok(feed.id, now=now, next_due=now, etag=None, last_modified=None)
        third = app.run_once()  # all due again: conditional requests answered 304
        gold = {
            normalize_url(site.base_url + a["path"]): a["story"]
            for o in manifest["outlet"]
            for a in o.get("article", [])
        }
        yield {
            "first": first,
            "second": second,
            "third": third,
            "stories": app.stories(),
            "drift": app.drift_rows(),
            "alerts": app.alerts(),
            "gold": gold,
            "out": out.getvalue(),
            "articles": app.articles(),
        }
        assert app.store is not None
        app.store.close()


def test_first_cycle_fetches_everything_without_errors(demo_run: dict[str, Any]) -> None:
    r = demo_run["first"]
    assert r.errors == []
    assert r.feeds_failed == 0
    assert r.articles_new >= 12


def test_later_cycles_are_idempotent(demo_run: dict[str, Any]) -> None:
    assert demo_run["second"].feeds_polled == 0
    third = demo_run["third"]
    assert third.feeds_not_modified == third.feeds_polled > 0
    assert third.articles_new == third.alerts_new == third.deliveries_sent == 0


def test_stories_match_the_sample_outlets_labels(demo_run: dict[str, Any]) -> None:
    gold: dict[str, str] = demo_run["gold"]
    found = {key: s.id for s in demo_run["stories"] for key in s.articles}
    kept = [k for k in gold if k in found]
    assert len(kept) >= 12
    for a in kept:
        for b in kept:
            same_gold = gold[a] == gold[b]
            assert (found[a] == found[b]) == same_gold, f"{a} vs {b}"


def _rows(demo_run: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    return [r for r in demo_run["drift"] if r["metric"] == metric]


def test_meta_deal_diverges_between_the_german_outlets(demo_run: dict[str, Any]) -> None:
    diverging = [r for r in demo_run["drift"] if r["status"] == "diverging"]
    assert {(r["metric"], r["unit"]) for r in diverging} == {("deal_value", "USD")}
    values = {round(r["value"] / 1e8) / 10 for r in diverging}
    assert {14.8, 14.3} <= values
    german = {r["outlet"] for r in diverging if r["value"] in (14.8e9, 14.3e9)}
    assert {"techblick.example", "netzmarkt.example"} <= german
    assert 6.5 not in values  # OpenAI's other deal is never mixed in


def test_a_headline_repeating_its_figure_is_one_row(demo_run: dict[str, Any]) -> None:
    """aiwire's headline and lede both say "nearly $15 billion": one claim, one row."""
    claims = [
        (r["story"], r["metric"], r["subject"], r["article"], r["value"], r["quote"])
        for r in demo_run["drift"]
    ]
    assert len(claims) == len(set(claims))
    nearly = [r for r in _rows(demo_run, "deal_value") if r["quote"] == "nearly $15 billion"]
    assert len(nearly) == 1 and nearly[0]["outlet"] == "aiwire.example"


def test_stake_is_consistent(demo_run: dict[str, Any]) -> None:
    stakes = _rows(demo_run, "stake")
    assert {r["value"] for r in stakes if r["unit"] == "percent"} >= {49}
    assert all(r["status"] == "consistent" for r in stakes)


def test_prior_round_is_not_pitted_against_the_valuation(demo_run: dict[str, Any]) -> None:
    prior = [r for r in _rows(demo_run, "prior_valuation") if math.isclose(r["value"], 13.8e9)]
    assert prior and all(r["status"] == "consistent" for r in prior)
    assert not any(math.isclose(r["value"], 13.8e9) for r in _rows(demo_run, "valuation"))


def test_exactly_one_alert_with_evidence(demo_run: dict[str, Any]) -> None:
    [alert] = demo_run["alerts"]
    assert alert.kind == "disagreement" and alert.status == "sent"
    assert "deal_value" in alert.title
    assert "techblick.example" in alert.body and "netzmarkt.example" in alert.body
    assert "14,8-Milliarden-Dollar" in alert.body and "14,3 Milliarden Dollar" in alert.body
    assert demo_run["out"].count("=== ALERT") == 1


def test_demo_command_prints_stories_drift_and_alerts(tmp_path: Path) -> None:
    out = io.StringIO()
    run_demo(cycles=1, db_path=tmp_path / "demo.db", out=out)
    text = out.getvalue()
    for heading in ("Stories", "Drift table", "Alerts"):
        assert heading in text
    assert "diverging" in text and "deal_value" in text


# --- the seeds as text through `newsdrift ingest` -----------------------------------------------

SEED_META = [
    (
        "000_6f4135ff7f279fe5.txt",
        "outlet-a.example",
        "Meta steigt bei Scale AI ein",
        "2025-06-13T08:00:00+00:00",
    ),
    (
        "001_273b47dec932b2ed.txt",
        "outlet-b.example",
        "Meta holt Scale-Gründer Alexandr Wang",
        "2025-06-13T11:00:00+00:00",
    ),
]


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0][:200]


# The headlines, or each text's first line where a source gives no headline (seed 000's is a
# subheading, 001's a dateline and lede): the two articles are the first of a fresh database,
# where the window's document frequencies say nothing yet (Thresholds.idf_prior_docs).
@pytest.mark.parametrize("titles", ["headlines", "first lines"])
def test_ingest_seeds_then_stories_and_diverging_drift(
    tmp_path: Path, new_db: DbFactory, titles: str
) -> None:
    lines = []
    for name, outlet, headline, ts in SEED_META:
        ident = name.split("_")[0]
        text = (SEEDS / name).read_text(encoding="utf-8")
        title = headline if titles == "headlines" else _first_line(text)
        lines.append(
            json.dumps(
                {
                    "id": ident,
                    "url": f"https://{outlet}/{ident}",
                    "outlet": outlet,
                    "lang": "de",
                    "published": ts,
                    "title": title,
                    "text": text,
                },
                ensure_ascii=False,
            )
        )
    src = tmp_path / "seeds.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = new_db("seeds")
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "newsdrift.toml").write_text(
        f'[alerts]\nlog_file = "{tmp_path / "alerts.log"}"\nconsole = false\n'
    )
    runner = CliRunner()
    base = ["--db", db, "--config", str(cfg)]
    result = runner.invoke(main, [*base, "ingest", "--jsonl", str(src)])
    assert result.exit_code == 0, result.output
    stories = json.loads(runner.invoke(main, [*base, "stories", "--format", "json"]).output)
    assert [s["articles"] for s in stories] == [["000", "001"]]
    rows = json.loads(
        runner.invoke(main, [*base, "drift", "--format", "json", "--diverging"]).output
    )
    assert {(r["metric"], r["unit"]) for r in rows} == {("deal_value", "USD")}
    assert sorted(r["value"] for r in rows) == [14.3e9, 14.8e9]
    assert {r["article"] for r in rows} == {"000", "001"}
    # Ingesting the same file again changes nothing.
    again = runner.invoke(main, [*base, "ingest", "--jsonl", str(src)])
    assert again.exit_code == 0
    assert json.loads(runner.invoke(main, [*base, "stories", "--format", "json"]).output) == stories
    alerts = json.loads(runner.invoke(main, [*base, "alerts", "--format", "json"]).output)
    assert len(alerts) == 1


# Two releases of one police office (the same header and footer, different incidents): as
# one outlet's they stay two stories; the same texts from two outlets meet on that evidence.
@pytest.mark.parametrize(
    ("outlets", "expected"),
    [
        (("polizei-kessingen.example", "polizei-kessingen.example"), [["0"], ["1"]]),
        (("polizei-kessingen.example", "kessinger-bote.example"), [["0", "1"]]),
    ],
)
def test_one_outlets_template_does_not_make_a_story(
    tmp_path: Path, new_db: DbFactory, outlets: tuple[str, str], expected: list[list[str]]
) -> None:
    from tests.test_stories import BREAK_IN, COLLISION

    src = tmp_path / "releases.jsonl"
    src.write_text(
        "".join(
            json.dumps(
                {
                    "id": str(i),
                    "url": f"https://{outlet}/{i}",
                    "outlet": outlet,
                    "lang": "de",
                    "published": f"2026-03-02T{8 + 3 * i:02d}:00:00+00:00",
                    "title": text.split(". ")[0],
                    "text": text,
                },
                ensure_ascii=False,
            )
            + "\n"
            for i, (outlet, text) in enumerate(zip(outlets, (BREAK_IN, COLLISION), strict=True))
        ),
        encoding="utf-8",
    )
    runner = CliRunner()
    base = ["--db", new_db("releases"), "--config", str(tmp_path)]
    result = runner.invoke(main, [*base, "ingest", "--all", "--jsonl", str(src)])  # not AI news
    assert result.exit_code == 0, result.output
    stories = json.loads(runner.invoke(main, [*base, "stories", "--format", "json"]).output)
    assert sorted(s["articles"] for s in stories) == expected
