"""Topic filter: is a feed entry or an article about the followed industry?

The topic is data: ``config/topic/<name>.toml`` holds the thresholds and
``config/topic/<name>.<lang>.toml`` one lexicon per language (terms,
organisations, people with positive weights; negative terms with negative
weights; contexts that cancel a term, e.g. "Amnesty International" cancels
"AI"). This module only turns those files and a text into a decision; it never
fetches or stores anything.

Two stages. :func:`decide_entry` looks at a feed entry's title and summary
and returns ``keep=True`` or ``keep=False`` for clear cases and ``keep=None``
when the page should be fetched and :func:`decide_text` asked on the
extracted text, which always decides.

Matching works on word tokens (maximal runs of letters and digits), so "AI"
never matches inside "Air" and "KI-Startup" yields the token "KI". A pattern is
one or more tokens; names and acronyms also match with a trailing "s"
("Nvidias", "Scale AIs", "KIs"); a token may end or start with ``*`` (prefix, suffix or,
with both, infix match inside a token: ``*sprachmodell*`` matches
"KI-Sprachmodelle"). Case: an all-capital token ("AI", "KI") matches only
as written; a token with a capital letter ("Meta", "OpenAI") must start with
that capital, the rest is compared without case (so "META" and "Deepmind"
match "Meta" and "DeepMind", "meta" does not); an all-lowercase token matches
in any case. At each position the longest pattern wins and its tokens are
consumed, so "Oracle Red Bull Racing" (negative) hides "Oracle" (positive).
The work is linear in the text length: one pass over the tokens with
dictionary look-ups bounded by the lexicon's size, not the text's.
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipeline.errors import ConfigError
from pipeline.paths import shipped_config_dir

log = logging.getLogger(__name__)

STAGE_ENTRY = "entry"
STAGE_TEXT = "text"

POSITIVE_SECTIONS = ("terms", "organisations", "people")
NEGATIVE_SECTION = "negative"
CONTEXTS_SECTION = "contexts"
LEXICON_SECTIONS = (*POSITIVE_SECTIONS, NEGATIVE_SECTION, CONTEXTS_SECTION)
THRESHOLD_KEYS = (
    "entry_keep",
    "entry_drop",
    "text_keep",
    "anchor_weight",
    "support_weight",
    "support_count",
    "title_weight",
    "extra_term_weight",
)

# Keys added after the first release: a topic config written before them still loads.
THRESHOLD_DEFAULTS = {"support_weight": 1.0, "support_count": 2.0}

# How many of the decisive terms a decision reports.
MAX_REPORTED_TERMS = 8

_TOKEN_RE = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Thresholds:
    """Score limits of one topic (see ``config/topic/<name>.toml`` for what set them)."""

    entry_keep: float  # entry score at or above: keep without fetching
    entry_drop: float  # entry score below: drop without fetching; between: fetch
    text_keep: float  # text score at or above: keep
    anchor_weight: float  # keeping needs one matched term at least this heavy, or:
    support_weight: float  # ... ``support_count`` distinct matched terms at least this heavy
    support_count: float
    title_weight: float  # a match in the title counts this many times
    extra_term_weight: float  # weight of a feed's extra terms


_CASES = ("exact", "cap", "fold")
_CASE_INDEX = {case: n for n, case in enumerate(_CASES)}

# A text token as its three comparison keys, in the order of _CASES.
_Keys = tuple[str, str, str]


@dataclass(frozen=True)
class _Token:
    """One token of a pattern: its text, how it is compared, and its wildcard form."""

    text: str  # without the stars
    case: str  # "exact" | "cap" | "fold"
    wild: str  # "" | "prefix" | "suffix" | "infix"

    def key(self) -> str:
        return _key(self.text, self.case)

    def matches(self, keys: _Keys) -> bool:
        own = self.key()
        other = keys[_CASE_INDEX[self.case]]
        if self.wild == "":
            # Names and acronyms also match with a genitive or plural s ("Nvidias", "KIs").
            return other == own or (self.case != "fold" and other == own + "s")
        if self.wild == "prefix":
            return other.startswith(own)
        if self.wild == "suffix":
            return other.endswith(own)
        return own in other


@dataclass(frozen=True)
class Term:
    """One lexicon entry. ``weight`` > 0 counts for the topic, < 0 against, 0 marks a context."""

    pattern: str
    weight: float
    section: str
    tokens: tuple[_Token, ...]

    @property
    def rank(self) -> tuple[int, int]:
        """Which of two terms matching at one position wins: more tokens, then more letters."""
        return len(self.tokens), sum(len(t.text) for t in self.tokens)


@dataclass(frozen=True)
class Context:
    """When any of ``when`` occurs in a text, the terms in ``cancels`` count nothing there."""

    when: tuple[str, ...]
    cancels: tuple[str, ...]


_Index = Mapping[str, tuple[Term, ...]]


@dataclass(frozen=True)
class _Matcher:
    """Terms indexed by their first token, for one left-to-right pass over a text.

    Whole-token and prefix/suffix first tokens are dictionary look-ups (one per
    distinct prefix or suffix length); infix first tokens are one regular
    expression per case, run on the token. The cost per text token depends on
    the lexicon, never on the text, so a pass is linear in the text length.
    """

    whole: tuple[_Index, _Index, _Index]  # per case: key -> terms
    prefix: tuple[tuple[int, int, _Index], ...]  # (case index, length, key -> terms)
    suffix: tuple[tuple[int, int, _Index], ...]
    infix: tuple[tuple[int, re.Pattern[str], _Index], ...]  # (case index, regex, key -> terms)

    @staticmethod
    def build(terms: Iterable[Term]) -> _Matcher:
        whole: list[dict[str, list[Term]]] = [{}, {}, {}]
        affix: dict[tuple[str, int, int], dict[str, list[Term]]] = {}
        infix: dict[int, dict[str, list[Term]]] = {}
        for term in terms:
            first = term.tokens[0]
            case, key = _CASE_INDEX[first.case], first.key()
            if first.wild == "":
                whole[case].setdefault(key, []).append(term)
            elif first.wild == "infix":
                infix.setdefault(case, {}).setdefault(key, []).append(term)
            else:
                group = affix.setdefault((first.wild, case, len(key)), {})
                group.setdefault(key, []).append(term)

        def freeze(d: dict[str, list[Term]]) -> _Index:
            return MappingProxyType({k: tuple(v) for k, v in d.items()})

        def affixes(kind: str) -> tuple[tuple[int, int, _Index], ...]:
            return tuple(
                (case, length, freeze(d))
                for (wild, case, length), d in sorted(affix.items())
                if wild == kind
            )

        infixes = tuple(
            (
                case,
                re.compile(
                    "(?=(" + "|".join(re.escape(k) for k in sorted(d, key=len, reverse=True)) + "))"
                ),
                freeze(d),
            )
            for case, d in sorted(infix.items())
        )
        return _Matcher(
            whole=(freeze(whole[0]), freeze(whole[1]), freeze(whole[2])),
            prefix=affixes("prefix"),
            suffix=affixes("suffix"),
            infix=infixes,
        )

    def _candidates(self, keys: _Keys) -> list[Term]:
        found: list[Term] = []
        for case in range(3):
            found.extend(self.whole[case].get(keys[case], ()))
        for case in range(2):  # "exact" and "cap": also without a trailing genitive/plural s
            if keys[case].endswith("s") and len(keys[case]) > 2:
                found.extend(self.whole[case].get(keys[case][:-1], ()))
        for case, length, index in self.prefix:
            if len(keys[case]) >= length:
                found.extend(index.get(keys[case][:length], ()))
        for case, length, index in self.suffix:
            if len(keys[case]) >= length:
                found.extend(index.get(keys[case][-length:], ()))
        for case, regex, index in self.infix:
            for m in regex.finditer(keys[case]):
                found.extend(index[m.group(1)])
        return found

    def find(self, text: str) -> dict[str, int]:
        """Count the non-overlapping longest matches of each term's pattern in ``text``."""
        tokens = [_token_keys(m.group()) for m in _TOKEN_RE.finditer(text)]
        counts: dict[str, int] = {}
        i = 0
        while i < len(tokens):
            best: Term | None = None
            for term in self._candidates(tokens[i]):
                n = len(term.tokens)
                if i + n > len(tokens) or (best is not None and term.rank <= best.rank):
                    continue
                if all(tok.matches(tokens[i + j]) for j, tok in enumerate(term.tokens)):
                    best = term
            if best is None:
                i += 1
                continue
            counts[best.pattern] = counts.get(best.pattern, 0) + 1
            i += len(best.tokens)
        return counts


@dataclass(frozen=True)
class Lexicon:
    """The terms and contexts of one language, indexed for matching."""

    lang: str
    source: str
    terms: Mapping[str, Term]
    contexts: tuple[Context, ...]
    matcher: _Matcher = field(repr=False, compare=False)


@dataclass(frozen=True)
class Topic:
    """A loaded topic: its thresholds and one lexicon per language.

    ``fallback`` joins all languages and serves texts in a language the topic
    has no lexicon for.
    """

    name: str
    description: str
    thresholds: Thresholds
    lexicons: Mapping[str, Lexicon]
    fallback: Lexicon = field(repr=False, compare=False)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self.lexicons))

    def lexicon(self, lang: str) -> Lexicon:
        primary = (lang or "").strip().lower().replace("_", "-").split("-")[0]
        return self.lexicons.get(primary, self.fallback)


@dataclass(frozen=True)
class TopicDecision:
    """Whether to keep an entry or article, with the score and the terms that decided it.

    ``keep`` is ``None`` only at the entry stage: unclear, fetch the page and
    decide on the text. ``terms`` lists the matched patterns, strongest first;
    a pattern that counted against the topic is written with a leading ``-``.
    """

    keep: bool | None
    score: float
    terms: tuple[str, ...]
    stage: str


# --- matching -----------------------------------------------------------------


def _key(text: str, case: str) -> str:
    if case == "exact":
        return text
    if case == "cap":
        return text[:1] + text[1:].casefold()
    return text.casefold()


def _token_keys(token: str) -> _Keys:
    """The comparison keys of one text token ("NVIDIA" has the "cap" key "Nvidia")."""
    return token, _key(token, "cap"), _key(token, "fold")


def _case_of(text: str) -> str:
    letters = [c for c in text if c.isalpha()]
    if letters and all(c.isupper() for c in letters) and len(letters) > 1:
        return "exact"
    if any(c.isupper() for c in letters):
        return "cap"
    return "fold"


def _parse_pattern(pattern: str) -> tuple[_Token, ...] | str:
    """Tokens of a lexicon pattern, or an error message saying what is wrong with it."""
    pieces = re.split(r"[\s\-]+", pattern.strip())
    pieces = [p for p in pieces if p]
    if not pieces:
        return "empty pattern"
    tokens: list[_Token] = []
    for piece in pieces:
        lead = piece.startswith("*")
        trail = piece.endswith("*") and len(piece) > 1
        core = piece.strip("*")
        if not core:
            return f"wildcard without letters in {piece!r}"
        words = _TOKEN_RE.findall(core)
        if len(words) != 1 or "*" in core:
            # "Character.AI" -> two tokens; stars inside a word are not allowed.
            if "*" in core or lead or trail:
                return f"a wildcard must stand at the start or end of one word: {piece!r}"
            # Punctuation between words ("Weights & Biases") is not matched.
            tokens.extend(_Token(w, _case_of(w), "") for w in words)
            continue
        wild = "infix" if lead and trail else "prefix" if trail else "suffix" if lead else ""
        # A wildcard token is compared without case unless it is written with a capital.
        case = _case_of(core)
        if wild and case == "exact":
            case = "cap"
        tokens.append(_Token(core, case, wild))
    if not tokens:
        return f"no letters or digits in {pattern!r}"
    return tuple(tokens)


# --- scoring ------------------------------------------------------------------


def _weight_of_count(count: float) -> float:
    """How much ``count`` matches of one term weigh: 1 for one, +1 per doubling."""
    return 1.0 + math.log2(count) if count >= 1.0 else count


@dataclass(frozen=True)
class _Score:
    value: float
    terms: tuple[str, ...]
    anchored: bool  # one term of ``anchor_weight`` or enough distinct supporting terms counted


def _score(topic: Topic, title: str, body: str, lang: str, extra_terms: Sequence[str]) -> _Score:
    lexicon = topic.lexicon(lang)
    terms: Mapping[str, Term] = lexicon.terms
    matcher = lexicon.matcher
    if extra_terms:
        merged = dict(terms)
        for raw in extra_terms:
            parsed = _parse_pattern(raw)
            if isinstance(parsed, str):
                raise ConfigError(f"extra term {raw!r}: {parsed}")
            old = merged.get(raw)
            weight = topic.thresholds.extra_term_weight
            if old is None or old.weight < weight:
                merged[raw] = Term(raw, weight, "extra", parsed)
        terms = merged
        matcher = _Matcher.build(merged.values())
    in_title = matcher.find(title)
    in_body = matcher.find(body)
    found = set(in_title) | set(in_body)
    cancelled: set[str] = set()
    for context in lexicon.contexts:
        if any(w in found for w in context.when):
            cancelled.update(context.cancels)
    th = topic.thresholds
    contributions: list[tuple[float, str]] = []
    anchored = False
    supporting = 0
    for pattern in found - cancelled:
        term = terms[pattern]
        if term.weight == 0.0:
            continue
        anchored = anchored or term.weight >= th.anchor_weight
        supporting += term.weight >= th.support_weight
        count = th.title_weight * in_title.get(pattern, 0) + in_body.get(pattern, 0)
        contributions.append((term.weight * _weight_of_count(count), pattern))
    score = float(sum(c for c, _ in contributions))
    # Strongest first; ties by name for a stable listing.
    contributions.sort(key=lambda cp: (-abs(cp[0]), cp[1]))
    names = tuple(p if c > 0 else f"-{p}" for c, p in contributions[:MAX_REPORTED_TERMS])
    # Several distinct mid-weight names ("Meta" and "Llama", "Windsurf" and "coding agent")
    # anchor an article together, where any number of mentions of one of them does not.
    anchored = anchored or supporting >= th.support_count
    return _Score(round(score, 3), names, anchored)


def decide_entry(
    topic: Topic, title: str, summary: str, lang: str, extra_terms: Sequence[str] = ()
) -> TopicDecision:
    """Decide on a feed entry: keep, drop, or ``None`` (fetch the page, ask :func:`decide_text`)."""
    s = _score(topic, title, summary, lang, extra_terms)
    th = topic.thresholds
    keep: bool | None
    if s.value >= th.entry_keep and s.anchored:
        keep = True
    elif s.value < th.entry_drop:
        keep = False
    else:
        keep = None
    return TopicDecision(keep=keep, score=s.value, terms=s.terms, stage=STAGE_ENTRY)


def decide_text(
    topic: Topic, title: str, text: str, lang: str, extra_terms: Sequence[str] = ()
) -> TopicDecision:
    """Decide on an article's extracted text: always keep or drop."""
    s = _score(topic, title, text, lang, extra_terms)
    keep = s.value >= topic.thresholds.text_keep and s.anchored
    return TopicDecision(keep=keep, score=s.value, terms=s.terms, stage=STAGE_TEXT)


# --- loading ------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as e:
        raise ConfigError("file not found", path=str(path)) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", path=str(path)) from e


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return None
    return float(value)


def _load_thresholds(raw: object, path: Path) -> Thresholds:
    if not isinstance(raw, dict):
        raise ConfigError("[thresholds]: missing or not a table", path=str(path))
    unknown = sorted(set(raw) - set(THRESHOLD_KEYS))
    if unknown:
        raise ConfigError(
            f"[thresholds]: unknown key {unknown[0]!r} (expected: {', '.join(THRESHOLD_KEYS)})",
            path=str(path),
        )
    values: dict[str, float] = {}
    for key in THRESHOLD_KEYS:
        if key not in raw and key in THRESHOLD_DEFAULTS:
            values[key] = THRESHOLD_DEFAULTS[key]
            continue
        if key not in raw:
            raise ConfigError(f"[thresholds]: missing key {key!r}", path=str(path))
        value = _number(raw[key])
        if value is None:
            raise ConfigError(
                f"[thresholds] {key}: must be a number, got {raw[key]!r}", path=str(path)
            )
        values[key] = value
    th = Thresholds(**values)
    if th.entry_drop > th.entry_keep:
        raise ConfigError(
            f"[thresholds]: entry_drop ({th.entry_drop}) is above entry_keep ({th.entry_keep})",
            path=str(path),
        )
    if th.support_count < 2 or th.support_weight <= 0:
        raise ConfigError(
            "[thresholds]: support_count must be at least 2 and support_weight positive",
            path=str(path),
        )
    if th.title_weight <= 0 or th.extra_term_weight <= 0:
        raise ConfigError(
            "[thresholds]: title_weight and extra_term_weight must be positive", path=str(path)
        )
    return th


def _load_terms(raw: dict[str, Any], path: Path) -> dict[str, Term]:
    terms: dict[str, Term] = {}
    for section in (*POSITIVE_SECTIONS, NEGATIVE_SECTION):
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}]: must be a table of pattern = weight", path=str(path))
        for pattern, value in table.items():
            where = f"[{section}] {pattern!r}"
            weight = _number(value)
            if weight is None:
                raise ConfigError(
                    f"{where}: weight must be a number, got {value!r}", path=str(path)
                )
            if section == NEGATIVE_SECTION and weight >= 0:
                raise ConfigError(
                    f"{where}: a negative term needs a weight below 0", path=str(path)
                )
            if section != NEGATIVE_SECTION and weight <= 0:
                raise ConfigError(
                    f"{where}: weight must be above 0 (use [negative])", path=str(path)
                )
            parsed = _parse_pattern(pattern)
            if isinstance(parsed, str):
                raise ConfigError(f"{where}: {parsed}", path=str(path))
            if pattern in terms:
                raise ConfigError(
                    f"{where}: already listed in [{terms[pattern].section}]", path=str(path)
                )
            terms[pattern] = Term(pattern, weight, section, parsed)
    return terms


def _load_contexts(raw: object, terms: dict[str, Term], path: Path) -> tuple[Context, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("[[contexts]]: must be an array of tables", path=str(path))
    contexts: list[Context] = []
    for n, item in enumerate(raw, start=1):
        where = f"[[contexts]] #{n}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a table", path=str(path))
        unknown = sorted(set(item) - {"when", "cancels"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}", path=str(path))
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("when", "cancels"):
            value = item.get(key)
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) for v in value)
            ):
                raise ConfigError(
                    f"{where} {key}: must be a non-empty list of strings", path=str(path)
                )
            lists[key] = tuple(value)
        for target in lists["cancels"]:
            if target not in terms:
                raise ConfigError(
                    f"{where} cancels: {target!r} is not a term of this lexicon", path=str(path)
                )
        for pattern in lists["when"]:
            if pattern in terms:
                continue
            parsed = _parse_pattern(pattern)
            if isinstance(parsed, str):
                raise ConfigError(f"{where} when {pattern!r}: {parsed}", path=str(path))
            terms[pattern] = Term(pattern, 0.0, CONTEXTS_SECTION, parsed)
        contexts.append(Context(when=lists["when"], cancels=lists["cancels"]))
    return tuple(contexts)


def _load_lexicon(path: Path, lang: str) -> Lexicon:
    raw = _read_toml(path)
    unknown = sorted(set(raw) - set(LEXICON_SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown section {unknown[0]!r} (expected: {', '.join(LEXICON_SECTIONS)})",
            path=str(path),
        )
    terms = _load_terms(raw, path)
    if not any(t.weight > 0 for t in terms.values()):
        raise ConfigError("the lexicon has no positive terms", path=str(path))
    contexts = _load_contexts(raw.get(CONTEXTS_SECTION), terms, path)
    return Lexicon(
        lang=lang,
        source=str(path),
        terms=MappingProxyType(terms),
        contexts=contexts,
        matcher=_Matcher.build(terms.values()),
    )


def _merge(lexicons: Sequence[Lexicon]) -> Lexicon:
    terms: dict[str, Term] = {}
    contexts: list[Context] = []
    for lex in lexicons:
        for pattern, term in lex.terms.items():
            terms.setdefault(pattern, term)
        contexts.extend(lex.contexts)
    return Lexicon(
        lang="*",
        source=", ".join(lex.source for lex in lexicons),
        terms=MappingProxyType(terms),
        contexts=tuple(contexts),
        matcher=_Matcher.build(terms.values()),
    )


def load_topic(config_dir: Path | None = None, name: str = "ai") -> Topic:
    """Load ``<config_dir>/topic/<name>.toml`` and its per-language lexicons.

    Raises :class:`ConfigError` naming the file and key when anything is wrong.
    """
    base = (config_dir or shipped_config_dir()) / "topic"
    path = base / f"{name}.toml"
    raw = _read_toml(path)
    unknown = sorted(set(raw) - {"name", "description", "languages", "thresholds"})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}", path=str(path))
    if raw.get("name", name) != name:
        raise ConfigError(f"name: {raw['name']!r} does not match the file name", path=str(path))
    languages = raw.get("languages")
    if (
        not isinstance(languages, list)
        or not languages
        or not all(isinstance(x, str) and x for x in languages)
    ):
        raise ConfigError("languages: must be a non-empty list of language codes", path=str(path))
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("description: must be a string", path=str(path))
    thresholds = _load_thresholds(raw.get("thresholds"), path)
    lexicons = {
        lang.lower(): _load_lexicon(base / f"{name}.{lang.lower()}.toml", lang.lower())
        for lang in languages
    }
    log.debug("topic %s loaded: %s", name, {k: len(v.terms) for k, v in lexicons.items()})
    return Topic(
        name=name,
        description=description,
        thresholds=thresholds,
        lexicons=MappingProxyType(lexicons),
        fallback=_merge(list(lexicons.values())),
    )
