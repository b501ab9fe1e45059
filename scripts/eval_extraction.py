#!/usr/bin/env python3
"""Score the pipeline's article extraction on scrapinghub's article-extraction-benchmark.

    .venv/bin/python scripts/eval_extraction.py ../shared/corpora/article-extraction-benchmark

PATH holds ``ground-truth.json`` and ``html/<id>.html.gz``. The score is the
benchmark's own (its ``evaluate.py``): per page, TP/FP/FN over 4-token
shingles (``\\w+`` tokens) normalised by their sum; precision and recall are
means over pages, F1 their harmonic mean. The same run also scores bare
``trafilatura.extract`` for comparison, and exits 1 when the pipeline's F1
falls below the pinned floor.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import trafilatura

from pipeline.errors import ExtractionError
from pipeline.extract import decode_html, extract_article

# Pinned floor: measured F1 of extract_article (0.9598) minus 0.005 (2026-11-22, 181 pages,
# trafilatura 2.3.1). Do not lower it silently: a drop means a regression.
F1_FLOOR = 0.9548

_TOKEN_RE = re.compile(r"\w+", re.UNICODE | re.MULTILINE | re.IGNORECASE | re.DOTALL)
NGRAM_N = 4


def _ngrams(text: str, n: int = NGRAM_N) -> Counter[tuple[str, ...]]:
    tokens = _TOKEN_RE.findall(text or "")
    grams: Counter[tuple[str, ...]] = Counter()
    for i in range(0, max(1, len(tokens) - n + 1)):
        shingle = tuple(tokens[i : i + n])
        if shingle:
            grams[shingle] += 1
    return grams


def shingle_match(true: str, pred: str) -> tuple[float, float, float]:
    """evaluate.py's string_shingle_matching: (tp, fp, fn) normalised to sum 1."""
    t, p = _ngrams(true), _ngrams(pred)
    tp = fp = fn = 0.0
    for key in set(t) | set(p):
        tc, pc = t.get(key, 0), p.get(key, 0)
        tp += min(tc, pc)
        fp += max(0, pc - tc)
        fn += max(0, tc - pc)
    s = tp + fp + fn
    return (tp / s, fp / s, fn / s) if s > 0 else (tp, fp, fn)


def _precision(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    if tp == fp == 0:
        return 0.0
    return tp / (tp + fp)


def _recall(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    if tp == fn == 0:
        return 0.0
    return tp / (tp + fn)


def scores(tp_fp_fns: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    precision = statistics.mean(_precision(*x) for x in tp_fp_fns if x[0] + x[1] > 0)
    recall = statistics.mean(_recall(*x) for x in tp_fp_fns if x[0] + x[2] > 0)
    return precision, recall, 2 * precision * recall / (precision + recall)


def _run_one(args: tuple[str, str]) -> tuple[str, str, str, str]:
    item_id, path = args
    raw = gzip.decompress(Path(path).read_bytes())
    html, _ = decode_html(raw, {})
    try:
        extracted = extract_article(html)
        ours, method = extracted.text, extracted.method
    except ExtractionError:
        ours, method = "", "none"
    bare = trafilatura.extract(raw.decode("utf-8", errors="replace")) or ""
    return item_id, ours, bare, method


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="the article-extraction-benchmark directory")
    parser.add_argument("--jobs", type=int, default=4, help="worker processes")
    parser.add_argument("--floor", type=float, default=F1_FLOOR, help="fail below this F1")
    parser.add_argument("--worst", type=int, default=0, help="list the N worst pages")
    args = parser.parse_args(argv)
    truth = json.loads((args.path / "ground-truth.json").read_text(encoding="utf-8"))
    jobs = [(item_id, str(args.path / "html" / f"{item_id}.html.gz")) for item_id in sorted(truth)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(_run_one, jobs, chunksize=4))
    elapsed = time.perf_counter() - started
    ours, bare, methods, per_page = [], [], Counter[str](), []
    for item_id, our_text, bare_text, method in results:
        body = truth[item_id].get("articleBody", "")
        o, b = shingle_match(body, our_text), shingle_match(body, bare_text)
        ours.append(o)
        bare.append(b)
        methods[method] += 1
        per_page.append((o[0] / (o[0] + (o[1] + o[2]) / 2) if o[0] else 0.0, item_id, method))
    p, r, f = scores(ours)
    bp, br, bf = scores(bare)
    print(f"pages: {len(results)}  ({elapsed:.1f}s with {args.jobs} workers)")
    print(f"pipeline extract_article  precision={p:.4f}  recall={r:.4f}  F1={f:.4f}")
    print(f"bare trafilatura.extract  precision={bp:.4f}  recall={br:.4f}  F1={bf:.4f}")
    print("methods: " + ", ".join(f"{m}={n}" for m, n in methods.most_common()))
    for score, item_id, method in sorted(per_page)[: args.worst]:
        print(f"  worst: F1={score:.3f} {method} {item_id}")
    if f < args.floor:
        print(f"FAIL: F1 {f:.4f} is below the pinned floor {args.floor:.4f}", file=sys.stderr)
        return 1
    print(f"ok: F1 {f:.4f} >= floor {args.floor:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
