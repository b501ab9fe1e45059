"""The name, number and term finder behind story blocking and scoring (invented texts)."""

from __future__ import annotations

from pipeline.entities import (
    content_words,
    find_names,
    find_numbers,
    fold,
    number_key,
    parse_number,
    stem,
    top_terms,
)

DE = (
    "Meta investiert in Scale AI. Der Konzern zahlt 14,3 Milliarden Dollar für 49 Prozent. "
    "Die Beteiligung stärkt Metas KI-Sparte, sagte Alexandr Wang am Freitag in Menlo Park. "
    "Der Preis gilt als hoch, die Bewertung von Scale liegt bei über 29 Milliarden. "
    "Meta hatte zuvor mit OpenAI verhandelt."
)
EN = (
    "Meta invests $14.3 billion in Scale AI for a 49% stake. The deal was announced on Friday. "
    "Alexandr Wang, Scale's founder, will join Meta, the company said in Menlo Park."
)


def test_german_names_skip_common_nouns_and_keep_companies_and_people() -> None:
    names = set(find_names(DE, "de"))
    assert {"meta", "scale", "scale ai", "alexandr wang", "openai", "menlo park"} <= names
    # capitalised German nouns are not names
    assert not {"konzern", "beteiligung", "preis", "bewertung", "prozent", "dollar"} & names
    # the head of a compound is a noun, the acronym before it a name
    assert "ki" in names and "sparte" not in names
    # function words at sentence starts are not names
    assert not {"der", "die"} & names


def test_english_names_and_sentence_initial_words() -> None:
    names = set(find_names(EN, "en"))
    assert {"meta", "scale ai", "alexandr wang", "menlo park"} <= names
    assert not {"the", "friday", "deal"} & names
    # possessive folds onto the name
    assert "scale" in names


def test_german_and_english_share_names_and_numbers() -> None:
    assert {"meta", "scale ai", "alexandr wang"} <= set(find_names(DE, "de")) & set(
        find_names(EN, "en")
    )
    assert {"n:14.3", "n:49"} <= set(find_numbers(DE, "de")) & set(find_numbers(EN, "en"))


def test_numbers_follow_each_languages_separators() -> None:
    assert parse_number("14", ",", "3", "de") == 14.3
    assert parse_number("14", ".", "3", "en") == 14.3
    assert parse_number("1", ".", "250", "de") == 1250.0  # German thousands group
    assert parse_number("1", ",", "250", "en") == 1250.0  # English thousands group
    assert parse_number("1.250.000", None, None, "de") == 1_250_000.0
    assert find_numbers("1.250 Mitarbeiter", "de") == find_numbers("1,250 employees", "en")
    assert number_key(14.299999) == "n:14.3"


def test_small_integers_and_years_are_not_number_keys() -> None:
    assert find_numbers("Im Jahr 2024 kamen 3 Partner und 2,5 Prozent dazu.", "de") == ("n:2.5",)


def test_fold_and_terms() -> None:
    assert fold("Müller Straße Orbán") == "muller strasse orban"
    words = content_words("Die Übernahmen der Konzerne wurden gestern genehmigt; the takeovers")
    assert "ubernahmen" in words and "takeovers" in words and "gestern" not in words
    assert stem("ubernahmen") == stem("ubernahme")
    assert top_terms(["alpha", "beta", "alpha", "gamma"], 2) == ("alpha", "beta")


def test_telephone_numbers_are_not_number_keys() -> None:
    # a press office's numbers are shared by all its releases, not by one event
    text = (
        "Der Schaden liegt bei 1.500 Euro. Rückfragen: Telefon 07531 995-1012, "
        "Fax +49 (0)30 1234567, Tel. 030/123 45 67."
    )
    assert find_numbers(text, "de") == ("n:1500",)
    assert find_numbers("Call 020 7946 0958 about the 250 jobs.", "en") == ("n:250",)
    # a decimal below one is no telephone number
    assert find_numbers("Das BIP wuchs um 0,5 Prozent.", "de") == ("n:0.5",)


def test_apostrophe_groups_thousands() -> None:
    # Swiss German writes 100'000
    assert find_numbers("Ein Schaden von über 100'000 Franken.", "de") == ("n:100000",)
    assert find_numbers("Ein Schaden von über 100’000 Franken.", "de") == ("n:100000",)


def test_exonyms_and_country_names_meet_across_languages() -> None:
    de = find_names(
        "Russland will laut US-Behörden Bernie Sanders unterstützen. Moskau bestreitet das. "
        "Die USA und die Schweiz reagierten, auch der Iran.",
        "de",
    )
    en = find_names(
        "Russia is helping Bernie Sanders, U.S. officials say. Moscow denies it; the United "
        "States and Switzerland responded, and Iran too.",
        "en",
    )
    shared = {"russia", "moscow", "usa", "switzerland", "iran", "bernie sanders"}
    assert shared <= set(de) & set(en)
    # a country after a German article is still a name, a common noun still is not
    assert "behorden" not in de


def test_fold_ascii_and_non_ascii_text() -> None:
    # ASCII text is only casefolded; elsewhere diacritics go, compatibility forms decompose
    # and punctuation outside ASCII stays
    assert fold("OpenAI Inc. SAYS") == "openai inc. says"
    assert fold("Crème brûlée’s ﬁnal Straße ÅNGSTRÖM") == "creme brulee’s final strasse angstrom"
    assert fold("") == ""


def test_content_words_of_repeated_and_compound_words() -> None:
    # each occurrence counts, whatever its case; compounds split at - ’ ' . &
    assert content_words("Takeover takeover TAKEOVER") == ["takeover"] * 3
    assert content_words("Meta-Übernahme O'Brien’s Scale-AI-Deal") == [
        "meta",
        "ubernahme",
        "brien",
        "scale",
        "deal",
    ]
    # inflected forms add up on their shared stem
    assert top_terms(["deals", "deal", "deal", "alphas", "alpha"], 2) == ("deal", "alpha")


def test_sentence_starts_across_punctuation_and_line_breaks() -> None:
    # a word opening a sentence (after ".", "!", a line break, a colon and a quote, an opening
    # parenthesis, a closing one) is no name on its own; one after a comma is
    text = 'Alpha rose. Bravo fell!\nCharlie won: "Delta lost." Echo, Foxtrot and (Golf) Hotel.'
    assert find_names(text, "en") == ("foxtrot",)
