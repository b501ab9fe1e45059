"""HTML decoding and article extraction on realistic pages (tests/data/pages)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest

from pipeline.errors import ExtractionError
from pipeline.extract import amounts, decode_html, extract_article, missing_amounts, visible_text

PAGES = Path(__file__).parent / "data" / "pages"


def page(name: str) -> bytes:
    return (PAGES / name).read_bytes()


# --- decoding ----------------------------------------------------------------------


def test_meta_charset_latin1():
    text, how = decode_html(page("de-latin1-teaser.html"), {})
    assert how == "meta"
    assert "Börse" in text and "größten" in text


def test_http_charset_wins_over_meta():
    body = '<html><head><meta charset="utf-8"></head><body>Größe</body></html>'.encode("cp1252")
    text, how = decode_html(body, {"Content-Type": "text/html; charset=windows-1252"})
    assert (how, "Größe" in text) == ("http", True)


def test_latin1_label_means_windows_1252():
    # browsers read "iso-8859-1" as windows-1252: 0x80 is the euro sign
    text, how = decode_html(b"<p>5 \x80</p>", {"content-type": "text/html; charset=ISO-8859-1"})
    assert (text, how) == ("<p>5 €</p>", "http")


def test_bom():
    text, how = decode_html(b"\xef\xbb\xbf<p>\xc3\xa4</p>", {"Content-Type": "text/html"})
    assert (text, how) == ("<p>ä</p>", "bom")
    text, how = decode_html("\ufeff<p>ü</p>".encode("utf-16-le"), {})
    assert (text, how) == ("<p>ü</p>", "bom")


def test_detection_and_unknown_labels():
    text, how = decode_html(page("en-figcaption.html"), {"Content-Type": "text/html"})
    assert how == "detected" and "£412 million" in text
    latin = "<p>Übernahme für 14,8 Milliarden – größter Deal der Börse</p>".encode("cp1252")
    text, how = decode_html(latin, {"Content-Type": "text/html; charset=x-bogus"})
    assert how == "detected" and "Übernahme" in text and "–" in text


@pytest.mark.parametrize(
    ("sample", "codec"),
    [
        ("Übernahme für 14,8 Milliarden – größter Deal der Börse, sagt Müller", "cp1252"),
        ("Zażółć gęślą jaźń – polska wiadomość o rynku akcji i spółkach", "cp1250"),
        ("Привет, как дела? Это тестовая страница новостей о рынке.", "cp1251"),
        ("株式会社が新しいモデルを発表しました。価格は百億円です。", "shift_jis"),
    ],
)
def test_detection_of_undeclared_legacy_encodings(sample: str, codec: str):
    # (short Greek cp1253 is left out: charset_normalizer reads it as Cyrillic cp1251)
    text, how = decode_html(f"<p>{sample}</p>".encode(codec), {})
    assert (text, how) == (f"<p>{sample}</p>", "detected")


# --- extraction ----------------------------------------------------------------------


def test_plain_article_with_metadata():
    html, _ = decode_html(page("en-plain.html"), {})
    got = extract_article(html, "https://robots.example.com/news/plant")
    assert got.method == "trafilatura"
    assert got.title == "Robotics firm opens new plant"
    assert got.text.startswith("Robotics firm opens new plant")
    assert "$300 million" in got.text and "1,200 people" in got.text
    assert "Contact us" not in got.text and "Home" not in got.text
    assert got.published == datetime(2025, 2, 1, 8, 0, tzinfo=UTC)
    assert got.lang == "en"
    assert got.canonical_url is None


def test_lost_lede_is_recovered_by_the_recall_setting():
    html, _ = decode_html(page("de-latin1-teaser.html"), {})
    got = extract_article(html, "https://kurier.example.de/tech/meta?x=1")
    assert got.method == "trafilatura-recall"
    assert "14,8 Milliarden Dollar" in got.text  # only in <p class="teaser">
    assert "49 Prozent" in got.text and "870 Millionen Dollar" in got.text
    # boilerplate around the article stays out, numbers there too
    for junk in ("Cookies", "Impressum", "6,5 Milliarden", "4 Billionen", "Politik"):
        assert junk not in got.text
    assert got.title == "Meta steigt bei Scale AI ein"
    assert got.site == "Wirtschaftskurier"
    assert got.lang == "de"
    assert got.published == datetime(2025, 6, 13, 8, 15, tzinfo=UTC)
    assert got.canonical_url == "https://kurier.example.de/tech/meta-scale-ai-beteiligung-100.html"


def test_numbers_only_in_a_caption_and_a_fact_box_are_rescued():
    html, _ = decode_html(page("en-figcaption.html"), {})
    got = extract_article(html, "https://ledger.example.com/markets/chipmaker-raise")
    assert got.method == "trafilatura+rescue"
    assert "Annual revenue reached £412 million last year." in got.text
    assert "Round size: $250 million" in got.text
    # the ticker and the most-read list are outside the article: not rescued
    for junk in ("FTSE", "1.2%", "$71.30", "Oil slides", "5%"):
        assert junk not in got.text
    assert got.published == datetime(2025, 3, 4, 7, 30, tzinfo=UTC)  # from JSON-LD
    assert got.site == "The Ledger"
    assert got.canonical_url == "https://ledger.example.com/markets/chipmaker-raise?utm_source=x"


DEMO_PAGES = sorted((Path(__file__).parents[1] / "pipeline" / "demo_data").rglob("*.html"))


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PAGES.glob("*.html")) if p.name != "boilerplate-only.html"] + DEMO_PAGES,
    ids=lambda p: p.name,
)
def test_the_metadata_subset_agrees_with_trafilaturas_whole_metadata(path: Path) -> None:
    """``extract_article`` runs trafilatura without its metadata and reads the title and
    site with the title steps of ``extract_metadata`` alone: the text is what a run with
    metadata gives, and the title is trafilatura's (a guard on upgrades of its internals)."""
    import trafilatura

    html, _ = decode_html(path.read_bytes(), {})
    url = "https://outlet.example/news/article"
    whole = trafilatura.bare_extraction(
        html,
        url=url,
        fast=True,
        with_metadata=True,
        deduplicate=False,
        include_comments=False,
        include_tables=True,
    )
    got = extract_article(html, url)
    if got.method == "trafilatura":  # the recall and rescue steps come after
        assert got.text == (whole.text or "").strip()
    assert got.title == " ".join((whole.title or "").split())
    assert got.site in (whole.sitename, None)


def test_a_page_without_date_tags_is_dated_by_htmldate() -> None:
    html = (
        "<html lang='en'><head><title>Orbit raises</title></head><body><article>"
        "<h1>Orbit raises $40 million</h1><p class='byline'>Published 3 March 2025</p>"
        + "<p>Orbit Robotics, a maker of warehouse robots, raised $40 million in a Series B "
        "round led by Northstar Ventures, the company said on Monday.</p>"
        * 3
        + "</article></body></html>"
    )
    got = extract_article(html, "https://outlet.example/news/orbit")
    assert got.published == datetime(2025, 3, 3, tzinfo=UTC)
    assert extract_article(html, "https://outlet.example/2024/12/01/orbit").published == datetime(
        2024, 12, 1, tzinfo=UTC
    )  # a date in the URL's path comes first


def test_amounts_outside_the_article_start_no_recall_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ticker and another story's teaser carry amounts the article does not: the
    recall run could only bring them in, so it is not run (it cost ~9 ms a page)."""
    import pipeline.extract as extract

    runs: list[bool] = []
    bare = extract._bare

    def counting(tree: object, url: str | None, *, recall: bool = False) -> object:
        runs.append(recall)
        return bare(tree, url, recall=recall)

    monkeypatch.setattr(extract, "_bare", counting)
    body = "".join(
        f"<p>Orbit Robotics, a maker of warehouse robots, hired {n} engineers in Leeds "
        "this year and plans to open a second site in Manchester next spring.</p>"
        for n in ("forty", "fifty", "sixty")
    )
    html = (
        "<html lang='en'><body><div class='ticker'>FTSE 100 +1.2% | Brent $71.30</div>"
        f"<main><article><h1>Orbit hires in Leeds</h1>{body}</article></main>"
        "<aside><p>Rival raises $250 million</p></aside></body></html>"
    )
    got = extract_article(html, "https://outlet.example/news/orbit")
    assert runs == [False] and got.method == "trafilatura"
    assert "250" not in got.text and "71.30" not in got.text
    runs.clear()
    teaser = html.replace(
        "<h1>Orbit hires in Leeds</h1>",
        "<h1>Orbit hires</h1><p class='teaser'>The deal is worth $40 million.</p>",
    )
    extract_article(teaser, "https://outlet.example/news/orbit")
    assert runs == [False, True]  # an amount in the article: the recall run is tried


def test_no_article_raises():
    html, _ = decode_html(page("boilerplate-only.html"), {})
    with pytest.raises(ExtractionError, match="words of text found") as info:
        extract_article(html, "https://consent.example.com/wall")
    assert "https://consent.example.com/wall" in str(info.value)
    with pytest.raises(ExtractionError, match="empty page"):
        extract_article("   ", "https://x.example.com/")


# --- the number check -----------------------------------------------------------------


def test_amounts():
    text = (
        "Meta zahlt 14,8 Milliarden Dollar für 49 Prozent; Umsatz 870 Mio. $, "
        "Bewertung über 29 Mrd. €, Anteil 49 %. It paid $6.5 billion and €1,250. "
        "In 2024 there were 3 deals on page 12."
    )
    assert amounts(text) == {"14,8", "49", "870", "29", "6.5", "1,250"}


def test_missing_amounts():
    page_text = "Preis 14,8 Mrd. $ und 49 % Anteil, Umsatz 870 Mio. $"
    assert missing_amounts(page_text, "Meta zahlt 14,8 Milliarden für 49 Prozent.") == {"870"}
    assert missing_amounts(page_text, "14,8 49 870") == set()


def test_visible_text():
    tree = lxml.html.fromstring(
        "<html><head><title>T</title><style>p{}</style></head><body>"
        "<p>Preis <span>14</span>,8 Mrd. $</p><script>var x = '99 %';</script>"
        "<div hidden>7 Mio. €</div><div aria-hidden='true'>8 %</div><!-- 5 % -->"
        "<ul><li>49 %</li><li>Umsatz</li></ul></body></html>"
    )
    assert visible_text(tree) == "Preis 14,8 Mrd. $ 49 % Umsatz"
