"""Story clustering: the three levels, cross-language meeting, events kept apart, stable ids.

All texts are invented for these tests (companies and people do not exist).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.models import Document, Figure, IngestItem, Qualifier
from pipeline.stories import (
    NO_RARITY,
    THRESHOLDS,
    Candidate,
    Fingerprint,
    InMemoryIndex,
    Rarity,
    assign,
    blocking_keys,
    feature_keys,
    figure_key,
    fingerprint,
    minhash,
    normalise_text,
    similarity,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

WIRE = (
    "Der Softwarekonzern Brightlane übernimmt den Datenspezialisten Solvex für 2,4 Milliarden "
    "Euro. Wie Brightlane am Montag in Hamburg mitteilte, erhalten die Aktionäre von Solvex "
    "31,50 Euro je Aktie. Solvex-Gründerin Mara Velten soll das Geschäft weiter führen. "
    "Brightlane-Chef Tobias Greling sprach von einem wichtigen Schritt für die Cloud-Sparte. "
    "Die Übernahme soll bis Ende des dritten Quartals abgeschlossen werden, die Kartellbehörden "
    "müssen noch zustimmen. Solvex beschäftigt 1.800 Mitarbeiter und setzte zuletzt 310 "
    "Millionen Euro um."
)

# an independent German write-up of the same deal: other wording, other details
DE_OTHER = (
    "Milliardenübernahme in Hamburg: Brightlane kauft Solvex. Für den Anbieter von "
    "Datenplattformen legt der Konzern rund 2,4 Milliarden Euro auf den Tisch, pro Aktie sind "
    "das 31,50 Euro. Mara Velten, die Solvex vor zwölf Jahren gegründet hat, bleibt an Bord. "
    "Tobias Greling, Vorstandschef von Brightlane, will mit dem Zukauf das Cloudgeschäft "
    "stärken. Analysten halten den Preis für hoch."
)

EN = (
    "Brightlane to buy Solvex for 2.4 billion euros. Hamburg-based Brightlane agreed on Monday "
    "to acquire data company Solvex in a deal worth 2.4 billion euros, or 31.50 euros per "
    "share. Solvex founder Mara Velten will stay on, Brightlane CEO Tobias Greling said. "
    "Regulators still have to approve the takeover, which is expected to close in the third "
    "quarter."
)

# same kind of event, same day, different deal
OTHER_DEAL = (
    "Der Chemiekonzern Norvana übernimmt den Batteriehersteller Kalidor für 880 Millionen "
    "Euro. Norvana-Chefin Ilse Brammert kündigte in Frankfurt an, die Produktion von Kalidor "
    "in Polen auszubauen. Kalidor-Gründer Piet Harmsen zieht sich zurück. Die Aktionäre von "
    "Kalidor erhalten 12,75 Euro je Aktie."
)

ROUND_1 = (
    "Das Berliner Start-up Quillara sammelt in einer Finanzierungsrunde 40 Millionen Euro ein. "
    "Angeführt wird die Runde vom Investor Harbor Peak, Quillara-Gründer Jonas Ebbing will das "
    "Geld für die Expansion nach Frankreich nutzen. Quillara wird mit 200 Millionen Euro bewertet."
)
ROUND_2 = (
    "Das Berliner Start-up Quillara sammelt erneut Geld ein: 120 Millionen Euro in einer "
    "Finanzierungsrunde, angeführt von Harbor Peak. Gründer Jonas Ebbing will nun in die USA "
    "expandieren. Quillara wird mit 900 Millionen Euro bewertet."
)


def text_items(
    texts: Sequence[tuple[str, str]], published: Callable[[int], datetime]
) -> list[IngestItem]:
    """``(lang, text)`` pairs as ingest items of one outlet each, the i-th published at
    ``published(i)``, titled by its first sentence."""
    return [
        IngestItem(
            id=f"a{i}",
            url=f"https://o{i}.example/a{i}",
            outlet=f"o{i}.example",
            lang=lang,
            published=published(i),
            title=body.split(". ")[0],
            text=body,
            html=None,
        )
        for i, (lang, body) in enumerate(texts)
    ]


def doc(
    text: str, lang: str = "de", title: str = "", at: datetime | None = T0, outlet: str = ""
) -> Document:
    return Document(title=title, text=text, lang=lang, published=at, outlet=outlet)


def fp(
    text: str, lang: str = "de", title: str = "", at: datetime | None = T0, outlet: str = ""
) -> Fingerprint:
    return fingerprint(doc(text, lang, title, at, outlet), ())


def test_exact_duplicate() -> None:
    index = InMemoryIndex()
    first = index.add(1, fp(WIRE, title="Brightlane kauft Solvex"))
    again = index.add(2, fp(WIRE, title="Brightlane kauft Solvex", at=T0 + timedelta(hours=1)))
    assert first.level == "new" and first.story_id is None
    assert again.level == "exact"
    assert again.story_id == 1 and again.matched_article == 1 and again.score == 1.0


def test_exact_duplicate_ignores_case_punctuation_and_spacing() -> None:
    a = fp(WIRE)
    b = fp(WIRE.upper().replace(". ", ".\n\n"))
    assert a.text_hash == b.text_hash


def test_near_copy_with_new_headline() -> None:
    edited = WIRE.replace("am Montag in Hamburg", "am Montagmorgen in Hamburg").replace(
        " Analysten", ""
    )
    index = InMemoryIndex()
    index.add(1, fp(WIRE, title="Brightlane kauft Solvex"))
    a = index.add(2, fp(edited, title="Milliarden-Deal: Solvex geht an Brightlane"))
    assert a.level == "near"
    assert a.story_id == 1
    assert THRESHOLDS.near <= a.score < 1.0


def test_independent_german_write_ups_of_one_deal_meet() -> None:
    index = InMemoryIndex()
    index.add(1, fp(WIRE))
    a = index.add(2, fp(DE_OTHER, at=T0 + timedelta(hours=5)))
    assert a.level == "event"
    assert a.story_id == 1


def test_german_and_english_write_ups_meet_through_names_and_numbers() -> None:
    de, en = fp(WIRE), fp(EN, lang="en", at=T0 + timedelta(hours=2))
    assert {"brightlane", "solvex", "mara velten", "tobias greling"} <= set(de.names) & set(
        en.names
    )
    assert {"n:2.4", "n:31.5"} <= set(de.numbers) & set(en.numbers)
    index = InMemoryIndex()
    index.add(1, de)
    a = index.add(2, en)
    assert a.level == "event" and a.story_id == 1


def test_same_figure_in_german_and_english_gives_the_same_key() -> None:
    def usd(value: float, quote: str) -> Figure:
        return Figure(
            value,
            "USD",
            Qualifier.EXACT,
            value,
            value,
            "deal_value",
            None,
            None,
            quote,
            0,
            len(quote),
        )

    assert figure_key(usd(14.3e9, "14,3 Milliarden Dollar")) == "USD:14.3e9"
    assert figure_key(usd(14.3e9, "$14.3 billion")) == "USD:14.3e9"
    assert (
        figure_key(
            Figure(49, "percent", Qualifier.EXACT, 49, 49, "stake", None, None, "49 %", 0, 4)
        )
        == "percent:49"
    )
    assert (
        figure_key(
            Figure(
                870e6,
                "USD",
                Qualifier.AT_LEAST,
                870e6,
                math.inf,
                "revenue",
                None,
                "2024",
                "870 Millionen",
                0,
                13,
            )
        )
        == "USD:870e6"
    )
    with_fig = fingerprint(doc("Ein Text ohne Zahl."), [usd(14.3e9, "14,3 Milliarden Dollar")])
    assert "USD:14.3e9" in with_fig.numbers
    assert "x:USD:14.3e9" in blocking_keys(with_fig)


def test_two_acquisitions_on_the_same_day_stay_apart() -> None:
    index = InMemoryIndex()
    index.add(1, fp(WIRE))
    a = index.add(2, fp(OTHER_DEAL, at=T0 + timedelta(hours=1)))
    assert a.story_id is None and a.level == "new"
    assert similarity(fp(WIRE), fp(OTHER_DEAL)).level == "none"


def test_two_funding_rounds_months_apart_stay_apart() -> None:
    later = T0 + timedelta(days=150)
    first, second = fp(ROUND_1), fp(ROUND_2, at=later)
    # the same company, investor and founder: close on content alone ...
    same_day = similarity(first, fp(ROUND_2))
    # ... but months apart the time discount (and the window) keeps them apart
    assert similarity(first, second).score < same_day.score
    assert similarity(first, second).level == "none"
    index = InMemoryIndex()
    index.add(1, first)
    assert index.add(2, second).story_id is None
    # assign() itself (what storage calls) also refuses, even if handed the old article
    assert assign(second, [Candidate(1, 1, first)]).story_id is None


# two releases of one police office: the same header and footer, different incidents
POLICE_HEAD = "Polizeipräsidium Kessingen: "
POLICE_FOOT = " Rückfragen bitte an: Polizeipräsidium Kessingen, Pressestelle."
BREAK_IN = (
    POLICE_HEAD + "Einbruch in Bäckerei Lindner. Ein unbekannter Täter ist in der Nacht zum "
    "Dienstag in die Bäckerei Lindner in der Brunnengasse eingebrochen. Er hebelte die "
    "Hintertür auf und stahl die Tageskasse mit rund 600 Euro. Die Filialleiterin Greta "
    "Hollmann bemerkte den Einbruch am Morgen. Die Spurensicherung fand Fußabdrücke im "
    "Lagerraum." + POLICE_FOOT
)
COLLISION = (
    POLICE_HEAD + "Auffahrunfall auf der Talstraße. Bei einem Auffahrunfall an der Kreuzung "
    "Talstraße und Mühlweg sind am Dienstagmorgen zwei Autofahrer leicht verletzt worden. Ein "
    "Lieferwagen der Spedition Vossberg war an einer roten Ampel auf einen Kleinwagen "
    "aufgefahren. Der Sachschaden beträgt etwa 8.000 Euro, die Talstraße war eine Stunde "
    "gesperrt." + POLICE_FOOT
)
# a follow-up of one outlet's deal report, a day later
FOLLOW_UP = (
    "Solvex-Aktie springt nach Übernahmeangebot. Nach dem Angebot von Brightlane über 31,50 "
    "Euro je Aktie ist der Kurs von Solvex am Dienstag um 18 Prozent gestiegen. Händler in "
    "Hamburg rechnen damit, dass die Kartellbehörden zustimmen. Gründerin Mara Velten hält "
    "noch 12 Prozent der Anteile."
)


def test_one_outlets_template_is_no_evidence() -> None:
    later = T0 + timedelta(hours=3)
    # from two outlets (or of unknown origin) the shared header and footer make them meet ...
    apart = similarity(fp(BREAK_IN, outlet="polizei"), fp(COLLISION, at=later, outlet="zeitung"))
    assert apart == similarity(fp(BREAK_IN), fp(COLLISION, at=later))
    assert apart.level == "event"
    # ... from one outlet the same evidence counts at a discount, and they stay apart
    first, second = fp(BREAK_IN, outlet="polizei"), fp(COLLISION, at=later, outlet="polizei")
    own = similarity(first, second)
    assert own.score == pytest.approx(apart.score * THRESHOLDS.same_outlet)
    assert own.level == "none"
    index = InMemoryIndex()
    index.add(1, first)
    assert index.add(2, second).story_id is None
    # copies are no template: a re-post of one outlet's article is still one
    repost = fp(BREAK_IN.replace("rund 600", "etwa 600"), at=later, outlet="polizei")
    assert similarity(first, repost).level == "near"


def test_a_follow_up_meets_its_story_through_another_outlet() -> None:
    wire = fp(WIRE, outlet="nordkurier")
    other = fp(DE_OTHER, at=T0 + timedelta(hours=2), outlet="wirtschaftsblatt")
    follow = fp(FOLLOW_UP, at=T0 + timedelta(hours=20), outlet="nordkurier")
    # its own outlet's report alone is not enough ...
    alone = InMemoryIndex()
    alone.add(1, wire)
    assert alone.add(3, follow).story_id is None
    # ... but once another outlet's write-up matches it, the story it joins counts its own
    # outlet's report in full
    index = InMemoryIndex()
    index.add(1, wire)
    assert index.add(2, other).story_id == 1
    met = Rarity(dict(index.df), len(index))  # the window as the follow-up meets it
    joined = index.add(3, follow)
    assert joined.story_id == 1 and joined.level == "event"
    in_full = similarity(follow, replace(wire, outlet=""), rarity=met).score
    assert joined.score == pytest.approx(
        (in_full + similarity(follow, other, rarity=met).score) / 2
    )


def test_window_evicts_old_articles() -> None:
    index = InMemoryIndex()
    index.add(1, fp(WIRE))
    index.add(2, fp(OTHER_DEAL, at=T0 + timedelta(days=THRESHOLDS.window_days + 1)))
    assert 1 not in index.articles
    assert all(1 not in plist for plist in index.postings.values())
    assert "e:solvex" not in index.df and "e:norvana" in index.df  # statistics follow the window
    # the exact same text after the window starts a new story
    late = index.add(3, fp(WIRE, at=T0 + timedelta(days=THRESHOLDS.window_days + 1)))
    assert late.story_id is None


def test_per_key_cap_bounds_postings() -> None:
    index = InMemoryIndex()
    for i in range(1, THRESHOLDS.per_key_cap + 20):
        text = f"Heute eröffnet Brightlane den Standort Nummer {100 + i} in Ort{i}stadt."
        index.add(i, fp(text, at=T0 + timedelta(minutes=i)))
    assert max(len(p) for p in index.postings.values()) <= THRESHOLDS.per_key_cap
    assert len(index.postings["e:brightlane"]) == THRESHOLDS.per_key_cap


def _bridge_run() -> tuple[list[tuple[int | None, str, tuple[int, ...]]], InMemoryIndex]:
    index = InMemoryIndex()
    # two partial reports that do not meet each other: one on Brightlane's side ...
    a = (
        "Brightlane kauft zu. Tobias Greling, Chef von Brightlane in Hamburg, bestätigte den Kauf "
        "für 2,4 Milliarden Euro und nannte 31,50 Euro je Aktie. Greling will die Cloud stärken."
    )
    # ... one on Solvex's side, then a full report naming both
    b = (
        "Solvex wird verkauft. Mara Velten, die Solvex gegründet hat, sprach von einem guten Tag "
        "für die 1.800 Mitarbeiter des Datenspezialisten, der zuletzt 310 Millionen Euro "
        "umsetzte. Velten soll das Geschäft weiter führen."
    )
    out = []
    for n, (text, hours) in enumerate([(a, 0), (b, 1), (WIRE, 2)], start=1):
        r = index.add(n, fp(text, at=T0 + timedelta(hours=hours)))
        out.append((r.story_id, r.level, r.merge))
    return out, index


def test_stable_ids_and_deterministic_merge() -> None:
    first, index = _bridge_run()
    second, _ = _bridge_run()
    assert first == second  # deterministic
    (s1, _, _), (s2, _, _), (s3, l3, merge) = first
    assert s1 is None and s2 is None  # two stories: ids 1 and 2 (their first articles)
    assert l3 == "event" and s3 == 1 and merge == (2,)  # the bridge merges 2 into the older 1
    assert index.merges == [(2, 1, 3)]
    assert [index.story_of(i) for i in (1, 2, 3)] == [1, 1, 1]
    assert index.assignments[2] == 2  # what was assigned at arrival stays recorded: reversible


def test_assign_is_pure_and_order_independent() -> None:
    me = fp(DE_OTHER, at=T0 + timedelta(hours=3))
    cands = [Candidate(1, 10, fp(WIRE)), Candidate(2, 20, fp(OTHER_DEAL))]
    a = assign(me, cands)
    b = assign(me, list(reversed(cands)))
    assert a == b
    assert a.story_id == 10 and a.matched_article == 1 and a.merge == ()
    assert assign(me, []).story_id is None


def test_fingerprint_json_round_trip() -> None:
    original = fp(WIRE, title="Brightlane kauft Solvex", outlet="nordkurier")
    data = json.loads(json.dumps(original.to_json()))
    assert Fingerprint.from_json(data) == original
    undated = fp(WIRE, at=None)
    assert Fingerprint.from_json(json.loads(json.dumps(undated.to_json()))) == undated


def test_stored_fingerprints_of_other_versions_still_load() -> None:
    original = fp(WIRE, title="Brightlane kauft Solvex")
    data = original.to_json()
    assert set(data) == {
        "text_hash",
        "minhash",
        "names",
        "numbers",
        "terms",
        "lang",
        "published",
        "title",
        "outlet",
    }
    # older rows lack the headline or the outlet; rows written while a sentence embedding
    # was being measured carry a "meaning" string: all load, and score like the current
    # fingerprint (an unknown outlet is nobody's own)
    older = {k: v for k, v in data.items() if k != "title"}
    assert Fingerprint.from_json(older) == replace(original, title="")
    with_outlet = fp(WIRE, title="Brightlane kauft Solvex", outlet="nordkurier").to_json()
    assert (
        Fingerprint.from_json({k: v for k, v in with_outlet.items() if k != "outlet"}) == original
    )
    tried = Fingerprint.from_json({**data, "meaning": "AQID"})
    assert tried == original
    other = fp(DE_OTHER, at=T0 + timedelta(hours=2))
    assert similarity(tried, other) == similarity(original, other)


DEMO_DATA = Path(__file__).resolve().parents[1] / "pipeline" / "demo_data"


def _shingle_sets() -> list[list[bytes]]:
    """Word 4-shingles of every demo page and of the texts above, plus the edge cases: no
    shingle, one shingle shorter than four words."""
    texts = [WIRE, DE_OTHER, *(p.read_text("utf-8") for p in sorted(DEMO_DATA.rglob("*.html")))]
    sets: list[list[bytes]] = [[], [b""], [b"zwei Worte"]]
    for text in texts:
        words = normalise_text(text).split()
        sets.append([" ".join(words[i : i + 4]).encode() for i in range(len(words) - 3)])
    return sets


def test_minhash_is_datasketchs_bit_for_bit() -> None:
    # stored fingerprints were computed with datasketch 2 (scheme "affine32"): ours must
    # give the very same signatures, or near-copies of stored articles would stop matching
    from datasketch import MinHash  # a dev dependency, imported here: see the next test

    sets = _shingle_sets()
    assert len(sets) > 20 and max(map(len, sets)) > 500
    for shingles in sets:
        reference = MinHash(num_perm=64, seed=1)
        reference.update_batch(shingles)
        assert minhash(shingles) == tuple(int(v) for v in reference.hashvalues)


def test_importing_the_pipeline_does_not_import_scipy() -> None:
    # datasketch's package imports SciPy (0.4-0.5 s a process); the cycle, its pool workers
    # and every CLI command would pay it
    code = (
        "import sys, pipeline.app, pipeline.work, pipeline.cli; "
        "print(sorted(m for m in ('scipy', 'datasketch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_candidates_sharing_as_many_keys_rank_newest_first() -> None:
    # as storage's SQL does; the order the keys are counted in (string hashing, which
    # differs by process) must not decide which candidates are scored
    index = InMemoryIndex(replace(THRESHOLDS, max_candidates=2))
    for article_id in (1, 2, 3):
        index.add(article_id, fp(WIRE))
    keys = sorted(blocking_keys(fp(WIRE)))
    assert index.candidates(keys) == [3, 2]
    assert index.candidates(reversed(keys)) == [3, 2]


def test_adding_an_article_twice_is_an_error() -> None:
    index = InMemoryIndex()
    index.add(1, fp(WIRE))
    with pytest.raises(ValueError):
        index.add(1, fp(WIRE))


def test_rare_shared_names_weigh_more_than_common_ones() -> None:
    a = fp("Heute trafen sich Olaf Bremberg und Vertreter aus Berlin und Hamburg in Bonn.")
    b = fp("In Berlin, Hamburg und Bonn sprach man über Olaf Bremberg und seine Pläne.")
    c = fp("Berlin, Hamburg und Bonn melden am Montag neue Zahlen.")
    # "berlin", "hamburg", "bonn" are in every article of this window, "bremberg" in two
    df = {k: 3 for k in ("e:berlin", "e:hamburg", "e:bonn")}
    df.update({"e:bremberg": 2, "e:olaf": 2, "e:olaf bremberg": 2})
    rarity = Rarity(df, 1000)
    assert similarity(a, b, rarity=rarity).score > similarity(a, c, rarity=rarity).score
    assert rarity.weight("e:bremberg") > rarity.weight("e:berlin") > 1.0
    assert NO_RARITY.weight("e:berlin") == 1.0


def test_a_window_of_one_article_does_not_make_its_keys_common() -> None:
    # The second article of a fresh database meets a window holding only the first: every
    # key they share has df = n = 1. Without the prior such keys weigh 1 and the ones not
    # shared 1 + ln 2, which pulls two write-ups of one event apart.
    first = fp(DE_OTHER)
    window = Rarity(dict.fromkeys(feature_keys(first), 1), 1)
    shared, unshared = window.weight("e:brightlane", 0), window.weight("e:nowhere", 0)
    assert (shared, unshared) == (1.0, pytest.approx(1.0 + math.log(2)))
    prior = THRESHOLDS.idf_prior_docs
    assert prior > 0
    # 1.69 times the weight without the prior, 1.25 times with ten assumed articles
    assert window.weight("e:nowhere", prior) / window.weight("e:brightlane", prior) <= 1.25
    # in a window of thousands the prior changes a weight by less than 1 %
    big = Rarity({"e:solvex": 40}, 5000)
    assert big.weight("e:solvex", prior) == pytest.approx(big.weight("e:solvex"), rel=0.01)
    # and the cold start scores two write-ups close to how they score without any weights
    second = fp(WIRE)
    cold = similarity(second, first, rarity=window).score
    flat = similarity(second, first, replace(THRESHOLDS, idf_prior_docs=0), window).score
    assert cold > flat
    assert cold == pytest.approx(similarity(second, first).score, abs=0.05)


def test_event_match_needs_support_of_the_story_not_one_look_alike() -> None:
    th = THRESHOLDS
    me = fp(DE_OTHER, at=T0 + timedelta(hours=3))
    # a story of three Brightlane-Solvex reports: joined
    story = [Candidate(i, 7, fp(t)) for i, t in enumerate([WIRE, EN, DE_OTHER], start=1)]
    assert assign(me, story, th).story_id == 7
    # a story whose other articles are about something else: one look-alike is not enough
    mixed = [
        Candidate(1, 9, fp(WIRE)),
        Candidate(2, 9, fp(OTHER_DEAL)),
        Candidate(3, 9, fp(ROUND_1)),
    ]
    one = replace(th, support=1)
    assert assign(me, mixed, one).story_id == 9
    assert assign(me, mixed, th).story_id is None


def test_feature_keys_and_blocking_keys() -> None:
    f = fp(WIRE)
    keys = blocking_keys(f)
    assert f"h:{f.text_hash}" in keys
    assert sum(k.startswith("b") and ":" in k for k in keys) == 16  # LSH bands
    assert "e:solvex" in keys and "x:n:2.4" in keys
    # all names of 3+ characters, all numbers, the most frequent terms find candidates ...
    assert {f"e:{n}" for n in f.names if len(n) >= 3} | {f"x:{n}" for n in f.numbers} <= keys
    assert f"t:de:{f.terms[0]}" in keys and f"t:de:{f.terms[-1]}" not in keys
    # ... and every name, number and term weighs the evidence
    assert len(feature_keys(f)) == len(f.names) + len(f.numbers) + len(f.terms)


def test_undated_articles_carry_no_time_evidence() -> None:
    index = InMemoryIndex()
    index.add(1, fp(WIRE, at=None))
    index.add(2, fp(OTHER_DEAL, at=T0 + timedelta(days=30)))
    # an undated report meets a dated one whatever the clock says
    a = index.add(3, fp(DE_OTHER, at=T0 + timedelta(days=31)))
    assert a.story_id == 1 and a.level == "event"
