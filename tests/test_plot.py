"""`newsdrift plot`: which observations a line joins, and that a PNG is written."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.models import Observation, Qualifier
from pipeline.plot import panels_of, plot_story

T = datetime(2025, 6, 13, 8, tzinfo=UTC)
BASE = Observation(
    story_id=1,
    subject="Meta → Scale AI",
    metric="deal_value",
    period=None,
    outlet="a.example",
    article="a1",
    article_url="https://a.example/1",
    value=14.3e9,
    low=14.25e9,
    high=14.35e9,
    unit="USD",
    qualifier=Qualifier.EXACT,
    quote="$14.3 billion",
    observed_at=T,
)


def test_a_line_follows_one_claim_of_one_outlet() -> None:
    corrected = replace(BASE, value=14.8e9, version=2, observed_at=T + timedelta(hours=2))
    other_deal = replace(BASE, subject="OpenAI → io", value=6.5e9)  # same article, same time
    revenue = [
        replace(BASE, metric="revenue", subject="Scale AI", period=p, value=v)
        for p, v in (("2024", 870e6), ("2025", 2e9))
    ]
    elsewhere = replace(BASE, outlet="b.example")
    panels = panels_of([corrected, other_deal, BASE, *revenue, elsewhere])
    assert list(panels) == [("deal_value", "USD"), ("revenue", "USD")]
    deals = {
        (s.outlet, s.claim): [o.value for o in s.observations]
        for s in panels[("deal_value", "USD")]
    }
    assert deals == {
        ("a.example", ("Meta → Scale AI", "")): [14.3e9, 14.8e9],  # oldest first
        ("a.example", ("OpenAI → io", "")): [6.5e9],
        ("b.example", ("Meta → Scale AI", "")): [14.3e9],
    }
    assert [s.claim for s in panels[("revenue", "USD")]] == [
        ("Scale AI", "2024"),
        ("Scale AI", "2025"),
    ]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    more = replace(BASE, subject="OpenAI → io", value=6.5e9, high=float("inf"))
    out = plot_story([BASE, more], title="Meta/Scale", path=tmp_path / "story.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
