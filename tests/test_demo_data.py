"""The demo's bundled outlets: feeds parse, pages look real, and trafilatura gets the article.

Every page goes through the same trafilatura call the pipeline's extraction
starts from; the test checks that the article's own paragraphs and figures come
out and none of the page's boilerplate (cookie banner, newsletter box, teasers,
comment counters, footer) does.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import lxml.html
import pytest
import trafilatura

from pipeline.demo_server import (
    DEMO_DATA_DIR,
    DemoArticle,
    DemoOutlet,
    load_outlets,
    substitute_base,
)

BASE = "http://127.0.0.1:8000"
OUTLETS = load_outlets(DEMO_DATA_DIR, BASE)
ARTICLES: list[tuple[DemoOutlet, DemoArticle]] = [(o, a) for o in OUTLETS for a in o.articles]
INVENTED = "invented sample text"

# What each page must yield: the sentences and figures the later stages depend on.
KEY_PHRASES: dict[str, tuple[str, ...]] = {
    # story meta-scale-ai
    "/techblick/2025/06/meta-scale-ai-beteiligung.html": (
        "Der 14,8-Milliarden-Dollar-Preis bewertet Scale AI",
        "(13,8 Milliarden Dollar)",
        "Mit 49 Prozent erhält Meta",
        "mehr als 870 Millionen Dollar Umsatz im Jahr 2024",
        "mehr als 900 Millionen Dollar an liquiden Mitteln",
    ),
    "/netzmarkt/ki/meta-scale-ai-wang-wechselt.html": (
        "OpenAI zahlte in Aktien 6,5 Milliarden Dollar",
        "satte 14,3 Milliarden Dollar in die Hand",
        "bei dem es 49% kauft, dabei mit über 29 Milliarden Dollar",
    ),
    "/siliconledger/2025/06/13/meta-invests-in-scale-ai.html": (
        "invest $14.3 billion in Scale AI",
        "in exchange for a 49% stake",
        "values Scale at more than $29 billion",
        "all-stock deal worth $6.5 billion",
    ),
    "/aiwire/news/meta-scale-ai-data-labeling-bet.html": (
        "Meta is paying nearly $15 billion for a 49% stake in Scale AI",
        "more than $870 million in revenue in 2024",
        "last valued at $13.8 billion in a funding round in May 2024",
    ),
    # story halvorsen-tessellate
    "/techblick/2025/06/halvorsen-uebernimmt-tessellate.html": (
        "bei 2,1 Milliarden Dollar",
        "rund 240 Mitarbeiter",
        "mit 900 Millionen Dollar bewertet",
    ),
    "/siliconledger/2025/06/10/halvorsen-to-buy-tessellate.html": (
        "for $2.1 billion in cash",
        "about 240 employees",
        "last valued at $900 million",
    ),
    # story nordwerk-funding
    "/netzmarkt/startups/nordwerk-ai-finanzierungsrunde.html": (
        "500 Millionen Euro eingesammelt",
        "mit 5 Milliarden Euro bewertet",
        "180 Mitarbeiter",
        "780 Millionen Euro eingesammelt",
    ),
    "/aiwire/news/nordwerk-ai-series-c.html": (
        "raised €500 million in a Series C round",
        "values the company at €5 billion",
        "employs 180 people",
        "raised €780 million",
    ),
    # story cinder-funding (same week, different company)
    "/siliconledger/2025/06/12/cinder-labs-raises-250-million.html": (
        "raised $250 million in a Series B round that values it at $3 billion",
        "raised $320 million in total and employs 95 people",
    ),
    "/techblick/2025/06/cinder-labs-finanzierung.html": (
        "250 Millionen Dollar eingesammelt",
        "mit 3 Milliarden Dollar bewertet",
        "insgesamt 320 Millionen Dollar",
        "95 Mitarbeiter",
    ),
    # story parallax-meridian-launch (product launch, no money figures)
    "/aiwire/news/parallax-meridian-3-launch.html": (
        "Meridian 3",
        "Meta's Llama 4",
        "GPT-5",
        "70 billion parameters",
    ),
    "/netzmarkt/ki/parallax-meridian-3.html": (
        "Meridian 3",
        "Metas Llama 4",
        "70 Milliarden Parameter",
    ),
    # unrelated stories
    "/dailycourier/news/2025/06/14/heatwave-weekend-forecast.html": (
        "could reach 34C",
        "hosepipe ban for 1.2 million customers",
    ),
    "/dailycourier/sport/2025/06/15/ashford-rovers-play-off-final.html": (
        "beating Kingsbridge 3-1",
        "a crowd of 84,000",
        "worth at least £140 million",
    ),
}

# Text that lives on the pages but outside the article: must never be extracted.
BOILERPLATE = (
    "cookie",
    "newsletter",
    "abonnieren",
    "subscribe",
    "sign up",
    "kommentar",
    "comments",
    "impressum",
    "datenschutz",
    "privacy",
    "anzeige",
    "meistgelesen",
    "most popular",
    "most viewed",
    "read next",
    "related stories",
    "mehr zum thema",
    "lesen sie auch",
    "auch interessant",
    "das könnte sie auch interessieren",
    "trending",
    "alle rechte vorbehalten",
    "all rights reserved",
    # figures in teasers and widgets around the article
    "500 ladezyklen",
    "10 millionen anschließbare",
    "120.000 euro",
    "£299",
    "4.25%",
    "11% in the first quarter",
    "40,000 readers",
    "12 minuten",
)


def _path(article: DemoArticle) -> str:
    return article.url.removeprefix(BASE)


def _html(article: DemoArticle) -> str:
    raw = (DEMO_DATA_DIR / _path(article).lstrip("/")).read_bytes()
    return substitute_base(raw, BASE).decode("utf-8")


def _squash(text: str) -> str:
    return " ".join(text.split())


def _meta(doc: lxml.html.HtmlElement, prop: str) -> str:
    values = doc.xpath(f'//meta[@property="{prop}"]/@content')
    assert len(values) == 1, prop
    return str(values[0])


def _body_blocks(doc: lxml.html.HtmlElement) -> list[str]:
    """The article's own paragraphs and subheadings, in order (inline teasers excluded)."""
    (body,) = doc.xpath('//*[@itemprop="articleBody"]')
    blocks = body.xpath("./p | ./h2")
    return [_squash(block.text_content()) for block in blocks]


def _extract(html: str) -> dict[str, object]:
    document = trafilatura.bare_extraction(
        html,
        with_metadata=True,
        include_tables=True,
        deduplicate=False,
        favor_precision=False,
    )
    assert document is not None
    if isinstance(document, dict):
        return document
    return dict(document.as_dict())


ids = [_path(a) for _, a in ARTICLES]


# ------------------------------------------------------------------ manifest


def test_manifest_shape() -> None:
    langs = Counter(o.lang for o in OUTLETS)
    assert len(OUTLETS) >= 5
    assert langs["de"] >= 2
    assert langs["en"] >= 3
    assert len({o.name for o in OUTLETS}) == len(OUTLETS)
    assert set(KEY_PHRASES) == {_path(a) for _, a in ARTICLES}
    for _, article in ARTICLES:
        assert (DEMO_DATA_DIR / _path(article).lstrip("/")).is_file()
        assert article.published.year == 2025
        assert article.published.month == 6


def test_story_structure() -> None:
    stories: dict[str, list[tuple[DemoOutlet, DemoArticle]]] = {}
    for outlet, article in ARTICLES:
        stories.setdefault(article.story, []).append((outlet, article))

    meta = stories["meta-scale-ai"]
    seeds = [(o, a) for o, a in meta if a.source.startswith("seed ")]
    invented = [(o, a) for o, a in meta if a.source == INVENTED]
    assert len(seeds) == 2
    assert {o.lang for o, _ in seeds} == {"de"}
    assert len({o.name for o, _ in seeds}) == 2  # one per German outlet
    assert len(invented) >= 2
    assert {o.lang for o, _ in invented} == {"en"}
    assert all(a.published.date().isoformat() == "2025-06-13" for _, a in meta)

    others = {name: members for name, members in stories.items() if name != "meta-scale-ai"}
    assert sum(len(m) for m in others.values()) >= 8
    assert all(a.source == INVENTED for m in others.values() for _, a in m)
    # several stories are told by two outlets, in both languages
    multi = [m for m in others.values() if len({o.name for o, _ in m}) >= 2]
    assert len(multi) >= 4
    assert any({o.lang for o, _ in m} == {"de", "en"} for m in multi)


def test_invented_pages_say_so() -> None:
    for _, article in ARTICLES:
        html = _html(article)
        head = html[: html.index("<head>")]
        if article.source == INVENTED:
            assert "<!--" in head and INVENTED in head, _path(article)
        else:
            assert article.source.removeprefix("seed ") in head, _path(article)


# ------------------------------------------------------------------ feeds


@pytest.mark.parametrize("outlet", OUTLETS, ids=[o.name for o in OUTLETS])
def test_feeds_parse_and_list_each_page_once(outlet: DemoOutlet) -> None:
    links: Counter[str] = Counter()
    for feed_url in outlet.feed_urls:
        raw = (DEMO_DATA_DIR / feed_url.removeprefix(BASE + "/")).read_bytes()
        parsed = feedparser.parse(substitute_base(raw, BASE))
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert parsed.version in {"rss20", "atom10"}
        assert parsed.entries
        for entry in parsed.entries:
            links[entry.link] += 1
            published = datetime(*entry.published_parsed[:6]).replace(tzinfo=UTC)
            (article,) = [a for a in outlet.articles if a.url == entry.link]
            assert published == article.published
            assert entry.title
    assert set(links) == {a.url for a in outlet.articles}
    assert all(count == 1 for count in links.values())


def test_both_feed_formats_are_present() -> None:
    versions = set()
    for outlet in OUTLETS:
        for feed_url in outlet.feed_urls:
            raw = (DEMO_DATA_DIR / feed_url.removeprefix(BASE + "/")).read_bytes()
            versions.add(feedparser.parse(raw).version)
    assert versions == {"rss20", "atom10"}


# ------------------------------------------------------------------ pages


@pytest.mark.parametrize(("outlet", "article"), ARTICLES, ids=ids)
def test_page_looks_like_a_news_page(outlet: DemoOutlet, article: DemoArticle) -> None:
    html = _html(article)
    doc = lxml.html.fromstring(html)
    assert doc.get("lang") == outlet.lang
    assert doc.xpath('//link[@rel="canonical"]/@href') == [article.url]
    assert _meta(doc, "og:site_name") == outlet.site_name
    assert _meta(doc, "og:title")
    published = datetime.fromisoformat(_meta(doc, "article:published_time"))
    assert published == article.published
    assert "{base}" not in html
    # the boilerplate a real page has, around exactly one article
    assert len(doc.xpath("//article")) == 1
    assert doc.xpath("//nav") and doc.xpath("//footer")
    lowered = html.lower()
    for marker in ("cookie", "newsletter", "comment" if outlet.lang == "en" else "kommentar"):
        assert marker in lowered, marker
    links_outside = doc.xpath("//a[not(ancestor::article)]/@href")
    assert len(links_outside) >= 10


@pytest.mark.parametrize(("outlet", "article"), ARTICLES, ids=ids)
def test_trafilatura_extracts_the_article(outlet: DemoOutlet, article: DemoArticle) -> None:
    html = _html(article)
    doc = lxml.html.fromstring(html)
    result = _extract(html)
    text = _squash(str(result["text"]))

    assert result["title"] == _meta(doc, "og:title")
    assert result["date"] == _meta(doc, "article:published_time")[:10]
    assert result["sitename"] == outlet.site_name

    # every paragraph and subheading of the article, in order
    position = 0
    for block in _body_blocks(doc):
        found = text.find(block, position)
        assert found >= 0, f"missing or out of order: {block[:80]!r}"
        position = found + len(block)

    for phrase in KEY_PHRASES[_path(article)]:
        assert phrase in text, phrase

    lowered = text.lower()
    leaked = [phrase for phrase in BOILERPLATE if phrase in lowered]
    assert not leaked
    for _, other in ARTICLES:
        if other is not article:
            other_title = _meta(lxml.html.fromstring(_html(other)), "og:title")
            assert other_title not in text, f"teaser leaked: {other_title}"


# ------------------------------------------------------------------ seeds

SEEDS_DIR = Path(
    os.environ.get("NEWSDRIFT_SEEDS", Path(__file__).resolve().parents[2] / "shared" / "seeds")
)
SEED_ARTICLES = [(o, a) for o, a in ARTICLES if a.source.startswith("seed ")]


@pytest.mark.skipif(not SEEDS_DIR.is_dir(), reason="seed articles not available")
@pytest.mark.parametrize(
    ("outlet", "article"), SEED_ARTICLES, ids=[_path(a) for _, a in SEED_ARTICLES]
)
def test_seed_pages_carry_the_seed_text(outlet: DemoOutlet, article: DemoArticle) -> None:
    seed = (SEEDS_DIR / article.source.removeprefix("seed ")).read_text(encoding="utf-8")
    seed_lines = [_squash(line) for line in seed.splitlines() if line.strip()]
    # seed 001 starts with a scraper's dateline ("date 2025-06 "); the page drops it
    seed_lines[0] = seed_lines[0].removeprefix("date 2025-06 ")
    blocks = _body_blocks(lxml.html.fromstring(_html(article)))
    assert blocks == seed_lines
