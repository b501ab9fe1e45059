"""Per-language lexicons for figure extraction, read from ``config/lexicons/figures.*.toml``.

A lexicon is data: scale words, currencies, qualifier words, metric cues, period
phrases and organisation names. ``load_lexicons`` builds a frozen
``FigureLexicon`` per file with its regexes compiled once; adding a language is
adding a file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipeline.errors import ConfigError
from pipeline.models import METRICS

QUALIFIERS = ("exact", "approx", "at_least", "at_most")
BOUNDS = ("open", "near", "round")
UNIT_KINDS = ("money", "percent", "count", "years")
UNIT_KINDS_ALL = (*UNIT_KINDS, "x")  # "x": multipliers
NO_METRIC = "none"  # lexicon tables [metrics.none*] hold cues of quantities that are no metric


@dataclass(frozen=True)
class MetricSpec:
    key: str
    units: tuple[str, ...]
    periodic: bool
    nouns: tuple[str, ...]


@dataclass(frozen=True)
class FigureLexicon:
    """Everything language-specific the extractor needs, compiled."""

    lang: str
    decimal_sep: str
    stopwords: frozenset[str]
    abbreviations: frozenset[str]
    scale_re: re.Pattern[str]
    scales: Mapping[str, tuple[Decimal, bool]]
    currency_re: re.Pattern[str]
    currencies: Mapping[str, str]
    prefix_re: re.Pattern[str]
    currency_prefixes: tuple[str, ...]
    percent_re: re.Pattern[str]
    qualifier_re: re.Pattern[str]
    qualifiers: Mapping[str, tuple[str, str]]
    qualifier_after_re: re.Pattern[str]
    qualifiers_after: Mapping[str, tuple[str, str]]
    qualifier_blockers: frozenset[str]
    noun_blocked: frozenset[str]
    range_joiners: tuple[str, ...]
    range_openers: Mapping[str, str]
    range_blockers: frozenset[str]
    range_opener_re: re.Pattern[str]  # "zwischen " right before the first number
    range_joiner_re: re.Pattern[str]  # " bis ", "–" after it
    range_partner_res: Mapping[str, re.Pattern[str]]  # opener -> its joiner ("zwischen" -> "und")
    prefix_start_re: re.Pattern[str]  # a currency prefix at a position
    percent_change_words: frozenset[str]
    same_as_previous_re: re.Pattern[str]  # "das entspricht", "or" right before a figure
    previous_value_re: re.Pattern[str]  # "waren es noch", "up from" right before a figure
    vague_re: re.Pattern[str]  # "mehrere", "several" right before a number
    furniture_re: re.Pattern[str]  # page furniture words in a line
    subunits: Mapping[str, tuple[str, Decimal]]
    subunit_re: re.Pattern[str]
    year_before: tuple[str, ...]
    target_verbs_after: tuple[str, ...]
    subject_verbs: frozenset[str]
    number_word_re: re.Pattern[str]
    number_word_scan_re: re.Pattern[str]  # number_word_re as the group "word"
    number_words: Mapping[str, Decimal]
    fraction_re: re.Pattern[str]
    fractions: Mapping[str, tuple[int, int]]
    fraction_links: frozenset[str]
    multiplier_re: re.Pattern[str]
    multipliers: Mapping[str, Decimal]
    multiplier_suffix_re: re.Pattern[str]
    age_res: tuple[re.Pattern[str], ...]
    this_year: tuple[str, ...]
    last_year: tuple[str, ...]
    next_year: tuple[str, ...]
    relative_year_re: re.Pattern[str]
    year_re: re.Pattern[str]
    year_blockers: frozenset[str]
    quarter_re: re.Pattern[str]
    quarter_words: Mapping[str, int]
    quarter_relative: Mapping[str, int]
    half_re: re.Pattern[str]
    half_words: Mapping[str, int]
    known_orgs: tuple[str, ...]
    org_aliases: Mapping[str, str]
    descriptors: tuple[str, ...]
    appositive_articles: tuple[str, ...]
    appositive_descriptors: tuple[str, ...]
    months: tuple[str, ...]
    org_suffixes: tuple[str, ...]
    org_stop: frozenset[str]
    target_markers: tuple[str, ...]
    target_verbs: tuple[str, ...]
    investor_markers: tuple[str, ...]
    source_markers: tuple[str, ...]
    from_markers: tuple[str, ...]
    receive_verbs: tuple[str, ...]
    receive_verb_re: re.Pattern[str]  # any receive verb as a word, in lower-cased text
    subject_skip: tuple[str, ...]
    metrics: Mapping[str, MetricSpec]
    cue_res: Mapping[str, re.Pattern[str]]  # per unit kind (money, percent, count, years, x)
    cue_weights: Mapping[str, Mapping[str, tuple[str, float]]]  # unit kind -> group -> cue
    count_noun_re: re.Pattern[str]
    count_nouns: Mapping[str, str]
    # organisation-name patterns over the lexicons loaded together (``org_patterns``); set by
    # ``build_lexicon`` for this lexicon alone and by ``figures.load_lexicons`` for the set
    orgs: OrgPatterns | None = None


_WORD_CHARS = re.compile(r"[\w-]*")


@dataclass(frozen=True)
class OrgPatterns:
    """What ``figures_context.find_orgs`` searches with, for one language over a set of
    lexicons (names, suffixes, stop words and months are shared by the set), compiled once."""

    names: Mapping[str, str]  # a known name or product alias as written -> the organisation
    suffixes: tuple[str, ...]  # company suffixes ("AG", "Inc."), sorted
    stop: frozenset[str]  # capitalised words that are no name
    months: frozenset[str]  # capitalised month names of every language
    stopwords: frozenset[str]  # this language's stopwords
    known_re: re.Pattern[str]  # a known name, with a genitive "s" or "'s"
    suffix_re: re.Pattern[str]  # "Scale AI", "Index Ventures"
    descriptor_re: re.Pattern[str] | None  # "der Datenspezialist Informatica"
    lead_re: re.Pattern[str] | None  # "Duolingo said …"
    appositive_re: re.Pattern[str] | None  # "Lovable, a Swedish vibe-coding startup, …"
    appositive_ends: tuple[str, ...]  # how the appositive's last word ends, lower case
    object_re: re.Pattern[str] | None  # "agreed to buy Informatica"


def names_re(names: Iterable[str]) -> re.Pattern[str]:
    """Any of ``names`` as a whole word, with a genitive "s" or "'s" (group ``g``)."""
    names = tuple(names)
    return re.compile(
        rf"(?<![\w-]){starts_of(names)}(?P<n>{alternation(names)})(?P<g>s|['’]s?)?(?![\w])"
    )


def org_patterns(lexicons: Sequence[FigureLexicon], lang: str) -> OrgPatterns:
    """The organisation patterns of ``lang`` over ``lexicons`` (see ``OrgPatterns``)."""
    names = {n: n for lx in lexicons for n in lx.known_orgs}
    names.update({a: c for lx in lexicons for a, c in lx.org_aliases.items()})
    suffixes = tuple(sorted({s for lx in lexicons for s in lx.org_suffixes}))
    lex = next((lx for lx in lexicons if lx.lang == lang), lexicons[0])
    heads = 2 if lang == "en" else 0
    suffix_re = re.compile(
        rf"(?<![\w-])(?P<n>(?:[A-Z][\w&.’'-]*[ ]){{0,{heads}}}(?:[A-Z][\w&.-]*|[a-z]+[A-Z]\w*))"
        rf"[ ](?P<s>{alternation(suffixes)})(?![\w])"
    )
    descriptor_re = None
    if lex.descriptors:
        # when every descriptor is one word, the word holding it must be followed by a
        # capitalised one: a look-ahead that skips most words without trying each descriptor
        one_word = all(_WORD_CHARS.fullmatch(d) for d in lex.descriptors)
        ahead = r"(?=[\w-]*[ \u00a0]+[A-Z])" if one_word else ""
        descriptor_re = re.compile(
            rf"(?<![\w-]){ahead}(?i:[\w-]*(?:{alternation(lex.descriptors)}))[ \u00a0]+"
            rf"(?P<n>[A-Z][\w&.-]*(?:[ ][A-Z][\w&.-]*)?)(?![\w-])"
        )
    lead_re = None
    if lex.subject_verbs:
        lead_re = re.compile(  # (the look-ahead first: most positions hold no capital)
            rf"(?=[A-Z])(?:^|(?<=[.!?][ ])|(?<=\n))(?P<n>[A-Z][A-Za-z0-9&]+)(?:['’]s)?[ ]"
            rf"(?:{alternation(lex.subject_verbs)})(?![\w])",
            re.MULTILINE,
        )
    appositive_re = None
    if lex.appositive_articles and lex.appositive_descriptors:
        # a comma, then an appositive closed by punctuation whose last word (group "d") is to
        # end in a word only organisations are described by ("startup", not "designer"),
        # checked with str.endswith; the name is looked for before the comma. A literal comma
        # first keeps the scan fast, and no alternation after a "[\w-]*" keeps it linear.
        appositive_re = re.compile(
            rf",[ \u00a0]+(?:{alternation(lex.appositive_articles)})[ \u00a0]+"
            rf"(?P<a>(?:[\w'’-]+[ \u00a0]+){{0,4}})(?P<d>[\w-]+)"
            r"(?=[,;)])(?![,][ \u00a0]+[A-Z])"  # not "Separately, a startup, DeepSeek, …"
        )
    verbs = [v for v in lex.target_verbs if " " not in v]
    object_re = None
    if verbs:
        object_re = re.compile(
            rf"(?<![\w-]){starts_of(verbs)}(?:{alternation(verbs)})[ ]+"
            rf"(?:(?:the|den|die|das|der)[ ]+)?"
            rf"(?P<n>[A-Z][\w&.]*(?:[ ][A-Z][\w&.]*){{0,2}})(?![\w-])"
        )
    return OrgPatterns(
        names=MappingProxyType(names),
        suffixes=suffixes,
        stop=frozenset(w for lx in lexicons for w in lx.org_stop),
        months=frozenset(m.capitalize() for lx in lexicons for m in lx.months),
        stopwords=lex.stopwords,
        known_re=names_re(names),
        suffix_re=suffix_re,
        descriptor_re=descriptor_re,
        lead_re=lead_re,
        appositive_re=appositive_re,
        appositive_ends=tuple(d.lower() for d in lex.appositive_descriptors),
        object_re=object_re,
    )


def alternation(words: Iterable[str]) -> str:
    """A regex alternation of literal words, longest first (so "Mrd." beats "Mrd")."""
    uniq = sorted(set(words), key=lambda w: (-len(w), w))
    return "|".join(re.escape(w) for w in uniq) if uniq else "(?!x)x"


def starts_of(words: Iterable[str]) -> str:
    """A look-ahead for the first characters of ``words`` ("" if one is empty). Before an
    alternation of the words it changes no match, but lets the regex engine pass over the
    positions where no word starts without trying each word there."""
    firsts = {w[:1] for w in words}
    if not firsts or "" in firsts:
        return ""
    return "(?=[" + "".join(re.escape(c) for c in sorted(firsts)) + "])"


def _words(data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of strings", path=path)
    return tuple(value)


def _table(data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table", path=path)
    return value


def _joiner(words: Sequence[str]) -> re.Pattern[str]:
    return re.compile(rf"[ \u00a0]*(?:{alternation(words)})[ \u00a0]*")


def _bounded(body: str, flags: int = 0) -> re.Pattern[str]:
    """``body`` as whole words: not glued to letters or digits on either side."""
    return re.compile(rf"(?<![^\W_])(?:{body})(?![^\W_])", flags)


def _bounded_words(words: Iterable[str], flags: int = 0) -> re.Pattern[str]:
    """Any of ``words`` as a whole word (``_bounded``)."""
    words = tuple(words)
    return _bounded(f"{starts_of(words)}(?:{alternation(words)})", flags)


def _qualifier_tables(
    entries: Any, path: str, key: str
) -> tuple[re.Pattern[str], Mapping[str, tuple[str, str]]]:
    table: dict[str, tuple[str, str]] = {}
    if not isinstance(entries, list):
        raise ConfigError(f"{key}: expected an array of tables", path=path)
    for entry in entries:
        qual, bound = entry.get("qualifier"), entry.get("bound", "open")
        if qual not in QUALIFIERS or bound not in BOUNDS:
            raise ConfigError(f"{key}: bad qualifier {qual!r} or bound {bound!r}", path=path)
        for word in _words(entry, "words", path):
            table[word.lower()] = (qual, bound)
    return re.compile(rf"(?:{alternation(table)})", re.IGNORECASE), MappingProxyType(table)


def _metrics(
    data: Mapping[str, Any], path: str
) -> tuple[
    Mapping[str, MetricSpec],
    Mapping[str, re.Pattern[str]],
    Mapping[str, Mapping[str, tuple[str, float]]],
    dict[str, str],
]:
    specs: dict[str, MetricSpec] = {}
    weighted: list[tuple[float, str, str]] = []
    nouns: dict[str, str] = {}
    for key, body in _table(data, "metrics", path).items():
        if key not in METRICS and not key.startswith(NO_METRIC):
            raise ConfigError(f"metrics.{key}: not a metric of pipeline.models.METRICS", path=path)
        units = _words(body, "units", path)
        if not units or any(u not in UNIT_KINDS_ALL for u in units):
            raise ConfigError(f"metrics.{key}.units: one or more of {UNIT_KINDS_ALL}", path=path)
        metric_nouns = _words(body, "nouns", path)
        specs[key] = MetricSpec(key, units, bool(body.get("periodic", False)), metric_nouns)
        for noun in metric_nouns:
            nouns.setdefault(noun, key)
        for cue, weight in _table(body, "cues", path).items():
            try:
                re.compile(cue)
            except re.error as exc:
                raise ConfigError(
                    f"metrics.{key}.cues: bad regex {cue!r}: {exc}", path=path
                ) from exc
            weighted.append((float(weight), key, cue))
    weighted.sort(key=lambda t: -t[0])
    cue_res: dict[str, re.Pattern[str]] = {}
    cue_weights: dict[str, Mapping[str, tuple[str, float]]] = {}
    for kind in UNIT_KINDS_ALL:
        seen: set[str] = set()
        chosen: list[tuple[float, str, str]] = []
        for weight, key, cue in weighted:
            units = specs[key].units
            fits = kind in units or (kind == "x" and bool({"money", "count"} & set(units)))
            if fits and cue not in seen:
                seen.add(cue)
                chosen.append((weight, key, cue))
        groups = [f"(?P<c{i}>{cue})" for i, (_, _, cue) in enumerate(chosen)]
        cue_res[kind] = _bounded("|".join(groups) or "(?!x)x", re.IGNORECASE)
        cue_weights[kind] = MappingProxyType(
            {f"c{i}": (key, w) for i, (w, key, _) in enumerate(chosen)}
        )
    return MappingProxyType(specs), MappingProxyType(cue_res), MappingProxyType(cue_weights), nouns


def build_lexicon(data: Mapping[str, Any], path: str = "<lexicon>") -> FigureLexicon:
    """Compile one lexicon file's data; ConfigError says what is wrong."""
    lang = data.get("lang")
    if not isinstance(lang, str) or not lang:
        raise ConfigError("lang: missing", path=path)
    dec = data.get("decimal_separator", ".")
    if dec not in (".", ","):
        raise ConfigError("decimal_separator: '.' or ','", path=path)

    scales: dict[str, tuple[Decimal, bool]] = {}
    for entry in data.get("scale", []):
        factor = Decimal(str(entry.get("factor")))
        for word in _words(entry, "words", path):
            scales[word] = (factor, bool(entry.get("attached", False)))

    currencies: dict[str, str] = {}
    for code, names in _table(data, "currencies", path).items():
        if code in ("currency_prefixes", "subunits") or not isinstance(names, list):
            continue
        for name in names:
            currencies[name] = code
    prefixes = _words(_table(data, "currencies", path), "currency_prefixes", path)
    subunits = {
        str(k): (str(v[0]), Decimal(str(v[1])))
        for k, v in _table(_table(data, "currencies", path), "subunits", path).items()
    }

    qual_re, quals = _qualifier_tables(data.get("qualifier", []), path, "qualifier")
    after_re, after = _qualifier_tables(data.get("qualifier_after", []), path, "qualifier_after")

    number_words = {
        k.lower(): Decimal(str(v)) for k, v in _table(data, "number_words", path).items()
    }
    frac_table = _table(data, "fractions", path)
    fractions = {
        k.lower(): (int(v[0]), int(v[1])) for k, v in frac_table.items() if k != "fraction_links"
    }
    mult_table = _table(data, "multipliers", path)
    multipliers = {
        k.lower(): Decimal(str(v)) for k, v in mult_table.items() if isinstance(v, int | float)
    }
    try:
        age_res = tuple(re.compile(p) for p in _words(data, "age_patterns", path))
    except re.error as exc:
        raise ConfigError(f"age_patterns: {exc}", path=path) from exc

    period = _table(data, "period", path)
    this_year = _words(period, "this_year", path)
    last_year = _words(period, "last_year", path)
    next_year = _words(period, "next_year", path)
    months = _words(period, "months", path)
    prefixes_year = (*_words(period, "year_prefixes", path), *months)
    quarter_words = {k: int(v) for k, v in _table(period, "quarter_words", path).items()}
    quarter_relative = {k: int(v) for k, v in _table(period, "quarter_relative", path).items()}
    half_words = {k: int(v) for k, v in _table(period, "half_words", path).items()}
    year = r"(?P<year>(?:19[89]\d|20\d\d))(?![\d.,]\d|-\d)"
    year_re = _bounded(
        rf"(?:(?P<pre>{alternation(prefixes_year)})[ \u00a0]+)?(?<![\d.,:/-]){year}", re.IGNORECASE
    )
    quarter_re = _bounded(
        rf"(?:(?P<qw>{alternation({**quarter_words, **quarter_relative})})[ \u00a0-]+"
        rf"(?:{alternation(_words(period, 'quarter_nouns', path))})"
        rf"(?:[ \u00a0]+(?:of[ \u00a0]+)?(?:fiscal[ \u00a0]+)?(?P<qyear>20\d\d))?"
        rf"|Q(?P<qn>[1-4])(?:[ \u00a0/-]*(?:20)?(?P<qyear2>\d\d)(?!\d))?)",
        re.IGNORECASE,
    )
    half_nouns = alternation(_words(period, "half_nouns", path))
    half_re = _bounded(
        rf"(?:(?P<hw>{alternation(half_words)})[ \u00a0-]+(?:{half_nouns})"
        rf"(?:[ \u00a0]+(?:of[ \u00a0]+)?(?P<hyear>20\d\d))?"
        rf"|H(?P<hn>[12])[ \u00a0/-]*(?:20)?(?P<hyear2>\d\d)(?!\d))",
        re.IGNORECASE,
    )
    year_before = _words(period, "year_before", path)
    relative_year_re = _bounded_words(
        (*this_year, *last_year, *next_year, *year_before), re.IGNORECASE
    )

    openers = {k.lower(): str(v) for k, v in _table(data, "range_openers", path).items()}
    number_word_re = _bounded_words(number_words, re.IGNORECASE)
    orgs = _table(data, "organisations", path)
    subject = _table(data, "subject", path)
    metrics, cue_res, cue_weights, nouns = _metrics(data, path)

    lexicon = FigureLexicon(
        lang=lang,
        decimal_sep=dec,
        stopwords=frozenset(w.lower() for w in _words(data, "stopwords", path)),
        abbreviations=frozenset(_words(data, "abbreviations", path)),
        scale_re=re.compile(rf"(?:{alternation(scales)})(?![^\W_])"),
        scales=MappingProxyType(scales),
        currency_re=re.compile(rf"(?:{alternation(currencies)})(?![^\W_])"),
        currencies=MappingProxyType(currencies),
        currency_prefixes=prefixes,
        prefix_re=re.compile(rf"(?<![^\W_])(?:{alternation(prefixes)})[ \u00a0]?\Z"),
        percent_re=re.compile(rf"(?:{alternation(_words(data, 'percent', path))})(?![^\W_])"),
        qualifier_re=re.compile(rf"(?<![^\W_])(?P<q>{qual_re.pattern})[ \u00a0]+\Z", re.IGNORECASE),
        qualifiers=quals,
        qualifier_after_re=re.compile(
            rf"[ \u00a0]*(?P<q>{after_re.pattern})(?![^\W_])", re.IGNORECASE
        ),
        qualifiers_after=after,
        qualifier_blockers=frozenset(w.lower() for w in _words(data, "qualifier_blockers", path)),
        noun_blocked=frozenset(w.lower() for w in _words(data, "noun_blocked_qualifiers", path)),
        range_joiners=_words(data, "range_joiners", path),
        range_openers=MappingProxyType(
            {k.lower(): str(v) for k, v in _table(data, "range_openers", path).items()}
        ),
        range_blockers=frozenset(w.lower() for w in _words(data, "range_blockers", path)),
        range_opener_re=re.compile(
            rf"(?<![^\W_])(?P<o>{alternation(openers)})[ \u00a0]+\Z", re.IGNORECASE
        ),
        range_joiner_re=_joiner(_words(data, "range_joiners", path)),
        range_partner_res=MappingProxyType({k: _joiner([v]) for k, v in openers.items()}),
        prefix_start_re=re.compile(rf"(?:{alternation(prefixes)})[ \u00a0]?"),
        same_as_previous_re=re.compile(
            rf"(?<![^\W_])(?:{alternation(_words(data, 'same_as_previous', path))})"
            rf"(?:[ \u00a0]+(?:etwa|rund|about|roughly|some|nearly|fast|knapp))?[ \u00a0]+\Z",
            re.IGNORECASE,
        ),
        previous_value_re=re.compile(
            rf"(?<![^\W_])(?:{alternation(_words(data, 'previous_value', path))})"
            rf"(?:[ \u00a0]+(?:etwa|rund|about|roughly|some|nearly|fast|knapp))?[ \u00a0]+\Z",
            re.IGNORECASE,
        ),
        vague_re=re.compile(
            rf"(?<![^\W_])(?:{alternation(_words(data, 'vague_before', path))})[ \u00a0]+\Z",
            re.IGNORECASE,
        ),
        furniture_re=re.compile(
            rf"(?<![^\W_])(?:{alternation(_words(data, 'furniture', path))})(?![^\W_])",
            re.IGNORECASE,
        ),
        subunits=MappingProxyType(subunits),
        subunit_re=re.compile(rf"(?:{alternation(subunits)})(?![^\W_])"),
        year_before=_words(period, "year_before", path),
        target_verbs_after=_words(data, "target_verbs_after", path),
        subject_verbs=frozenset(_words(data, "subject_verbs", path)),
        percent_change_words=frozenset(
            w.lower() for w in _words(data, "percent_change_words", path)
        ),
        number_word_re=number_word_re,
        number_word_scan_re=re.compile(rf"(?P<word>{number_word_re.pattern})", re.IGNORECASE),
        number_words=MappingProxyType(number_words),
        fraction_re=_bounded_words(fractions, re.IGNORECASE),
        fractions=MappingProxyType(fractions),
        fraction_links=frozenset(w.lower() for w in _words(frac_table, "fraction_links", path)),
        multiplier_re=_bounded_words(multipliers, re.IGNORECASE),
        multipliers=MappingProxyType(multipliers),
        multiplier_suffix_re=re.compile(
            rf"(?:{alternation(_words(mult_table, 'multiplier_suffixes', path))})(?![^\W_])",
            re.IGNORECASE,
        ),
        age_res=age_res,
        this_year=this_year,
        last_year=last_year,
        next_year=next_year,
        relative_year_re=relative_year_re,
        year_re=year_re,
        year_blockers=frozenset(w.lower() for w in _words(period, "year_blockers", path)),
        quarter_re=quarter_re,
        quarter_words=MappingProxyType({k.lower(): v for k, v in quarter_words.items()}),
        quarter_relative=MappingProxyType({k.lower(): v for k, v in quarter_relative.items()}),
        half_re=half_re,
        half_words=MappingProxyType({k.lower(): v for k, v in half_words.items()}),
        known_orgs=_words(orgs, "known", path),
        org_aliases=MappingProxyType(
            {str(k): str(v) for k, v in _table(orgs, "aliases", path).items()}
        ),
        descriptors=_words(orgs, "descriptors", path),
        appositive_articles=_words(orgs, "appositive_articles", path),
        appositive_descriptors=_words(orgs, "appositive_descriptors", path),
        months=months,
        org_suffixes=_words(orgs, "suffixes", path),
        org_stop=frozenset(_words(orgs, "stop", path)),
        target_markers=_words(subject, "target_markers", path),
        target_verbs=_words(subject, "target_verbs", path),
        investor_markers=_words(subject, "investor_markers", path),
        source_markers=_words(subject, "source_markers", path),
        from_markers=_words(subject, "from_markers", path),
        receive_verbs=_words(subject, "receive_verbs", path),
        receive_verb_re=re.compile(
            rf"(?<!\w)(?:{alternation(v.lower() for v in _words(subject, 'receive_verbs', path))})"
            r"(?!\w)"
        ),
        subject_skip=_words(subject, "skip_words", path),
        metrics=metrics,
        cue_res=cue_res,
        cue_weights=cue_weights,
        count_noun_re=re.compile(rf"(?:{alternation(nouns)})(?![^\W_])"),
        count_nouns=MappingProxyType(nouns),
    )
    return replace(lexicon, orgs=org_patterns([lexicon], lang))


def load_lexicon_file(path: Path) -> FigureLexicon:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(exc), path=str(path)) from exc
    return build_lexicon(data, str(path))
