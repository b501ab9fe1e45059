"""A small, language-aware finder of names, numbers and salient terms.

Story clustering needs what identifies an event: the organisations and people
involved, the numbers reported, and the rare words of the text. This module
finds them with a few rules and no model: names are capitalised tokens that are
not sentence-initial function words, not German common nouns (recognised by
their suffixes and a short stop list) and not calendar words; numbers are
parsed with each language's decimal separator so that a German "14,3" and an
English "14.3" give the same key. Everything here is a pure function of text.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


def _drop_combining(m: re.Match[str]) -> str:
    return "".join(c for c in m.group(0) if not unicodedata.combining(c))


def fold(text: str) -> str:
    """Casefold and strip diacritics ("Müller" -> "muller", "Orbán" -> "orban")."""
    if text.isascii():  # nothing to decompose, no combining marks, no "ß"
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    # combining marks are never ASCII: only the non-ASCII runs need looking at
    return _NON_ASCII_RUN.sub(_drop_combining, decomposed).replace("ß", "ss")


def _words(block: str) -> frozenset[str]:
    return frozenset(block.split())


# --- lexicons ---------------------------------------------------------------------------------

# Function words of both languages; also the words dropped from salient terms.
STOPWORDS: frozenset[str] = _words(
    """
    a about above after again against all also although am among an and another any are
    around as at back be because been before being below between both but by can could did
    do does doing down during each even ever every few first for from further get got had
    has have having he her here hers herself him himself his how however i if in into is it
    its itself just last like made make many may me might more most much must my myself
    new next no nor not now of off on once one only or other our ours ourselves out over own
    per put said same say says see she should since so some still such than that the their
    theirs them themselves then there these they this those though three through to too two
    under until up upon us very via was we were what when where which while who whom whose
    why will with within without would year years yet you your yours yourself told week
    according people time well way back including reported report reports monday tuesday
    wednesday thursday friday saturday sunday january february march april june july august
    september october november december today yesterday tomorrow mr mrs ms dr
    aber alle allem allen aller alles als also am an ander andere anderem anderen anderer
    anderes auch auf aus bei beim bin bis bisher bist da dabei damit dann das dass dem den
    denn der des dessen die dies diese diesem diesen dieser dieses doch dort du durch ein
    eine einem einen einer eines einige er es etwa euch euer für gegen gewesen hab habe haben
    hat hatte hatten hier hin hinter ich ihm ihn ihnen ihr ihre ihrem ihren ihrer im in indem
    ins ist jede jedem jeden jeder jedes jetzt kann kein keine keinem keinen können könnte
    man manche mehr mein mit muss musste nach nicht nichts noch nun nur ob oder ohne schon
    sehr sei seien sein seine seinem seinen seiner seit sich sie sind so soll sollen sollte
    sondern sowie über um und uns unser unter vom von vor war waren warum was weil weiter
    welche welchem welchen welcher wenn wer werde werden wie wieder will wir wird wirst wo
    wurde wurden zu zum zur zwar zwei drei zwischen laut rund knapp bereits sagte sagt
    heißt hieß jahr jahre jahren montag dienstag mittwoch donnerstag freitag samstag sonntag
    januar februar märz mai juni juli oktober dezember heute gestern morgen herr frau
    ander andere anderen neue neuen neuer neues erst erste ersten ganz ganze gibt geht zeigt
    viel viele vielen derzeit bislang bisher zudem dabei darum deshalb daher wegen sowie
    eigentlich jedoch immer wieder beim seit stand uhr zahl prozent euro dollar
    also really more most much many just like make made new news says said would could
    """
)

_FOLDED_STOPWORDS: frozenset[str] = frozenset(fold(w) for w in STOPWORDS)

# Capitalised words that are not names: German common nouns frequent in news, English
# sentence furniture, titles, currencies and units. Kept short; suffix rules do the rest.
NOT_NAMES: frozenset[str] = _words(
    """
    the a an and but in on at as for from with by of to this that these those it its he she
    they we i you his her their our there here when while after before if what who how why
    der die das ein eine einer eines einem einen den dem des im am zum zur vom beim bei mit
    nach von vor aus auf für über unter seit um bis auch aber und oder doch dann denn so wie
    wenn als ob er sie es wir ihr ich man sein seine ihre dieser diese dieses jetzt nun noch
    nur schon mehr laut rund knapp bereits heute gestern morgen hier dort da dabei damit
    inzwischen zudem außerdem allerdings trotzdem demnach dafür daher deshalb später zuvor
    mr mrs ms dr prof president ceo chief minister prime secretary senator governor mayor
    police officials official company companies government state city news photo image video
    update read more share click advertisement advert related getty images ap reuters afp dpa
    dollar dollars euro euros pfund pound pounds franken yen prozent percent milliarden
    milliarde millionen million billion billionen mrd mio bn usd eur chf gbp
    jahr jahre jahren monat monate woche wochen tag tage tagen uhr minuten stunden zeit
    unternehmen konzern firma gruppe regierung präsident präsidentin kanzler kanzlerin
    minister ministerin chef chefin sprecher sprecherin polizei stadt land länder staat
    menschen leute mann frau kinder kind welt angaben bericht berichten medien zeitung
    anfang ende mitte seite artikel inhalt foto bild bilder quelle fall frage grund teil
    weg ziel zahl zahlen geld markt milliardär investor investoren anteil anteile aktie
    aktien bewertung umsatz gewinn verlust deal kauf verkauf übernahme beteiligung
    mitarbeiter kunden nutzer daten zukunft erfolg krise kritik hilfe rolle spiel spiele
    fans sieg punkte saison mannschaft trainer team klub verein liga
    montag dienstag mittwoch donnerstag freitag samstag sonntag januar februar märz april
    mai juni juli august september oktober november dezember
    monday tuesday wednesday thursday friday saturday sunday january february march
    june july october december today yesterday tomorrow
    """
)

# Suffixes of German common nouns (capitalised in German, so not evidence of a name).
_DE_NOUN_SUFFIXES: tuple[str, ...] = (
    "ung",
    "ungen",
    "heit",
    "heiten",
    "keit",
    "keiten",
    "schaft",
    "schaften",
    "tion",
    "tionen",
    "ität",
    "itäten",
    "ismus",
    "nis",
    "nisse",
    "tum",
    "chen",
    "lein",
    "ment",
    "ments",
    "enz",
    "anz",
    "lage",
    "zeit",
    "werk",
    "haus",
    "stelle",
    "leute",
)

# endings of German plural and agent nouns; a lone capitalised word ending so is no name
_DE_PLURAL_ENDINGS: tuple[str, ...] = ("en", "er", "ern", "innen")

_WORD = re.compile(r"[^\W_](?:[\w’'.&-]*[^\W_])?")
# a word with the gap before it (everything since the previous word): the words of _WORD
_GAP_WORD = re.compile(rf"(?P<gap>[\W_]*)(?P<word>{_WORD.pattern})")
_SENT_END = re.compile(r"[.!?:;\"“”«»„()\[\]|\n]\s*$")
_COMPOUND_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
_PIECE_SEP = re.compile(r"[-’'.&]")
_GROUP_SEP = re.compile(r"[.,\u202f '’]")
_NUMBER = re.compile(r"(?<![\w.,'’])(\d{1,3}(?:[.,\u202f '’]\d{3})+|\d+)(?:([.,])(\d+))?(?![\w'’])")
# telephone and fax numbers ("07531 995-1012", "+49 (0)30 1234567"): a leading zero and digit
# groups joined by spaces, slashes or hyphens; they identify an outlet's press office, not an
# event (police press releases of one office share them)
_PHONE = re.compile(
    r"(?<![\w.,])(?:\+\d{1,3}[ /.-]?(?:\(0\) ?)?\d+|\(?0\d{2,5}\)?)(?:[ /.-]?\d{2,}){1,4}(?![\w])"
)


def _is_de_common_noun(word: str) -> bool:
    low = word.casefold()
    return len(low) > 4 and low.endswith(_DE_NOUN_SUFFIXES)


def _is_capitalised(tok: str) -> bool:
    return tok[:1].isupper() or (len(tok) > 1 and tok[0].islower() and tok[1].isupper())


def _is_strong_name(tok: str) -> bool:
    """Acronyms (IBM, RTL) and camel case (OpenAI, iPhone) are names in any position."""
    letters = [c for c in tok if c.isalpha()]
    if len(letters) < 2:
        return False
    upper = sum(c.isupper() for c in letters)
    return (upper >= 2 and not tok.isupper()) or (tok.isupper() and 2 <= len(letters) <= 6)


def _name_token_ok(tok: str, lang: str) -> bool:
    low = tok.casefold()
    if low in NOT_NAMES or low in STOPWORDS or len(low) < 2 or not any(c.isalpha() for c in tok):
        return False
    if _is_strong_name(tok):
        return True
    return not (lang == "de" and _is_de_common_noun(tok))


# German words after which a capitalised word is a common noun ("der Preis", "einen Vorteil").
_DE_DETERMINERS: frozenset[str] = _words(
    """
    der die das den dem des ein eine einen einem einer eines im am zum zur vom beim ins
    kein keine keinen keinem keiner sein seine seinen seinem seiner ihr ihre ihren ihrem
    ihrer unser unsere dieser diese diesen diesem dieses jeder jede jeden jedem alle allen
    viele vielen mehr mehrere einige wenige neue neuen neuer hohe hohen großen große
    """
)


class _Tok:
    __slots__ = ("joined", "noun_ctx", "start", "text")

    def __init__(self, text: str, start: bool, joined: bool, noun_ctx: bool) -> None:
        self.text = text
        self.start = start  # first word of a sentence or line
        self.joined = joined  # only whitespace (or a hyphen) since the previous token
        self.noun_ctx = noun_ctx  # German: follows a determiner, so a common noun


def _tokens(text: str, lang: str) -> list[_Tok]:
    """Word tokens with their position facts; hyphenated compounds are split."""
    out: list[_Tok] = []
    prev_low = ""
    prev_prev_low = ""
    german = lang == "de"
    for gap, word in _GAP_WORD.findall(text):
        # (a word ends in a letter or digit: only the gap can end a sentence)
        start = not out or "\n" in gap or bool(_SENT_END.search(gap))
        joined = bool(out) and not gap.strip()
        tok = word.rstrip(".")
        pieces = _COMPOUND_HYPHEN.split(tok) if "-" in tok else (tok,)
        noun_ctx = german and (
            prev_low in _DE_DETERMINERS
            or (prev_prev_low in _DE_DETERMINERS and prev_low.endswith(("e", "en", "er", "es")))
        )
        for i, piece in enumerate(pieces):
            # in a German compound the last piece is the head noun ("RTL-Show")
            head = german and len(pieces) > 1 and i == len(pieces) - 1
            out.append(_Tok(piece, start, joined or i > 0, (noun_ctx and len(pieces) == 1) or head))
            start = False
        if german:  # the words before are read for German noun contexts only
            prev_prev_low, prev_low = prev_low, tok.casefold()
    return out


_ACRONYM_GENITIVE = re.compile(r"^[A-Z]{2,}s$")  # "AIs", "BMWs"


def _strip_possessive(tok: str) -> str:
    if tok.endswith(("'s", "’s")):
        return tok[:-2]
    if tok.endswith(("'", "’")):
        return tok[:-1]
    if tok.endswith("s") and _ACRONYM_GENITIVE.match(tok):
        return tok[:-1]
    return tok


# Names that differ between German and English (exonyms, translated institutions, the many
# spellings of the US): folded form -> one shared key, so that a German and an English
# write-up meet on "Russland"/"Russia". Countries, capitals and the big institutions only.
NAME_ALIASES: dict[str, str] = {
    "russland": "russia",
    "moskau": "moscow",
    "deutschland": "germany",
    "frankreich": "france",
    "italien": "italy",
    "spanien": "spain",
    "osterreich": "austria",
    "schweiz": "switzerland",
    "turkei": "turkey",
    "griechenland": "greece",
    "polen": "poland",
    "niederlande": "netherlands",
    "belgien": "belgium",
    "danemark": "denmark",
    "schweden": "sweden",
    "norwegen": "norway",
    "finnland": "finland",
    "tschechien": "czechia",
    "czech republic": "czechia",
    "ungarn": "hungary",
    "rumanien": "romania",
    "weissrussland": "belarus",
    "indien": "india",
    "irak": "iraq",
    "iran": "iran",  # the same in both languages, listed because German gives it an article
    "ukraine": "ukraine",
    "libanon": "lebanon",
    "jemen": "yemen",
    "sudan": "sudan",
    "slowakei": "slovakia",
    "kongo": "congo",
    "syrien": "syria",
    "agypten": "egypt",
    "saudi-arabien": "saudi arabia",
    "kanada": "canada",
    "mexiko": "mexico",
    "brasilien": "brazil",
    "argentinien": "argentina",
    "australien": "australia",
    "sudafrika": "south africa",
    "nordkorea": "north korea",
    "sudkorea": "south korea",
    "usa": "usa",
    "us": "usa",
    "u.s": "usa",
    "u.s.a": "usa",
    "united states": "usa",
    "vereinigte staaten": "usa",
    "grossbritannien": "uk",
    "britain": "uk",
    "great britain": "uk",
    "united kingdom": "uk",
    "wien": "vienna",
    "munchen": "munich",
    "koln": "cologne",
    "rom": "rome",
    "prag": "prague",
    "warschau": "warsaw",
    "peking": "beijing",
    "brussel": "brussels",
    "genf": "geneva",
    "lissabon": "lisbon",
    "athen": "athens",
    "kiew": "kyiv",
    "kiev": "kyiv",
    "europaische union": "eu",
    "european union": "eu",
    "vereinte nationen": "un",
    "united nations": "un",
    "uno": "un",
    "weisse haus": "white house",
    "weissen haus": "white house",
}


_KNOWN_NAMES: frozenset[str] = frozenset(NAME_ALIASES) | frozenset(NAME_ALIASES.values())


def find_names(text: str, lang: str) -> tuple[str, ...]:
    """Normalised names in ``text`` (full multi-word names and their single tokens),
    the most mentioned first.

    A capitalised token at the start of a sentence counts only if the same token
    also appears capitalised inside a sentence, starts a multi-word name, or is an
    acronym / camel-case word.
    German genitive forms ("Metas") fold onto the base name when the base occurs.
    """
    toks = _tokens(text, lang)
    uses = Counter(t.text for t in toks)
    # the word facts below depend on the word alone: each distinct word is looked at once
    capitalised = {w for w in uses if _is_capitalised(w)}
    inner_caps = {t.text for t in toks if not t.start and t.text in capitalised}
    # a German word seen after determiners in at least half its uses is a common noun
    # (a relative "die" before a name, "..., die Meta nutzen kann", is a rare use)
    noun_uses = Counter(t.text for t in toks if t.noun_ctx and not _is_strong_name(t.text))
    # (country names take articles in German: "die Schweiz", "der Iran")
    nouns = {w for w, n in noun_uses.items() if 2 * n >= uses[w] and fold(w) not in _KNOWN_NAMES}
    lower = {w.casefold() for w in uses if w[:1].islower()}
    start_caps = Counter(t.text for t in toks if t.start and t.text in capitalised)

    def attested(tok: str) -> bool:
        # a sentence-initial word is a name if it is capitalised elsewhere too, or a known one
        if tok in inner_caps or tok + "s" in inner_caps or fold(tok) in _KNOWN_NAMES:
            return True
        return start_caps[tok] >= 2 and tok.casefold() not in lower

    def plausible(word: str) -> bool:
        tok = bare[word]
        if lang == "de" and tok.casefold() in lower and not _is_strong_name(tok):
            return False  # also written in lower case: a verb or adjective ("fallen")
        return _is_capitalised(tok) and _name_token_ok(tok, lang) and word not in nouns

    bare = {w: _strip_possessive(w) for w in uses}
    name_like = {w for w in uses if plausible(w)}
    spans: list[list[str]] = []
    current: list[str] = []
    for i, t in enumerate(toks):
        tok = bare[t.text]
        ok = t.text in name_like
        if ok and t.start and not _is_strong_name(tok) and not attested(tok):
            # "Alexandr Wang said ...": a sentence-initial word starting a multi-word name
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            ok = nxt is not None and nxt.joined and not nxt.start and nxt.text in name_like
        if ok and t.joined and not t.start and current:
            current.append(tok)
            continue
        if current:
            spans.append(current)
        current = [tok] if ok else []
    if current:
        spans.append(current)
    if lang == "de":
        # a lone German word with a plural or agent ending ("Anbieter", "Trainingsdaten") is a
        # common noun unless it also occurs inside a multi-word name
        in_multi = {t for span in spans if len(span) > 1 for t in span}
        spans = [
            span
            for span in spans
            if len(span) > 1
            or span[0] in in_multi
            or _is_strong_name(span[0])
            or not span[0].casefold().endswith(_DE_PLURAL_ENDINGS)
        ]
    singles = Counter(fold(t) for span in spans for t in span)
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for pos, span in enumerate(spans):
        folded = [fold(t) for t in span]
        if lang == "de":
            folded = [
                f[:-1] if f.endswith("s") and len(f) > 3 and singles.get(f[:-1]) else f
                for f in folded
            ]
        found = [NAME_ALIASES.get(f, f) for f in folded if len(f) >= 2]
        if 1 < len(folded) <= 4:
            joined = " ".join(folded)
            found.append(NAME_ALIASES.get(joined, joined))
        for name in found:
            counts[name] += 1
            first.setdefault(name, pos)
    # most mentioned first: the protagonists of the text lead, one-off mentions trail
    return tuple(sorted(counts, key=lambda n: (-counts[n], first[n], n)))


def parse_number(integer: str, sep: str | None, frac: str | None, lang: str) -> float | None:
    """Parse a number written in ``lang``'s convention ("14,3" in German is 14.3)."""
    decimal_sep = "," if lang == "de" else "."
    group = _GROUP_SEP.sub("", integer)
    if integer != group:
        # grouped thousands: the separator must not be the decimal one
        seps = set(_GROUP_SEP.findall(integer))
        if decimal_sep in seps:
            return None
    if sep is None or frac is None:
        return float(group)
    if sep != decimal_sep:
        # "1.250" in German or "1,250" in English: a thousands group
        if len(frac) == 3 and integer == group:
            return float(group + frac)
        return None
    return float(f"{group}.{frac}")


def number_key(value: float) -> str:
    """A language-independent key for a plain number: three significant digits."""
    if value == 0:
        return "n:0"
    return f"n:{float(f'{value:.3g}'):g}"


def find_numbers(text: str, lang: str) -> tuple[str, ...]:
    """Keys of the numbers written in ``text`` (decimals and integers ≥ 10, not years)."""
    keys: set[str] = set()
    for m in _NUMBER.finditer(_PHONE.sub(" ", text)):
        value = parse_number(m.group(1), m.group(2), m.group(3), lang)
        if value is None:
            continue
        if value < 10 and m.group(3) is None:
            continue  # small integers are everywhere ("2 Runden", "3 days")
        if m.group(3) is None and 1900 <= value <= 2100:
            continue  # years say little about which event
        keys.add(number_key(value))
    return tuple(sorted(keys))


def content_words(text: str) -> list[str]:
    """Folded content words (no function words, no numbers, at least four letters)."""
    out: list[str] = []
    found: dict[str, list[str]] = {}  # a word as written -> its content words (this text only)
    for word in _WORD.findall(text):
        words = found.get(word)
        if words is None:
            folded = (fold(piece) for piece in _PIECE_SEP.split(word))
            words = found[word] = [
                f for f in folded if len(f) >= 4 and f.isalpha() and f not in _FOLDED_STOPWORDS
            ]
        out.extend(words)
    return out


_STEM_SUFFIXES: tuple[str, ...] = (
    "innen",
    "ungen",
    "ing",
    "ern",
    "ed",
    "es",
    "en",
    "er",
    "em",
    "e",
    "s",
)


def stem(word: str) -> str:
    """A light shared stem for German and English inflections (folded input):
    strips one inflectional ending, keeping at least four letters."""
    for suffix in _STEM_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def top_terms(words: Iterable[str], limit: int) -> tuple[str, ...]:
    """The ``limit`` most frequent stems, most frequent first (ties alphabetical)."""
    counts: Counter[str] = Counter()
    for word, n in Counter(words).items():  # each distinct word stemmed once
        counts[stem(word)] += n
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(t for t, _ in ranked[:limit])
