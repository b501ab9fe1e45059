"""What a figure is about: sentences, organisation names, metric, subject and period.

Pure functions over the text and a ``FigureLexicon``. Every search runs in a
bounded window around the figure, so the cost per figure is constant and the
whole extraction stays linear in the length of the text.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pipeline.figures_lexicon import NO_METRIC, FigureLexicon, OrgPatterns, names_re

# Context windows and metric scoring. Set on the dev split of tests/data/figures
# (scripts/eval_figures.py --split dev); re-run the gate after any change.
SENTENCE_WINDOW = 400  # chars searched either side for a sentence boundary
CUE_WINDOW = 160  # chars either side of a figure searched for metric cues
CUE_DISTANCE_UNIT = 40  # a cue this many chars away counts half
OTHER_FIGURE_PENALTY = 0.45  # cue score factor when another figure stands in between
CLAUSE_PENALTY = 0.6  # cue score factor when a ";" or dash clause boundary stands in between
COMPOUND_BONUS = 2.0  # cue inside the figure's own compound ("14,8-Milliarden-Dollar-Preis")
MIN_CUE_SCORE = 0.25  # below this no metric is assigned
ROLE_WINDOW = 60  # chars before an organisation name searched for its role marker
ROLE_AFTER_WINDOW = 40  # chars after a name searched for a verb-final target verb (de)
ROLE_AFTER_WORDS = 3  # ... within this many words ("About You für … übernehmen" is too far)
SUBJECT_LEAD = 12  # a name starting this close to its sentence's start is its grammatical subject
ROLE_GAP_WORDS = 3  # descriptor words allowed between a role marker and the name
PERIOD_BEFORE_FACTOR = 1.2  # a period phrase before the figure counts as this much farther
PERIOD_CROSS_FACTOR = 3.0  # ... and one beyond another figure as this much farther
PREV_SENTENCES = 2  # earlier sentences searched for a subject when the figure's has none
SUBJECT_ARROW = " → "
DEAL_METRICS = ("deal_value", "stake", "funding_total")  # subjects read "buyer → target"
_LIST_RE = re.compile(r"[ \u00a0]*(?:,|and|und|&)[ \u00a0]*")

_BOUNDARY_RE = re.compile(r"[.!?…][\"”“»«'’)]*(?:[ \t\u00a0]+|(?=\n))|\n")
_WORD_BEFORE_RE = re.compile(r"([\w.]+)\Z")
_CLAUSE_RE = re.compile(r";|[ \u00a0][–—-][ \u00a0]|[()]|:[ \u00a0]")
_CLAUSE_CROSS_RE = re.compile(r";|[ \u00a0][–—][ \u00a0]")
_WORDS_RE = re.compile(r"[^\W\d_][\w'’.-]*|\d+")
_ROLE_TAIL_RE = re.compile(r"(?:[^\W\d_][\w'’.-]*[ \u00a0]+)*\Z")
_NAME_BEFORE_RE = re.compile(r"(?<![\w&.-])[A-Z][\w&.-]*(?:[ ][A-Z][\w&.-]*)?\Z")
_CAMEL_RE = re.compile(r"(?<![\w-])[A-Z][a-z]+[A-Z][A-Za-z]+(?![\w])")


@dataclass(frozen=True)
class Org:
    start: int
    end: int
    name: str
    in_compound: bool


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def _is_boundary(text: str, m: re.Match[str], lex: FigureLexicon) -> bool:
    if m.group(0) == "\n" or text[m.start()] != ".":
        return True
    before = _WORD_BEFORE_RE.search(text, max(0, m.start() - 20), m.start())
    if before is None:
        return True
    word = before.group(1).strip(".")
    if not word:
        return True
    if word[-1].isdigit():  # "13. Juni", "Nr. 1."
        return not (m.end() < len(text) and text[m.end() : m.end() + 1].islower())
    return not (word in lex.abbreviations or (len(word) == 1 and word.isupper()))


def sentence_bounds(text: str, pos: int, lex: FigureLexicon) -> Span:
    """The sentence around ``pos`` (searched within SENTENCE_WINDOW either side)."""
    lo = max(0, pos - SENTENCE_WINDOW)
    start = lo if lo > 0 else 0
    for m in _BOUNDARY_RE.finditer(text, lo, pos):
        if m.end() <= pos and _is_boundary(text, m, lex):
            start = m.end()
    hi = min(len(text), pos + SENTENCE_WINDOW)
    end = hi
    for m in _BOUNDARY_RE.finditer(text, pos, hi):
        if _is_boundary(text, m, lex):
            end = m.start() + (1 if text[m.start()] in ".!?…" else 0)
            break
    return Span(start, end)


def clause_bounds(text: str, start: int, end: int, sent: Span) -> Span:
    """The clause (between ;, dashes, parentheses, colons) holding ``text[start:end]``."""
    lo, hi = sent.start, sent.end
    for m in _CLAUSE_RE.finditer(text, sent.start, start):
        lo = m.end()
    m2 = _CLAUSE_RE.search(text, end, sent.end)
    if m2:
        hi = m2.start()
    return Span(lo, hi)


# ---------------------------------------------------------------- organisation names


@dataclass(frozen=True)
class OrgIndex:
    """Organisation mentions sorted by position, searchable by span in log time."""

    orgs: tuple[Org, ...]
    starts: tuple[int, ...]

    def within(self, lo: int, hi: int) -> list[Org]:
        out = []
        for i in range(bisect_left(self.starts, lo), len(self.orgs)):
            org = self.orgs[i]
            if org.start >= hi:
                break
            if org.end <= hi:
                out.append(org)
        return out


def find_orgs(text: str, patterns: OrgPatterns) -> OrgIndex:
    """Organisation names in ``text``, by priority: the lexicons' known names and product
    aliases ("ChatGPT" → "OpenAI"), names with a company suffix ("Scale AI", "Index
    Ventures"), names after a descriptor ("der Datenspezialist Informatica", "chip designer
    Ampere Computing"), CamelCase names ("OpenAI"), and the bare head of a suffixed name once
    the full name has appeared ("Scale" → "Scale AI").
    ``patterns``: ``FigureLexicon.orgs`` (``figures_lexicon.org_patterns``).
    """
    names, suffixes, stop = patterns.names, patterns.suffixes, patterns.stop
    stopwords, months = patterns.stopwords, patterns.months
    found: list[Org] = []
    occupied = bytearray(len(text))

    def add(start: int, end: int, name: str) -> None:
        if any(occupied[start:end]):
            return
        in_compound = (
            end < len(text) and text[end] == "-" and text[end + 1 : end + 2].isalpha()
        ) or (start > 0 and text[start - 1] == "-")
        occupied[start:end] = b"\x01" * (end - start)
        found.append(Org(start, end, name, in_compound))

    for m in patterns.known_re.finditer(text):
        add(m.start("n"), m.end("n") + len(m.group("g") or ""), names[m.group("n")])
    full_names: dict[str, str] = {}
    for m in patterns.suffix_re.finditer(text):
        words = m.group("n").split(" ")
        while words and (words[0] in stop or words[0].endswith(("'s", "’s"))):
            words.pop(0)
        if not words:
            continue
        name = " ".join([*words, m.group("s").rstrip(".")])
        add(m.end() - len(" ".join([*words, m.group("s")])), m.end(), name)
        full_names.setdefault(words[0], name)
    for name in names:
        parts = name.split(" ")
        if len(parts) > 1 and parts[-1] in suffixes and name in text:
            full_names.setdefault(" ".join(parts[:-1]), name)
    if patterns.descriptor_re is not None:
        for m in patterns.descriptor_re.finditer(text):
            words = m.group("n").split(" ")
            while words and (words[-1] in stop or words[-1].lower() in stopwords):
                words.pop()
            if words and words[0] not in stop and words[0].lower() not in stopwords:
                name = " ".join(words)
                add(m.start("n"), m.start("n") + len(name), name)
                full_names.setdefault(name, name)
    if patterns.lead_re is not None:
        # "Duolingo said …": a capitalised word opening a sentence, then a company verb
        for m in patterns.lead_re.finditer(text):
            name = m.group("n")
            if name not in stop and name.lower() not in stopwords:
                add(m.start("n"), m.end("n"), name)
                full_names.setdefault(name, name)
    if patterns.appositive_re is not None:
        # "Lovable, a Swedish vibe-coding startup, raised …": the name an appositive describes;
        # not "Steinberg, a partner in the firm" (a function word: a phrase about the name)
        for m in patterns.appositive_re.finditer(text):
            if not m.group("d").lower().endswith(patterns.appositive_ends):
                continue
            if any(w.lower() in stopwords for w in m.group("a").split()):
                continue
            before = _NAME_BEFORE_RE.search(text, max(0, m.start() - 60), m.start())
            if before is None:
                continue
            words = before.group(0).split(" ")
            while words and (
                words[0] in stop or words[0] in months or words[0].lower() in stopwords
            ):
                words.pop(0)
            if words:
                name = " ".join(words)
                add(m.start() - len(name), m.start(), name)
                full_names.setdefault(name, name)
    if patterns.object_re is not None:
        # "agreed to buy Informatica", "übernimmt Informatica": the object of a takeover verb
        for m in patterns.object_re.finditer(text):
            words = m.group("n").split(" ")
            while words and (words[-1] in stop or words[-1] in months):
                words.pop()
            if words and words[0] not in stop and words[0] not in months:
                written = " ".join(words)
                name = full_names.get(written, written)
                add(m.start("n"), m.start("n") + len(written), name)
                full_names.setdefault(written, name)
    for m in _CAMEL_RE.finditer(text):
        if m.group(0) not in stop:
            add(m.start(), m.end(), m.group(0))
    if full_names:
        for m in names_re(full_names).finditer(text):
            add(m.start(), m.end(), full_names[m.group("n")])
    found.sort(key=lambda o: o.start)
    return OrgIndex(tuple(found), tuple(o.start for o in found))


def orgs_in(orgs: OrgIndex, span: Span) -> list[Org]:
    """The names inside ``span`` that are not part of a compound ("Scale-CEO")."""
    return [o for o in orgs.within(span.start, span.end) if not o.in_compound]


# ---------------------------------------------------------------- metric

_SEGMENT_RE = re.compile(r"[,;()]|[ \u00a0][–—-][ \u00a0]")


def _segment(text: str, start: int, end: int, sent: Span) -> Span:
    """The comma/parenthesis-delimited stretch of the sentence holding ``text[start:end]``."""
    lo, hi = sent.start, sent.end
    for m in _SEGMENT_RE.finditer(text, max(sent.start, start - CUE_WINDOW), start):
        lo = m.end()
    m2 = _SEGMENT_RE.search(text, end, min(sent.end, end + CUE_WINDOW))
    if m2:
        hi = m2.start()
    return Span(lo, hi)


def _owned_by_other(
    text: str,
    cs: int,
    ce: int,
    start: int,
    end: int,
    sent: Span,
    others: Sequence[tuple[int, int]],
) -> bool:
    """True when the cue belongs to another figure: it sits in a comma-delimited segment
    that holds another figure but not this one ("…, bei dem es 49 % kauft, …"), or it stands
    between this figure and another one, nearer the other ("raise €1bn at a valuation of
    €14bn": "valuation" belongs to €14bn)."""
    seg = _segment(text, cs, ce, sent)
    if not (seg.start <= start < seg.end) and any(
        seg.start <= s and e <= seg.end for s, e in others
    ):
        return True
    mine = start - ce if ce <= start else cs - end
    for s, e in others:
        if s < sent.start or e > sent.end:
            continue
        if ce <= start and e <= cs and cs - e < mine:
            return True
        if cs >= end and s >= ce and s - ce < mine:
            return True
    return False


def assign_metric(
    text: str,
    start: int,
    end: int,
    unit_kind: str,
    sent: Span,
    others: Sequence[tuple[int, int]],
    lex: FigureLexicon,
) -> str | None:
    """The metric whose cue words stand closest to the figure, weighted by specificity.
    Cues of the ``none*`` tables win for quantities that are no metric (debt, profit)."""
    lo = max(sent.start, start - CUE_WINDOW)
    hi = min(sent.end, end + CUE_WINDOW)
    best: dict[str, float] = {}
    cue_re, weights = lex.cue_res.get(unit_kind), lex.cue_weights.get(unit_kind, {})
    if cue_re is None:
        return None
    for m in cue_re.finditer(text, lo, hi):
        group = m.lastgroup
        if group is None:
            continue
        metric, weight = weights[group]
        if m.start() >= start and m.end() <= end:
            distance, weight = 0, weight * COMPOUND_BONUS
        elif m.end() <= start:
            distance = start - m.end()
        else:
            distance = max(0, m.start() - end)
        score = weight / (1 + distance / CUE_DISTANCE_UNIT)
        if _owned_by_other(text, m.start(), m.end(), start, end, sent, others):
            score *= OTHER_FIGURE_PENALTY
        a, b = (m.end(), start) if m.end() <= start else (end, m.start())
        if a < b and _CLAUSE_CROSS_RE.search(text, a, b):
            score *= CLAUSE_PENALTY
        best[metric] = max(best.get(metric, 0.0), score)
    if not best:
        return None
    metric, score = max(best.items(), key=lambda kv: kv[1])
    if score < MIN_CUE_SCORE or metric.startswith(NO_METRIC):
        return None
    return metric


# ---------------------------------------------------------------- subject


def _role(text: str, org: Org, floor: int, orgs: OrgIndex, lex: FigureLexicon) -> str:
    """``target``, ``investor`` or ``none`` from the words right before the name; up to
    ROLE_GAP_WORDS descriptor words may stand between ("to acquire cloud security company
    Wiz")."""
    lo = max(floor, org.start - ROLE_WINDOW)
    for other in orgs.within(lo, org.start):
        lo = max(lo, other.end)
    m = _ROLE_TAIL_RE.search(text, lo, org.start)
    words = m.group(0).split() if m else []
    skip = {w.lower() for w in lex.subject_skip}
    hi = org.end + ROLE_AFTER_WINDOW
    for other in orgs.within(org.end, hi):
        hi = min(hi, other.start)
    after = text[org.end : hi].lower().split()
    if any(w.strip(".,;") in lex.target_verbs_after for w in after[:ROLE_AFTER_WORDS]):
        return "target"
    for gap in range(min(ROLE_GAP_WORDS, len(words)) + 1):
        if gap and words[-gap].lower() in lex.stopwords and words[-gap].lower() not in skip:
            break
        head = words[: len(words) - gap]
        tail = " ".join(head[-3:]).lower()
        for markers, role in (
            (lex.source_markers, "source"),
            (lex.investor_markers, "investor"),
            (lex.from_markers, "from"),
            (lex.target_verbs, "target"),
            (lex.target_markers, "target"),
        ):
            for marker in markers:
                low = marker.lower()
                if tail == low or tail.endswith(" " + low):
                    return role
    return "none"


def _receives(text: str, org: Org, hi: int, lex: FigureLexicon) -> bool:
    after = text[org.end : min(hi, org.end + ROLE_WINDOW)].lower()
    return bool(lex.receive_verb_re.search(after))


def assign_subject(
    text: str,
    start: int,
    end: int,
    metric: str | None,
    sent: Span,
    prevs: Sequence[Span],
    orgs: OrgIndex,
    lex: FigureLexicon,
) -> str | None:
    """Who the figure is about, from the names in its comma segment, else its clause, else
    its sentence, else the nearest earlier sentence naming one (up to len(prevs) back).
    Deals and stakes read "buyer → target" when both are named."""
    clause = clause_bounds(text, start, end, sent)
    floor = sent.start
    scope: list[Org] = []
    for span in (_segment(text, start, end, sent), clause, sent):
        scope = orgs_in(orgs, span)
        if scope:
            break
    if scope and metric in ("deal_value", "stake"):
        # the counterpart of a deal may stand in another part of the sentence
        names = {x.name for x in scope}
        rest = [o for o in orgs_in(orgs, sent) if o not in scope and o.name not in names]
        have = {
            "target" if _receives(text, o, sent.end, lex) else _role(text, o, floor, orgs, lex)
            for o in scope
        }
        want = {"target": "investor", "investor": "target"}
        for o in rest:
            role = _role(text, o, floor, orgs, lex)
            if len(have) == 1 and (
                role == want.get(next(iter(have))) or (role == "none" and have == {"investor"})
            ):
                scope.append(o)
                have.add(role)
    earlier = False
    named = sent  # the sentence the names in scope come from
    if not scope:
        for prev in prevs:
            scope, floor = orgs_in(orgs, prev), prev.start
            if scope:
                earlier, named = True, prev
                break
    if not scope:
        # last resort: a name inside a compound of the sentence ("Anthropic-Mitgründer")
        scope = [o for o in orgs.within(sent.start, sent.end) if o.in_compound][:1]
    if not scope:
        return None
    roles = {o: _role(text, o, floor, orgs, lex) for o in scope}
    if any(r == "from" for r in roles.values()):
        # "raised $1bn from X": X invests; "pay $2bn to license technology from X": X sells;
        # "The round was led by X. The company has now received $320m": X invests
        receiving_sentence = any(
            _receives(text, Org(o.start, o.start, o.name, False), named.end, lex) for o in scope
        ) or (earlier and bool(lex.receive_verb_re.search(text[sent.start : sent.end].lower())))
        for o, r in roles.items():
            if r == "from":
                roles[o] = "investor" if receiving_sentence else "target"
    if all(r == "source" for r in roles.values()):
        roles = dict.fromkeys(scope, "none")
    scope = [o for o in scope if roles[o] != "source"]

    def nearest(cands: Sequence[Org]) -> Org:
        if earlier:  # the topic of an earlier sentence is the name it starts with
            return min(cands, key=lambda o: o.start)
        return min(
            cands, key=lambda o: (o.start - end) if o.start >= end else (start - o.end) * 0.8
        )

    targets = [o for o in scope if roles[o] == "target"]
    investors = [o for o in scope if roles[o] == "investor"]
    plain = [o for o in scope if roles[o] == "none"]
    lead = [o for o in plain if o.start - floor <= SUBJECT_LEAD and not _listed(text, o, orgs)]
    if metric in DEAL_METRICS:
        receiving = [o for o in plain if _receives(text, o, sent.end, lex)]
        if plain and not targets and (investors or receiving):
            first = nearest(receiving or plain)
            targets, plain = [first], [o for o in plain if o is not first]
        if not earlier and lead and not investors:
            # "Microsoft hält 49 % an OpenAI": the sentence's subject is the buyer
            others = [o for o in plain if o.name != lead[0].name]
            if others and not targets:
                targets = [nearest(others)]
            if targets:
                plain = [lead[0]]
        buyer = nearest(investors or plain) if (investors or plain) else None
        target = nearest(targets) if targets else None
        if buyer and target and buyer.name != target.name:
            return f"{buyer.name}{SUBJECT_ARROW}{target.name}"
        return (target or buyer or scope[0]).name
    if targets and metric in ("valuation", "prior_valuation"):
        return nearest(targets).name
    if lead and not earlier:
        return lead[0].name
    return nearest(plain or targets or investors or scope).name


def _listed(text: str, org: Org, orgs: OrgIndex) -> bool:
    """True when the name opens a list ("SoftBank, OpenAI and Oracle announced …")."""
    m = _LIST_RE.match(text, org.end)
    return bool(
        m
        and orgs.within(m.end(), m.end() + 60)
        and orgs.within(m.end(), m.end() + 60)[0].start == m.end()
    )


# ---------------------------------------------------------------- period


def _shift_quarter(year: int, quarter: int, delta: int) -> tuple[int, int]:
    n = year * 4 + (quarter - 1) + delta
    return n // 4, n % 4 + 1


def find_periods(
    text: str, sent: Span, published: datetime | None, lex: FigureLexicon
) -> list[tuple[int, int, str]]:
    """Period phrases in the sentence as (start, end, label): "2024", "2025-Q1", "2025-H1".
    Relative phrases ("in diesem Jahr", "last quarter") need ``published``."""
    out: list[tuple[int, int, str]] = []
    year_now = published.year if published else None
    last = {p.lower() for p in lex.last_year}
    before = {p.lower() for p in lex.year_before}
    nxt = {p.lower() for p in lex.next_year}
    years = [
        int(m.group("year"))
        for m in lex.year_re.finditer(text, sent.start, sent.end)
        if not _year_blocked(text, m, sent, lex)
    ]
    for m in lex.relative_year_re.finditer(text, sent.start, sent.end):
        phrase = m.group(0).lower()
        delta = -1 if (phrase in last or phrase in before) else 1 if phrase in nxt else 0
        # "for 2024, up from $229 million a year earlier": relative to the year named
        base = years[0] if (phrase in before and years) else year_now
        if base is None:
            continue
        out.append((m.start(), m.end(), str(base + delta)))
    for m in lex.quarter_re.finditer(text, sent.start, sent.end):
        word = (m.group("qw") or "").lower()
        yr = m.group("qyear") or (("20" + m.group("qyear2")) if m.group("qyear2") else None)
        n = lex.quarter_words.get(word) or int(m.group("qn") or 0)
        if word in lex.quarter_relative and not (yr and word in lex.quarter_words):
            if published is None:
                continue
            y, q = _shift_quarter(
                published.year, (published.month - 1) // 3 + 1, lex.quarter_relative[word]
            )
            out.append((m.start(), m.end(), f"{y}-Q{q}"))
            continue
        yr = yr or (str(year_now) if year_now else None)
        if n and yr:
            out.append((m.start(), m.end(), f"{yr}-Q{n}"))
    for m in lex.half_re.finditer(text, sent.start, sent.end):
        n = lex.half_words.get((m.group("hw") or "").lower()) or int(m.group("hn") or 0)
        yr = m.group("hyear") or (("20" + m.group("hyear2")) if m.group("hyear2") else None)
        yr = yr or (str(year_now) if year_now else None)
        if n and yr:
            out.append((m.start(), m.end(), f"{yr}-H{n}"))
    covered = [(s, e) for s, e, _ in out]
    for m in lex.year_re.finditer(text, sent.start, sent.end):
        ys, ye = m.start("year"), m.end("year")
        if any(s <= ys and ye <= e for s, e in covered):
            continue
        if _year_blocked(text, m, sent, lex):
            continue
        out.append((m.start(), m.end(), m.group("year")))
    return out


def _year_blocked(text: str, m: re.Match[str], sent: Span, lex: FigureLexicon) -> bool:
    """ "seit 2016", "founded in 2020", "2024 gegründet": a year that is no period."""
    before = _WORDS_RE.findall(text, max(sent.start, m.start() - 24), m.start())
    after = _WORDS_RE.findall(text, m.end(), min(sent.end, m.end() + 16))
    return any(w.lower() in lex.year_blockers for w in (*before[-2:], *after[:1]))


def _owned_period(
    ps: int, pe: int, start: int, end: int, others: Sequence[tuple[int, int]]
) -> bool:
    """A period phrase after some figure belongs to the figure nearest to it ("500 a year
    ago"); one opening the sentence before every figure applies to all of them."""
    if not any(e <= ps for _, e in others) and pe <= start:
        return False
    mine = float(ps - end if pe > start else start - pe)
    if pe <= start:
        mine *= PERIOD_BEFORE_FACTOR
    for s, e in others:
        theirs = float(ps - e) if e <= ps else (s - pe) * PERIOD_BEFORE_FACTOR
        if 0 <= theirs < mine:
            return True
    return False


def assign_period(
    start: int, end: int, periods: Sequence[tuple[int, int, str]], others: Sequence[tuple[int, int]]
) -> str | None:
    """The nearest period phrase of the sentence; one beyond another figure counts as
    PERIOD_CROSS_FACTOR times as far."""
    best: tuple[float, str] | None = None
    for ps, pe, label in periods:
        if ps < end and start < pe:
            continue
        if _owned_period(ps, pe, start, end, others):
            continue
        a, b = (pe, start) if pe <= start else (end, ps)
        d = float(b - a) * (1.0 if pe > start else PERIOD_BEFORE_FACTOR)
        if any(a <= s and e <= b for s, e in others):
            d *= PERIOD_CROSS_FACTOR
        if best is None or d < best[0]:
            best = (d, label)
    return best[1] if best else None
