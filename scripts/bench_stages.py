#!/usr/bin/env python
"""CPU cost of each pure stage of handling an article, one process, over real pages.

    .venv/bin/python scripts/bench_stages.py --corpus ../shared/corpora/article-extraction-benchmark

Times (process CPU) bare ``trafilatura.extract`` (the settings of bench_pipeline.py's
baseline) and newsdrift's stages on the same decoded HTML: decoding, ``extract_article``,
the content hash, HTML compression, figures, the story fingerprint and its blocking keys.
Their sum against bare extraction bounds what ``bench_pipeline.py``'s ratio can reach
before any fetching or database work (docs/performance.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import load_corpus, table

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared/corpora/article-extraction-benchmark"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = ap.parse_args(argv)

    import trafilatura

    from pipeline import stories
    from pipeline.errors import ParseError
    from pipeline.extract import decode_html, extract_article
    from pipeline.feeds import content_hash
    from pipeline.figures import extract_figures, load_lexicons
    from pipeline.models import Document
    from storage.pages import gzip_html

    pages = load_corpus(args.corpus)
    lexicons = dict(load_lexicons(None))
    now = datetime.now(UTC)
    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        result = fn(*args, **kwargs)
        spent[name] = spent.get(name, 0.0) + time.process_time() - started
        return result

    bare_options = {
        "deduplicate": False,
        "include_comments": False,
        "include_tables": True,
        "with_metadata": True,
    }
    done = 0
    for _, raw in pages:
        html = timed("decode_html", decode_html, raw, {})[0]
        timed("bare trafilatura.extract", trafilatura.extract, html, **bare_options)
        try:
            ex = timed("extract_article", extract_article, html, "http://127.0.0.1/a")
        except ParseError:
            continue
        done += 1
        timed("content_hash", content_hash, ex.text)
        timed("gzip_html", gzip_html, html)
        figures = timed("extract_figures", extract_figures, ex.text, "en", now, lexicons)
        doc = Document(
            title=ex.title, text=ex.text, lang="en", published=now, outlet="o", url="http://x/a"
        )
        fp = timed("stories.fingerprint", stories.fingerprint, doc, figures)
        timed("stories.blocking_keys", stories.blocking_keys, fp)

    n = len(pages)
    rows = [[name, f"{s / n * 1000:.2f}"] for name, s in spent.items()]
    print(f"pages: {n} ({done} extracted)")
    print(table(["stage", "CPU ms a page"], rows))
    pure = sum(v for k, v in spent.items() if not k.startswith("bare"))
    bare = spent["bare trafilatura.extract"]
    print(
        f"newsdrift's pure stages / bare extraction: {pure / bare:.2f}x "
        f"(ratio ceiling before I/O and storage: {bare / pure:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
