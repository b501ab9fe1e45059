"""Figures: every reported number in German or English news text, with what it measures.

``extract_figures(text, lang, published, lexicons)`` returns ``Figure`` records:
the value in base units, the unit (ISO currency, ``percent``, ``count``, ``years``
for ages, ``x`` for multipliers), the qualifier and the interval the wording
allows, the metric, the subject, the period, and the quote with its offsets.

The number grammar is in ``pipeline.numbers``, the language data in
``config/lexicons/figures.*.toml`` (``pipeline.figures_lexicon``), the reading
of context (metric, subject, period) in ``pipeline.figures_context``. The
decisions behind the rules are written down in ``docs/figures.md``.
"""

from __future__ import annotations

import heapq
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.figures_context import (
    PREV_SENTENCES,
    OrgIndex,
    Span,
    assign_metric,
    assign_period,
    assign_subject,
    find_orgs,
    find_periods,
    sentence_bounds,
)
from pipeline.figures_lexicon import FigureLexicon, load_lexicon_file, org_patterns
from pipeline.models import Figure, Qualifier
from pipeline.numbers import Numeral, interval, parse_numeral

__all__ = ["FigureLexicon", "detect_lang", "extract_figures", "load_lexicons"]

log = logging.getLogger(__name__)

# Set on the dev split of tests/data/figures (scripts/eval_figures.py); re-run after changes.
INHERIT_WINDOW = 600  # chars back to a money figure whose currency a bare "zwei Milliarden" takes
MIN_WORD_COUNT = 10  # a number word before a count noun counts from here ("a dozen", not "two")
DETECT_SAMPLE = 4000  # chars of text language detection looks at
AGE_RANGE = (14, 99)
YEARS = (1900, 2100)  # a bare four-digit number in this range is a year, never a count
MIN_BARE_COUNT = 1000  # a bare number after a count cue counts from here ("workforce of 228,000")
COUNT_NOUN_GAP = 2  # adjectives allowed between a number and its count noun
COUNT_CONTEXT = 60  # chars before a bare "51,8 Millionen" searched for a count cue
COUNT_CUE_GAP = 30  # chars between such a cue and the number
FURNITURE_WORDS = 2  # distinct furniture words that make a short line furniture
FURNITURE_LINE = 160  # a line longer than this either side of a figure is article text
PRIOR = {"valuation": "prior_valuation"}  # the earlier value of a metric ("up from $X")
RESTATE_WINDOW = 120  # chars between a figure and its restatement ("or $45 billion")
CHANGE = "__change__"  # marker: a percentage after "um"/"by" is a change, no metric
SENTENCE_GAP = 200  # chars of blank space skipped back to the previous sentence
NEIGHBOURS = 30  # figures either side that can stand between a figure and its cues

_NUM_RE = re.compile(r"\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?![\d.,]\d)|\d+(?:[.,'’\u202f]\d+)*")
_GAP_RE = re.compile(r"[ \u00a0\u202f]*")
_HYPHEN_GAP_RE = re.compile(r"-(?=[^\W\d_])|[ \u00a0\u202f]*")
_TAIL_RE = re.compile(r"-[\w-]*")
_NEXT_WORD_RE = re.compile(r"[ \u00a0\u202f]*(?:(?P<w>[^\W\d_][\w-]*)|(?P<p>\S)|\Z)")
_WORD_RE = re.compile(r"[^\W\d_]+")
_LAST_WORD_RE = re.compile(r"([^\W\d_][\w-]*)[ \u00a0]*\Z")
_ENDS_IN_LETTER_RE = re.compile(r"[^\W\d_][ \u00a0]*\Z")
# "up from roughly 500", "von 90.000": a small bare number after a count cue and a link word
_COUNT_LINK_RE = re.compile(
    r"(?<![^\W\d_])(?:of|from|to|von|auf|bei)(?:[ \u00a0]+[^\W\d_]+)?[ \u00a0]+\Z", re.IGNORECASE
)
_ARTICLE_BEFORE_RE = re.compile(
    r"(?<![^\W\d_])(?:eine[nrm]?|an?|das|dem|the)[ \u00a0]+\Z", re.IGNORECASE
)


def lexicon_files(config_dir: Path | None = None) -> list[Path]:
    """The ``lexicons/figures.<lang>.toml`` files under ``config_dir`` (default: shipped)."""
    if config_dir is None:
        from pipeline.paths import shipped_config_dir

        config_dir = shipped_config_dir()
    files = sorted((config_dir / "lexicons").glob("figures.*.toml"))
    if not files:
        raise ConfigError("no lexicons/figures.*.toml found", path=str(config_dir))
    return files


def load_lexicons(config_dir: Path | None = None) -> Mapping[str, FigureLexicon]:
    """Read every ``lexicons/figures.<lang>.toml`` under ``config_dir`` (default: shipped).

    Organisation names are shared between languages: each lexicon gets the union.
    """
    lexicons = [load_lexicon_file(f) for f in lexicon_files(config_dir)]
    known = tuple(sorted({n for lx in lexicons for n in lx.known_orgs}))
    shared = [replace(lx, known_orgs=known) for lx in lexicons]
    return {lx.lang: replace(lx, orgs=org_patterns(shared, lx.lang)) for lx in shared}


def detect_lang(text: str, lexicons: Mapping[str, FigureLexicon] | None = None) -> str:
    """``de`` or ``en`` (or another lexicon's language) by counting stopwords; a word
    written with a letter only that language's stopwords and months use ("übernimmt": ü)
    counts half, which decides short texts whose few stopwords both languages share."""
    lexicons = lexicons or load_lexicons()
    words = [w.lower() for w in _WORD_RE.findall(text[:DETECT_SAMPLE])]
    letters = _own_letters(lexicons)
    scores = {
        lang: sum(1 for w in words if w in lx.stopwords)
        + 0.5 * sum(1 for w in words if letters[lang].intersection(w))
        - 0.001 * (lang != "en")
        for lang, lx in lexicons.items()
    }
    return max(scores, key=lambda k: scores[k])


def _own_letters(lexicons: Mapping[str, FigureLexicon]) -> dict[str, frozenset[str]]:
    """Per language, the non-ASCII letters of its stopwords and months that no other
    language's use (German: ä, ö, ü, ß)."""
    used = {
        lang: {c for w in (*lx.stopwords, *lx.months) for c in w.lower() if not c.isascii()}
        for lang, lx in lexicons.items()
    }
    return {
        lang: frozenset(own - set().union(*(u for other, u in used.items() if other != lang)))
        for lang, own in used.items()
    }


@dataclass(frozen=True)
class _Raw:
    """A figure read from the number grammar, before its context is read."""

    start: int
    end: int
    context_end: int  # end of a compound tail ("-Preis"), for metric cues
    value: float
    low: float
    high: float
    unit: str
    unit_kind: str  # money / percent / count / years / x
    qualifier: str
    kind: str = "absolute"
    metric: str | None = None
    subject: str | None = None
    needs_metric: bool = False


@dataclass(frozen=True)
class _Tail:
    end: int
    factor: Decimal | None
    currency: str | None
    percent: bool
    attached_scale: bool


def _word_before(text: str, pos: int) -> str:
    m = _LAST_WORD_RE.search(text[max(0, pos - 40) : pos])
    return m.group(1) if m else ""


def _qualifier_before(text: str, pos: int, lex: FigureLexicon) -> tuple[str, str, int] | None:
    window = text[max(0, pos - 40) : pos]
    m = lex.qualifier_re.search(window)
    if not m:
        return None
    phrase = m.group("q").lower()
    qual, bound = lex.qualifiers[phrase]
    qstart = pos - len(window) + m.start("q")
    before = _word_before(text, qstart)
    if before.lower() in lex.qualifier_blockers:
        return None
    if (
        phrase in lex.noun_blocked
        and before[:1].isupper()
        and before.lower() not in lex.stopwords
        and _ENDS_IN_LETTER_RE.search(text[max(0, qstart - 40) : qstart])
    ):
        return None
    return qual, bound, qstart


def _read_tail(text: str, pos: int, lex: FigureLexicon, has_prefix: bool) -> _Tail:
    """Scale word, currency and percent sign after the digits."""
    gap = _HYPHEN_GAP_RE.match(text, pos)
    q = gap.end() if gap else pos
    attached = q == pos
    factor: Decimal | None = None
    attached_scale = False
    m = lex.scale_re.match(text, q)
    if m:
        f, only_attached = lex.scales[m.group(0)]
        if not only_attached or attached or (has_prefix and len(m.group(0)) > 1):
            factor, attached_scale = f, only_attached
            pos = m.end()
            gap = _HYPHEN_GAP_RE.match(text, pos)
            q = gap.end() if gap else pos
    currency = None
    percent = False
    sub = lex.subunit_re.match(text, q) if factor is None and q > pos else None
    if sub:
        code, sub_factor = lex.subunits[sub.group(0)]
        return _Tail(sub.end(), sub_factor, code, False, False)
    cm = lex.currency_re.match(text, q)
    if cm and not (cm.group(0) in ("$", "€", "£") and q > pos and factor is None and not attached):
        currency = lex.currencies[cm.group(0)]
        pos = cm.end()
    else:
        pm = lex.percent_re.match(text, q)
        if pm and factor is None:
            percent = True
            pos = pm.end()
    return _Tail(pos, factor, currency, percent, attached_scale)


def _count_noun(text: str, pos: int, lex: FigureLexicon) -> tuple[str, int] | None:
    """A count noun right after ``pos``; up to COUNT_NOUN_GAP adjectives may stand between
    ("3 million paying business users")."""
    for _ in range(COUNT_NOUN_GAP + 1):
        q = _GAP_RE.match(text, pos)
        q_end = q.end() if q else pos
        m = lex.count_noun_re.match(text, q_end)
        if m:
            return lex.count_nouns[m.group(0)], m.end()
        w = _WORD_RE.match(text, q_end)
        if not w or w.group(0).lower() in lex.stopwords or (q_end == pos and pos > 0):
            return None
        pos = w.end()
    return None


def _money_context_next(text: str, pos: int, lex: FigureLexicon) -> bool:
    """After a bare "zwei Milliarden": may it be money (True) or is a noun counted?"""
    m = _NEXT_WORD_RE.match(text, pos)
    if not m or not m.group("w"):
        return True
    word = m.group("w")
    if word.lower() in lex.stopwords:
        return True
    if lex.cue_res["money"].match(text, m.start("w")):
        return True
    return lex.lang == "de" and word[0].islower()


def _inherit_currency(raws: list[_Raw], pos: int) -> str | None:
    for raw in reversed(raws):
        if raw.end < pos - INHERIT_WINDOW:
            return None
        if raw.unit_kind == "money":
            return raw.unit
    return None


def _numeral_at(text: str, m: re.Match[str], lex: FigureLexicon) -> Numeral | None:
    if m.lastgroup == "word":
        return Numeral(lex.number_words[m.group(0).lower()], 0)
    return parse_numeral(m.group(0), lex.decimal_sep)


def _skip_digits(text: str, s: int, e: int) -> bool:
    """Digits that are part of a name, version, time or code ("GPT-4", "H100", "14:30")."""
    before = text[s - 1] if s > 0 else " "
    if before.isalnum() or before == "_":
        return True
    if before in "-./" and s > 1 and (text[s - 2].isalpha() or text[s - 2].isdigit()):
        return True
    if before in ":" and s > 1 and text[s - 2].isdigit():
        return True
    after = text[e : e + 2]
    return len(after) == 2 and after[0] in ":/" and after[1].isdigit()


def _scan_numbers(text: str, lex: FigureLexicon, blocked: list[tuple[int, int]]) -> list[_Raw]:
    raws: list[_Raw] = []
    candidates = heapq.merge(
        _NUM_RE.finditer(text),
        lex.number_word_scan_re.finditer(text),
        key=lambda m: (m.start(), -m.end()),
    )
    pos = 0
    bi = 0
    for m in candidates:
        s, e = m.start(), m.end()
        if s < pos:
            continue
        while bi < len(blocked) and blocked[bi][1] <= s:
            bi += 1
        if bi < len(blocked) and blocked[bi][0] <= s < blocked[bi][1]:
            continue
        is_word = m.lastgroup == "word"
        if not is_word and _skip_digits(text, s, e):
            continue
        raw = _read_figure(text, m, lex, raws)
        if raw is not None:
            raws.append(raw)
            pos = raw.end
    return raws


def _prefix(text: str, s: int, lex: FigureLexicon) -> tuple[int, str | None]:
    """A currency written before the digits ("$14", "€ 2,5", "CHF 1 250")."""
    window = text[max(0, s - 6) : s]
    m = lex.prefix_re.search(window)
    if not m:
        return s, None
    return s - (len(window) - m.start()), lex.currencies.get(m.group(0).strip(" \u00a0"))


def _read_range(
    text: str, start: int, e: int, num: Numeral, tail1: _Tail, lex: FigureLexicon, prefixed: bool
) -> tuple[int, Numeral, _Tail] | None:
    """The second number of a range ("14 bis 15 Mrd.", "$14-15 billion", "zwischen 10 und
    12 Mrd.", "$500 million to $1 billion"): (start of the range, numeral, its tail)."""
    if _word_before(text, start).lower() in lex.range_blockers:
        return None
    opener = lex.range_opener_re.search(text[max(0, start - 20) : start])
    joiner_re = lex.range_partner_res[opener.group("o").lower()] if opener else lex.range_joiner_re
    pos = tail1.end if (tail1.factor or tail1.currency) else e
    jm = joiner_re.match(text, pos)
    if not jm:
        return None
    after = jm.end()
    cm = lex.prefix_start_re.match(text, after)
    if cm:
        after = cm.end()
    nm = _NUM_RE.match(text, after) or lex.number_word_re.match(text, after)
    if not nm:
        return None
    word = nm.group(0).lower()
    second = (
        Numeral(lex.number_words[word], 0)
        if word in lex.number_words
        else parse_numeral(nm.group(0), lex.decimal_sep)
    )
    if second is None:
        return None
    tail2 = _read_tail(text, nm.end(), lex, prefixed or cm is not None)
    if not (tail2.factor or tail2.currency or tail2.percent or _count_noun(text, tail2.end, lex)):
        return None
    f1 = tail1.factor or tail2.factor or Decimal(1)
    f2 = tail2.factor or tail1.factor or Decimal(1)
    if second.value * f2 <= num.value * f1:
        return None
    begin = start - (len(text[max(0, start - 20) : start]) - opener.start()) if opener else start
    return begin, second, tail2


def _count_cue_before(text: str, start: int, lex: FigureLexicon, gap: int = 0) -> bool:
    """A count cue shortly before a number ("a workforce of 228,000", "Die Zahl der aktiven
    Kunden lag bei 51,8 Millionen"), not across a sentence end."""
    cue_re = lex.cue_res.get("count")
    if cue_re is None:
        return False
    lo = max(0, start - (gap or COUNT_CUE_GAP))
    stop = max(text.rfind(". ", lo, start), text.rfind("\n", lo, start))
    for m in cue_re.finditer(text, max(lo, stop + 1), start):
        if m.lastgroup and not lex.cue_weights["count"][m.lastgroup][0].startswith("none"):
            return True
    return False


def _read_figure(text: str, m: re.Match[str], lex: FigureLexicon, raws: list[_Raw]) -> _Raw | None:
    s, e = m.start(), m.end()
    is_word = m.lastgroup == "word"
    num = _numeral_at(text, m, lex)
    if num is None:
        return None
    start, prefix_currency = (s, None) if is_word else _prefix(text, s, lex)
    if lex.vague_re.search(text[max(0, start - 20) : start]):
        return None  # "mehrere hundert Millionen", "several hundred million"
    tail1 = _read_tail(text, e, lex, prefix_currency is not None)
    rng = _read_range(text, start, e, num, tail1, lex, bool(prefix_currency))
    tail = rng[2] if rng else tail1
    factor2 = tail.factor or tail1.factor or Decimal(1)
    factor = tail1.factor or tail.factor or Decimal(1)
    end = tail.end
    currency = prefix_currency or tail.currency or tail1.currency
    unit_kind: str
    metric: str | None = None
    kind = "absolute"
    needs_metric = False
    if currency:
        unit_kind, unit = "money", currency
    elif tail.percent:
        unit_kind, unit = "percent", "percent"
    else:
        noun = _count_noun(text, end, lex)
        suffix = lex.multiplier_suffix_re.match(text, e) if not is_word else None
        inherited = None
        noun_follows = False
        if tail.factor is not None and not tail.attached_scale:
            if _money_context_next(text, end, lex):
                inherited = _inherit_currency(raws, s)
            else:
                noun_follows = True
        if noun and (not is_word or num.value * factor >= MIN_WORD_COUNT):
            unit_kind, unit, metric = "count", "count", noun[0]
        elif suffix and tail.factor is None:
            unit_kind, unit, kind, end = "x", "x", "multiplier", suffix.end()
            needs_metric = True
        elif inherited and not _count_cue_before(text, start, lex, COUNT_CONTEXT):
            unit_kind, unit = "money", inherited
        elif tail.factor is not None and not tail.attached_scale:
            # "2 Millionen Downloads" counts something; "stieg auf 268 Millionen" needs a cue
            unit_kind, unit, needs_metric = "count", "count", not noun_follows
        elif (
            not is_word
            and tail.factor is None
            and (num.value >= MIN_BARE_COUNT or _COUNT_LINK_RE.search(text, max(0, s - 30), s))
            and not (
                num.decimals == 0 and m.group(0).isdigit() and YEARS[0] <= num.value <= YEARS[1]
            )
            and _count_cue_before(text, start, lex)
        ):
            unit_kind, unit, needs_metric = "count", "count", True
        else:
            return None
    if tail.attached_scale and unit_kind != "money":
        return None
    if is_word and num.value == 1 and tail.factor is None:
        return None  # "a dollar", "ein Prozent" of wording: only "a billion" reads as a number
    qual_info = _qualifier_before(text, start, lex)
    qualifier, bound = "exact", "open"
    if qual_info:
        qualifier, bound, start = qual_info
    else:
        am = lex.qualifier_after_re.match(text, end)
        if am:
            qualifier, bound = lex.qualifiers_after[am.group("q").lower()]
    if unit_kind == "percent" and _word_before(text, start).lower() in lex.percent_change_words:
        metric = CHANGE
    if rng is not None:
        start = min(start, rng[0])
        low, _ = interval(num, factor, "exact")
        _, high = interval(rng[1], factor2, "exact")
        value = float((num.value * factor + rng[1].value * factor2) / 2)
        qualifier = "approx"
    else:
        value = float(num.value * factor)
        low, high = interval(num, factor, qualifier, bound)
    tail_m = _TAIL_RE.match(text, end)
    return _Raw(
        start=start,
        end=end,
        context_end=tail_m.end() if tail_m else end,
        value=value,
        low=low,
        high=high,
        unit=unit,
        unit_kind=unit_kind,
        qualifier=qualifier,
        kind=kind,
        metric=metric,
        needs_metric=needs_metric,
    )


def _scan_ages(text: str, lex: FigureLexicon) -> list[_Raw]:
    out: list[_Raw] = []
    for pattern in lex.age_res:
        for m in pattern.finditer(text):
            age = int(m.group("age"))
            if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
                continue
            name = m.groupdict().get("name")
            if name in lex.org_stop:  # "CEO, 61": an age, but not a name
                name = None
            out.append(
                _Raw(
                    start=m.start(),
                    end=m.end(),
                    context_end=m.end(),
                    value=float(age),
                    low=age - 0.5,
                    high=age + 0.5,
                    unit="years",
                    unit_kind="years",
                    qualifier="exact",
                    metric="age",
                    subject=name,
                )
            )
    out.sort(key=lambda r: r.start)
    kept: list[_Raw] = []
    for raw in out:
        if not kept or raw.start >= kept[-1].end:
            kept.append(raw)
    return kept


def _word_figure(
    text: str, m: re.Match[str], v: float, unit: str, kind: str, lex: FigureLexicon
) -> _Raw:
    """A multiplier or fraction word, with a qualifier before it ("fast eine Verdreifachung",
    "knapp ein Drittel")."""
    art = _ARTICLE_BEFORE_RE.search(text, max(0, m.start() - 8), m.start())
    qual = _qualifier_before(text, art.start() if art else m.start(), lex)
    if qual is None:
        return _Raw(
            m.start(), m.end(), m.end(), v, v, v, unit, unit, "exact", kind, needs_metric=True
        )
    low, high = interval(Numeral(Decimal(repr(v)), 0), Decimal(1), qual[0], qual[1])
    return _Raw(
        qual[2], m.end(), m.end(), v, low, high, unit, unit, qual[0], kind, needs_metric=True
    )


def _scan_words(text: str, lex: FigureLexicon, taken: list[tuple[int, int]]) -> list[_Raw]:
    """Multiplier words ("verdoppelt") and fractions ("ein Drittel der Anteile")."""
    out: list[_Raw] = []
    for m in lex.multiplier_re.finditer(text):
        v = float(lex.multipliers[m.group(0).lower()])
        out.append(_word_figure(text, m, v, "x", "multiplier", lex))
    for m in lex.fraction_re.finditer(text):
        nxt = _NEXT_WORD_RE.match(text, m.end())
        if not nxt or not nxt.group("w") or nxt.group("w").lower() not in lex.fraction_links:
            continue
        a, b = lex.fractions[m.group(0).lower()]
        out.append(_word_figure(text, m, 100.0 * a / b, "percent", "absolute", lex))
    return [r for r in out if not any(s < r.end and r.start < e for s, e in taken)]


def _scan(text: str, lex: FigureLexicon) -> list[_Raw]:
    ages = _scan_ages(text, lex)
    numbers = _scan_numbers(text, lex, [(r.start, r.end) for r in ages])
    taken = [(r.start, r.end) for r in (*ages, *numbers)]
    words = _scan_words(text, lex, taken)
    return sorted([*ages, *numbers, *words], key=lambda r: r.start)


def _previous(text: str, sent: Span, lex: FigureLexicon) -> list[Span]:
    """Up to PREV_SENTENCES sentences before ``sent``, nearest first, within its paragraph
    or the one before."""
    out: list[Span] = []
    cur = sent
    for _ in range(PREV_SENTENCES):
        base = max(0, cur.start - SENTENCE_GAP)
        before = text[base : cur.start].rstrip()
        if not before:
            break
        cur = sentence_bounds(text, base + len(before) - 1, lex)
        out.append(cur)
    return out


def _figures(
    text: str,
    raws: list[_Raw],
    lex: FigureLexicon,
    lexicons: Mapping[str, FigureLexicon],
    published: datetime | None,
) -> Iterator[Figure]:
    orgs: OrgIndex | None = None  # searched when a figure first needs a subject
    spans = [(r.start, r.end) for r in raws]
    periods_cache: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
    previous: Figure | None = None
    for i, raw in enumerate(raws):
        near = spans[max(0, i - NEIGHBOURS) : i] + spans[i + 1 : i + 1 + NEIGHBOURS]
        if _furniture(text, raw.start, raw.end, lex):
            continue
        sent = sentence_bounds(text, raw.start, lex)
        metric = raw.metric
        if metric == CHANGE:
            metric = None
        elif metric is None:
            metric = _restated_metric(text, raw, previous, lex) or assign_metric(
                text, raw.start, raw.context_end, raw.unit_kind, sent, near, lex
            )
        if raw.needs_metric and metric is None:
            continue
        if metric == "age":  # a person, named by the age pattern or not at all
            subject = raw.subject
        else:
            if orgs is None:
                patterns = lex.orgs or org_patterns(list(lexicons.values()), lex.lang)
                orgs = find_orgs(text, patterns)
            subject = assign_subject(
                text, raw.start, raw.end, metric, sent, _previous(text, sent, lex), orgs, lex
            )
        period = None
        spec = lex.metrics.get(metric) if metric else None
        if spec is not None and spec.periodic:
            key = (sent.start, sent.end)
            if key not in periods_cache:
                periods_cache[key] = find_periods(text, sent, published, lex)
            in_sentence = [
                (r.start, r.end)
                for r in raws[max(0, i - NEIGHBOURS) : i + 1 + NEIGHBOURS]
                if r is not raw
                and r.unit != "years"
                and not (r.needs_metric and r.unit != "count")  # words not yet read
                and sent.start <= r.start
                and r.end <= sent.end
            ]
            period = assign_period(raw.start, raw.end, periods_cache[key], in_sentence)
        previous = Figure(
            value=raw.value,
            unit=raw.unit,
            qualifier=Qualifier(raw.qualifier),
            low=raw.low,
            high=raw.high,
            metric=metric,
            subject=subject,
            period=period,
            quote=text[raw.start : raw.end],
            start=raw.start,
            end=raw.end,
            kind=raw.kind,
        )
        yield previous


def _furniture(text: str, start: int, end: int, lex: FigureLexicon) -> bool:
    """True when the figure stands in a short line of page furniture ("Lesezeit: 4 Minuten |
    12 Kommentare", "Subscribe for $1 a week")."""
    lo = max(0, start - FURNITURE_LINE)
    nl = text.rfind("\n", lo, start)
    if nl < 0 and lo > 0:
        return False
    hi = text.find("\n", end, end + FURNITURE_LINE)
    if hi < 0 and end + FURNITURE_LINE < len(text):
        return False
    line = text[nl + 1 : hi if hi >= 0 else len(text)]
    if " | " in line:
        return True
    return len({m.group(0).lower() for m in lex.furniture_re.finditer(line)}) >= FURNITURE_WORDS


def _restated_metric(
    text: str, raw: _Raw, previous: Figure | None, lex: FigureLexicon
) -> str | None:
    """The metric of the figure before when this one restates it in another currency or
    measure ("380 Mrd. Yuan. Das entspricht etwa 52 Mrd. Dollar", "$33bn, or $45bn")."""
    if previous is None or previous.metric is None or raw.unit_kind != "money":
        return None
    if raw.start - previous.end > RESTATE_WINDOW or previous.unit in ("percent", "count", "x"):
        return None
    window = text[max(previous.end, raw.start - 40) : raw.start]
    if lex.same_as_previous_re.search(window):
        return previous.metric
    if lex.previous_value_re.search(window):
        return PRIOR.get(previous.metric, previous.metric)
    return None


def extract_figures(
    text: str,
    lang: str = "auto",
    published: datetime | None = None,
    lexicons: Mapping[str, FigureLexicon] | None = None,
) -> list[Figure]:
    """Every figure in ``text``, in order of appearance (see the module docstring)."""
    lexicons = lexicons or load_lexicons()
    if lang == "auto" or lang not in lexicons:
        lang = detect_lang(text, lexicons)
    lex = lexicons[lang]
    raws = _scan(text, lex)
    figures = list(_figures(text, raws, lex, lexicons, published))
    log.debug("figures lang=%s n=%d", lang, len(figures))
    return figures
