"""Figure extraction: the seed articles and the rules of the number grammar."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.figures import FigureLexicon, detect_lang, extract_figures, load_lexicons
from pipeline.models import Figure

SEEDS = Path(__file__).resolve().parent / "data" / "figures" / "seeds"
PUBLISHED = datetime(2025, 6, 13, tzinfo=UTC)


@pytest.fixture(scope="module")
def lexicons() -> Mapping[str, FigureLexicon]:
    return load_lexicons()


def _seed(name: str, lexicons: Mapping[str, FigureLexicon]) -> tuple[str, list[Figure]]:
    text = (SEEDS / name).read_text(encoding="utf-8")
    return text, extract_figures(text, "de", PUBLISHED, lexicons)


def _one(figs: list[Figure], value: float, unit: str) -> Figure:
    hits = [f for f in figs if math.isclose(f.value, value, rel_tol=1e-9) and f.unit == unit]
    assert len(hits) == 1, (value, unit, figs)
    return hits[0]


def test_seed_000(lexicons: Mapping[str, FigureLexicon]) -> None:
    text, figs = _seed("000_6f4135ff7f279fe5.txt", lexicons)
    for f in figs:
        assert text[f.start : f.end] == f.quote
    deal = _one(figs, 14.8e9, "USD")
    assert deal.metric == "deal_value"
    assert (deal.low, deal.high) == pytest.approx((14.75e9, 14.85e9))
    stake = _one(figs, 49, "percent")
    assert stake.metric == "stake"
    prior = _one(figs, 13.8e9, "USD")
    assert prior.metric == "prior_valuation"
    rev = _one(figs, 870e6, "USD")
    assert (rev.metric, rev.qualifier, rev.period) == ("revenue", "at_least", "2024")
    assert math.isinf(rev.high)
    rev25 = _one(figs, 2e9, "USD")
    assert (rev25.metric, rev25.period) == ("revenue", "2025")
    cash = _one(figs, 900e6, "USD")
    assert (cash.metric, cash.qualifier) == ("cash", "at_least")
    assert all(f.subject is None or "Scale" in f.subject or "Meta" in f.subject for f in figs)
    # "seit 2016", "Llama 4", "Ende 2025" are not figures
    assert len(figs) == 6


def test_seed_001(lexicons: Mapping[str, FigureLexicon]) -> None:
    text, figs = _seed("001_273b47dec932b2ed.txt", lexicons)
    for f in figs:
        assert text[f.start : f.end] == f.quote
    meta = _one(figs, 14.3e9, "USD")
    assert meta.metric == "deal_value"
    assert meta.subject and ("Scale AI" in meta.subject or "Meta" in meta.subject)
    openai = _one(figs, 6.5e9, "USD")
    assert openai.metric == "deal_value"
    assert openai.subject == "OpenAI"
    assert openai.subject != meta.subject
    stake = _one(figs, 49, "percent")
    assert stake.metric == "stake"
    val = _one(figs, 29e9, "USD")
    assert (val.metric, val.qualifier, val.low, val.high) == (
        "valuation",
        "at_least",
        29e9,
        math.inf,
    )
    money = [f for f in figs if f.unit == "USD"]
    assert {f.value for f in money} == {6.5e9, 14.3e9, 29e9}  # not 28, 20, 4, 2016, 2024
    for f in figs:
        if "Wang" in f.quote:
            assert (f.metric, f.unit) == ("age", "years")
        assert "Jahre" not in f.quote and "Llama" not in f.quote


def test_detect_lang(lexicons: Mapping[str, FigureLexicon]) -> None:
    text = (SEEDS / "000_6f4135ff7f279fe5.txt").read_text(encoding="utf-8")
    assert detect_lang(text, lexicons) == "de"
    assert detect_lang("Meta is paying $14.3 billion for a 49% stake in the startup.") == "en"
    # one shared stopword ("an"); the umlaut decides
    assert detect_lang("Meta übernimmt 49 Prozent an Scale AI.", lexicons) == "de"
    assert detect_lang("Meta pays $14bn for 49% of Scale AI.", lexicons) == "en"


@pytest.mark.parametrize(
    ("text", "lang", "value", "unit", "qualifier", "low", "high"),
    [
        (
            "Der Preis liegt bei 14,8 Milliarden Dollar.",
            "de",
            14.8e9,
            "USD",
            "exact",
            14.75e9,
            14.85e9,
        ),
        ("Meta paid $14.3bn for the stake.", "en", 14.3e9, "USD", "exact", 14.25e9, 14.35e9),
        ("Die Firma hat 1.250 Mitarbeiter.", "de", 1250, "count", "exact", 1249.5, 1250.5),
        ("The firm has 1,250 employees.", "en", 1250, "count", "exact", 1249.5, 1250.5),
        (
            "Der Staat leiht sich 1,2 Billionen Euro.",
            "de",
            1.2e12,
            "EUR",
            "exact",
            1.15e12,
            1.25e12,
        ),
        ("It raised €2.5 billion.", "en", 2.5e9, "EUR", "exact", 2.45e9, 2.55e9),
        ("Ein 2-Milliarden-Euro-Deal.", "de", 2e9, "EUR", "exact", 1.5e9, 2.5e9),
        ("knapp 15 Milliarden Dollar", "de", 15e9, "USD", "at_most", 13.5e9, 15e9),
        ("nearly $15 billion", "en", 15e9, "USD", "at_most", 13.5e9, 15e9),
        ("bis zu 10 Milliarden Euro", "de", 10e9, "EUR", "at_most", 0, 10e9),
        ("rund 900 Millionen Euro", "de", 900e6, "EUR", "approx", 850e6, 950e6),
        ("more than $29 billion", "en", 29e9, "USD", "at_least", 29e9, math.inf),
        ("gut 15 Milliarden Euro", "de", 15e9, "EUR", "at_least", 15e9, 16.5e9),
        ("between $10 billion and $12 billion", "en", 11e9, "USD", "approx", 9.5e9, 12.5e9),
        ("zwischen 10 und 12 Milliarden Euro", "de", 11e9, "EUR", "approx", 9.5e9, 12.5e9),
        ("a $14-15 billion deal", "en", 14.5e9, "USD", "approx", 13.5e9, 15.5e9),
        ("CHF 1 250 Millionen", "de", 1.25e9, "CHF", "exact", 1.2495e9, 1.2505e9),
    ],
)
def test_amounts(
    text: str, lang: str, value: float, unit: str, qualifier: str, low: float, high: float
) -> None:
    figs = extract_figures(text, lang)
    assert len(figs) == 1, figs
    f = figs[0]
    assert (f.unit, str(f.qualifier)) == (unit, qualifier)
    assert f.value == pytest.approx(value)
    assert f.low == pytest.approx(low)
    assert f.high == pytest.approx(high) if not math.isinf(high) else math.isinf(f.high)


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Llama 4 kam im Frühjahr 2025, GPT-4o im Mai.", "de"),
        ("Er bringt mehr als 20 Jahre Erfahrung mit.", "de"),
        ("Das Treffen beginnt am 13.06.2025 um 14:30 Uhr.", "de"),
        ("Call +49 30 1234567 or visit page 3 of 12.", "en"),
        ("The H100 and A100 chips, version 2.1.3, ranked No. 1 in 2024.", "en"),
        ("Seit 2016 wächst die Firma; im September 2024 kam Droege.", "de"),
    ],
)
def test_not_figures(text: str, lang: str) -> None:
    assert extract_figures(text, lang) == []


def test_multiplier_and_fraction() -> None:
    figs = extract_figures("Der Umsatz hat sich im vergangenen Jahr verdoppelt.", "de")
    assert [(f.value, f.kind, f.metric) for f in figs] == [(2.0, "multiplier", "revenue")]
    figs = extract_figures("Meta übernimmt ein Drittel der Anteile an Scale AI.", "de")
    assert [(round(f.value, 2), f.unit, f.metric) for f in figs] == [(33.33, "percent", "stake")]


def test_subject_buyer_to_target() -> None:
    figs = extract_figures("Meta is paying $14.3 billion for a 49% stake in Scale AI.", "en")
    assert [f.subject for f in figs] == ["Meta → Scale AI", "Meta → Scale AI"]
    assert [f.metric for f in figs] == ["deal_value", "stake"]


def test_period_quarter_and_relative() -> None:
    when = datetime(2025, 6, 13, tzinfo=UTC)
    figs = extract_figures(
        "Im ersten Quartal 2025 stieg der Umsatz auf 1,2 Milliarden Euro.", "de", when
    )
    assert [(f.metric, f.period) for f in figs] == [("revenue", "2025-Q1")]
    figs = extract_figures("Revenue reached $3.7 billion last year.", "en", when)
    assert [(f.metric, f.period) for f in figs] == [("revenue", "2024")]


def test_page_furniture_is_skipped() -> None:
    text = "Lesezeit: 4 Minuten | 12 Kommentare | Abo ab 9,99 Euro\nMeta zahlt 2 Milliarden Euro."
    assert [f.value for f in extract_figures(text, "de")] == [2e9]


def test_restatement_keeps_the_metric() -> None:
    text = (
        "Alibaba will mehr als 380 Milliarden Yuan in KI investieren. "
        "Das entspricht etwa 52 Milliarden Dollar."
    )
    figs = extract_figures(text, "de")
    assert [(f.unit, f.metric) for f in figs] == [("CNY", "deal_value"), ("USD", "deal_value")]


def test_subunits_and_bare_counts() -> None:
    figs = extract_figures("Die Gebühr beträgt 14 Cent pro Minute.", "de")
    assert [(f.value, f.unit) for f in figs] == [(0.14, "EUR")]
    figs = extract_figures("Microsoft has a workforce of 228,000.", "en")
    assert [(f.value, f.unit, f.metric) for f in figs] == [(228000, "count", "employees")]


def test_count_not_money_after_count_cue() -> None:
    text = (
        "Der Umsatz lag bei 2,8 Milliarden Euro. "
        "Die Zahl der aktiven Kunden lag bei 51,8 Millionen."
    )
    figs = extract_figures(text, "de")
    assert [(f.unit, f.metric) for f in figs] == [("EUR", "revenue"), ("count", "users")]


def test_seller_after_from_with_pay_verb() -> None:
    text = "Google will pay $2.4 billion to license technology from Windsurf."
    assert [f.subject for f in extract_figures(text, "en")] == ["Google → Windsurf"]
    text = "Mistral AI raised €600 million from General Catalyst."
    assert [f.subject for f in extract_figures(text, "en")] == ["General Catalyst → Mistral AI"]


def test_investor_named_a_sentence_before_a_receiving_figure() -> None:
    # the figure's sentence names nobody but receives; "von X" a sentence before is the investor
    text = (
        "Das Start-up Cinder Labs hat 250 Millionen Dollar eingesammelt. Angeführt wurde die "
        "Runde von Harbor Point Ventures; Cinder wird dabei mit 3 Milliarden Dollar bewertet. "
        "Das Unternehmen hat damit insgesamt 320 Millionen Dollar erhalten."
    )
    last = extract_figures(text, "de")[-1]
    assert last.metric == "funding_total" and last.subject is not None
    investor, target = last.subject.split(" → ")
    # (German suffix names keep one word before the suffix: docs/figures.md, Known weaknesses)
    assert investor.endswith("Point Ventures") and target == "Cinder Labs"


def test_lexicon_errors_name_the_file(tmp_path: Path) -> None:
    from pipeline.errors import ConfigError

    (tmp_path / "lexicons").mkdir()
    (tmp_path / "lexicons" / "figures.xx.toml").write_text(
        'lang = "xx"\n[metrics.bogus]\nunits = ["money"]\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"figures\.xx\.toml.*bogus"):
        load_lexicons(tmp_path)


def test_pool_workers_keep_their_lexicons_until_a_file_changes(tmp_path: Path) -> None:
    import os
    import shutil

    from pipeline.figures import lexicon_files
    from pipeline.work import worker_lexicons

    (tmp_path / "lexicons").mkdir()
    for f in lexicon_files(None):
        shutil.copy(f, tmp_path / "lexicons" / f.name)
    first = worker_lexicons(tmp_path)
    assert worker_lexicons(tmp_path) is first  # loaded once
    assert set(first) == {"de", "en"}
    # an edit, even one that keeps the size and the second of the old modification time
    en = tmp_path / "lexicons" / "figures.en.toml"
    before = en.stat()
    en.write_text(en.read_text("utf-8").replace('lang = "en"', 'lang = "EN"', 1), "utf-8")
    os.utime(en, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    assert en.stat().st_size == before.st_size
    edited = worker_lexicons(tmp_path)
    assert edited is not first and set(edited) == {"de", "EN"}
    (tmp_path / "lexicons" / "figures.xx.toml").write_text('lang = "xx"\n', "utf-8")
    assert set(worker_lexicons(tmp_path)) == {"de", "EN", "xx"}  # a new file


def test_names_after_one_word_and_multi_word_descriptors() -> None:
    from pipeline.figures_context import find_orgs
    from pipeline.figures_lexicon import build_lexicon

    text = "The deal values chip designer Ampere Computing at $6.5 billion; designer arm too."
    for descriptors in (["designer"], ["chip designer"]):
        lex = build_lexicon({"lang": "en", "organisations": {"descriptors": descriptors}})
        assert lex.orgs is not None
        assert [o.name for o in find_orgs(text, lex.orgs).orgs] == ["Ampere Computing"]


@pytest.mark.parametrize(
    ("lang", "text", "names"),
    [
        ("en", "Lovable, a Swedish vibe-coding startup, raised $200 million.", ["Lovable"]),
        ("en", "Acme Robotics, a New York startup, said so.", ["Acme Robotics"]),
        ("de", "Bei Qantify, einem Berliner KI-Start-up, steigt SAP ein.", ["Qantify", "SAP"]),
        # a function word: a phrase about the name, not a description of it
        ("en", "Steinberg, a partner in the firm, said so.", []),
        # a definite article also follows sentence adverbs
        ("en", "Meanwhile, the company, which makes chips, said so.", []),
        # the appositive introduces the name that follows it
        ("en", "Separately, a Chinese startup, DeepSeek, said so.", ["DeepSeek"]),
        # a word that also describes people
        ("en", "Jony Ive, a former Apple designer, joins.", ["Apple"]),
    ],
)
def test_names_described_by_an_appositive(
    lexicons: Mapping[str, FigureLexicon], lang: str, text: str, names: list[str]
) -> None:
    from pipeline.figures_context import find_orgs

    patterns = lexicons[lang].orgs
    assert patterns is not None
    assert [o.name for o in find_orgs(text, patterns).orgs] == names


def test_appositive_name_is_the_subject(lexicons: Mapping[str, FigureLexicon]) -> None:
    text = (
        "Lovable, a Swedish vibe-coding startup, raised $200 million at a $1.8 billion valuation."
    )
    figures = extract_figures(text, "en", None, lexicons)
    assert [(f.metric, f.subject) for f in figures] == [
        ("deal_value", "Lovable"),
        ("valuation", "Lovable"),
    ]


def test_loaded_lexicons_share_organisation_patterns(
    lexicons: Mapping[str, FigureLexicon],
) -> None:
    # a product alias of one language's file is found in text of every language
    aliases = {a: c for lx in lexicons.values() for a, c in lx.org_aliases.items()}
    for lx in lexicons.values():
        assert lx.orgs is not None
        assert {**dict.fromkeys(lx.known_orgs), **aliases}.keys() == lx.orgs.names.keys()
        for alias, org in aliases.items():
            m = lx.orgs.known_re.search(f"Nutzer von {alias} zahlen.")
            assert m is not None and lx.orgs.names[m.group("n")] == org
