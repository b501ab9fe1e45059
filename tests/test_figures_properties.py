"""Property tests of figure extraction: round trips of the number grammar, robustness on
arbitrary text, and linear running time."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.figures import FigureLexicon, extract_figures, load_lexicons
from pipeline.numbers import parse_numeral

SEEDS = Path(__file__).resolve().parent / "data" / "figures" / "seeds"
LEXICONS: Mapping[str, FigureLexicon] = load_lexicons()

# (written scale, factor, glued to the digits) per language
SCALES = {
    "de": [
        ("", 1, False),
        ("Tausend", 10**3, False),
        ("Tsd.", 10**3, False),
        ("Millionen", 10**6, False),
        ("Mio.", 10**6, False),
        ("Milliarden", 10**9, False),
        ("Mrd.", 10**9, False),
        ("Billionen", 10**12, False),
    ],
    "en": [
        ("", 1, False),
        ("thousand", 10**3, False),
        ("million", 10**6, False),
        ("billion", 10**9, False),
        ("trillion", 10**12, False),
        ("bn", 10**9, True),
        ("m", 10**6, True),
        ("k", 10**3, True),
    ],
}
CURRENCIES = {
    "de": [("USD", "$", "Dollar"), ("EUR", "€", "Euro"), ("USD", "US$", "US-Dollar")],
    "en": [("USD", "$", "dollars"), ("EUR", "€", "euros"), ("GBP", "£", "pounds")],
}
FRAMES = {
    "de": "Nach Angaben des Unternehmens beträgt der Betrag {amount}, hieß es am Montag.",
    "en": "The company said the amount was {amount}, according to a filing on Monday.",
}


def _digits(value: Decimal, decimals: int, lang: str) -> str:
    """``value`` written with ``decimals`` decimals in the language's convention."""
    text = f"{value:,.{decimals}f}"  # 1,234.5
    if lang == "de":
        text = text.replace(",", "\0").replace(".", ",").replace("\0", ".")
    return text


@st.composite
def amounts(draw: st.DrawFn) -> tuple[str, str, float, float, float, str]:
    lang = draw(st.sampled_from(["de", "en"]))
    decimals = draw(st.integers(0, 3))
    units = draw(st.integers(1, 999_999 if decimals == 0 else 999))
    frac = draw(st.integers(0, 10**decimals - 1)) if decimals else 0
    value = Decimal(units) + Decimal(frac).scaleb(-decimals)
    scale, factor, glued = draw(st.sampled_from(SCALES[lang]))
    if scale and value >= 1000:
        value = value % 1000 + 1
    code, symbol, word = draw(st.sampled_from(CURRENCIES[lang]))
    number = _digits(value, decimals, lang)
    placement = draw(st.sampled_from(["symbol", "word", "code"]))
    gap = "" if glued else " "
    scaled = f"{number}{gap}{scale}" if scale else number
    if placement == "symbol":
        amount = f"{symbol}{scaled}"
    elif placement == "code":
        amount = f"{code} {scaled}"
    else:
        amount = f"{scaled} {word}"
    if glued and placement == "word":
        amount = f"{symbol}{scaled}"
    total = value * factor
    half = Decimal(1).scaleb(-decimals) * factor / 2
    return lang, amount, float(total), float(total - half), float(total + half), code


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(amounts())
def test_amount_round_trip(case: tuple[str, str, float, float, float, str]) -> None:
    lang, amount, value, low, high, code = case
    text = FRAMES[lang].format(amount=amount)
    figs = extract_figures(text, lang, None, LEXICONS)
    assert len(figs) == 1, (amount, figs)
    f = figs[0]
    assert f.unit == code
    assert str(f.qualifier) == "exact"
    assert math.isclose(f.value, value, rel_tol=1e-12)
    assert math.isclose(f.low, low, rel_tol=1e-12)
    assert math.isclose(f.high, high, rel_tol=1e-12)
    assert text[f.start : f.end] == f.quote


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["de", "en"]),
    st.integers(1, 999),
    st.sampled_from(["at_least", "at_most_open", "at_most_near", "approx"]),
)
def test_qualified_amount_bounds(lang: str, n: int, kind: str) -> None:
    words = {
        "de": {
            "at_least": "mehr als",
            "at_most_open": "bis zu",
            "at_most_near": "knapp",
            "approx": "rund",
        },
        "en": {
            "at_least": "more than",
            "at_most_open": "up to",
            "at_most_near": "nearly",
            "approx": "about",
        },
    }
    scale = "Milliarden Euro" if lang == "de" else "billion euros"
    text = FRAMES[lang].format(amount=f"{words[lang][kind]} {n} {scale}")
    (f,) = extract_figures(text, lang, None, LEXICONS)
    v = n * 1e9
    assert f.value == pytest.approx(v)
    assert f.low <= v <= f.high
    if kind == "at_least":
        assert (str(f.qualifier), f.low, f.high) == ("at_least", v, math.inf)
    elif kind == "at_most_open":
        assert (str(f.qualifier), f.low) == ("at_most", 0.0)
    elif kind == "at_most_near":
        assert str(f.qualifier) == "at_most" and f.high == pytest.approx(v) and f.low > 0.5 * v
    else:
        assert str(f.qualifier) == "approx" and f.low < v < f.high


@given(st.integers(0, 10**12), st.sampled_from([",", "."]))
def test_grouped_integers_parse(n: int, decimal_sep: str) -> None:
    group = "." if decimal_sep == "," else ","
    written = f"{n:,}".replace(",", group)
    parsed = parse_numeral(written, decimal_sep)
    assert parsed is not None and parsed.value == n


WORDS = [
    *["Mrd.", "Milliarden", "billion", "bn", "über", "more than", "knapp", "rund", "Prozent"],
    *["Meta", "Scale AI", "zwischen", "und", "bis", "to", "Umsatz", "revenue", "im Jahr 2024"],
    *["Wang (28)", "verdoppelt", "doubled", "ein Drittel der", "Q1", "ersten Quartal", "a"],
]
ALPHABET = st.sampled_from([*"0123456789 .,-–%$€£()\n;:'’/x", *WORDS])


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=60).map("".join), st.sampled_from(["de", "en", "auto"]))
def test_arbitrary_text_never_raises(text: str, lang: str) -> None:
    for f in extract_figures(text, lang, None, LEXICONS):
        assert text[f.start : f.end] == f.quote
        assert f.low <= f.high
        assert f.low <= f.value <= f.high or str(f.qualifier) == "approx"


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["de", "en"]))
def test_unicode_text_never_raises(text: str, lang: str) -> None:
    for f in extract_figures(text, lang, None, LEXICONS):
        assert text[f.start : f.end] == f.quote


def _timed(text: str) -> float:
    start = time.perf_counter()
    extract_figures(text, "de", None, LEXICONS)
    return time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.parametrize(
    "unit",
    [
        "seeds",
        "1" * 997,
        "1,2 " * 250,
        "1." * 500,
        "Scale AI Meta OpenAI " * 40,
        "über 1,5 Mrd. $ Umsatz. ",
        "Acme, ein junges Berliner Start-up, sammelt ",
    ],
    ids=["news", "digits", "commas", "dots", "names", "dense-money", "appositives"],
)
def test_linear_time(unit: str) -> None:
    """10x the text may take at most LINEAR_SLACK x 10 the time: no catastrophic regex
    backtracking and no quadratic context search."""
    if unit == "seeds":
        unit = "".join(p.read_text(encoding="utf-8") for p in sorted(SEEDS.glob("*.txt")))
    small_n, big_n = (10_000, 100_000) if unit.startswith("über") else (100_000, 1_000_000)
    small = (unit * (small_n // len(unit) + 1))[:small_n]
    big = (unit * (big_n // len(unit) + 1))[:big_n]
    t_small = min(_timed(small) for _ in range(2))
    t_big = _timed(big)
    assert t_big < 10 * LINEAR_SLACK * max(t_small, 0.01), (t_small, t_big)


LINEAR_SLACK = 3.0  # measured ratios are 6-12x for 10x the text; quadratic would be ~100x
