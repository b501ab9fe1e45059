"""The pure, CPU-heavy stages of a cycle, as the process pool runs them.

Kept apart from ``pipeline.run`` so that a pool worker imports only what it needs
(extraction, figures, fingerprints: about half of ``pipeline.run``'s import time,
which every worker of every cycle pays). Everything here is a pure function of
its arguments; results and arguments pickle.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pipeline import stories
from pipeline.errors import ParseError
from pipeline.extract import decode_html, extract_article
from pipeline.feeds import content_hash
from pipeline.figures import FigureLexicon, extract_figures, lexicon_files, load_lexicons
from pipeline.models import Document, Extracted, Figure, StoredArticle
from storage.pages import gzip_html

PARENT_CHECK_S = 0.5  # how often a pool worker checks that the cycle's process lives

PageWork = tuple[str, Extracted, str, bytes]  # decoded_by, extraction, digest, html_gz
Prepared = tuple[list[Figure], stories.Fingerprint, list[str]]  # figures, fingerprint, keys


def process_page(content: bytes, headers: dict[str, str], url: str) -> PageWork:
    """Decode, extract, hash and compress one fetched page."""
    html, decoded_by = decode_html(content, headers)
    extracted = extract_article(html, url)
    return decoded_by, extracted, content_hash(extracted.text), gzip_html(html)


def process_in_worker(content: bytes, headers: dict[str, str], url: str) -> PageWork | str:
    """``process_page`` in a pool worker. A ParseError comes back as its reason: its
    two-argument constructor does not survive pickling."""
    try:
        return process_page(content, headers, url)
    except ParseError as e:
        return e.reason


def extract_in_worker(html: str, url: str) -> Extracted | str:
    """``extract_article`` in a pool worker (an ingested page); a ParseError comes back as
    its message, which pickles where the exception does not."""
    try:
        return extract_article(html, url)
    except ParseError as e:
        return str(e)


def prepare_version(
    article: StoredArticle, published: datetime, lexicons: dict[str, FigureLexicon]
) -> Prepared:
    """What analysing a version computes from the version alone: figures, fingerprint,
    blocking keys (story assignment then needs the database)."""
    figures = extract_figures(article.text, article.lang, published, lexicons)
    doc = Document(
        title=article.title,
        text=article.text,
        lang=article.lang,
        published=published,
        outlet=article.outlet,
        url=article.url,
    )
    fp = stories.fingerprint(doc, figures)
    return figures, fp, sorted(stories.blocking_keys(fp))


# The lexicons a pool worker loaded, by directory, with the files' state when loaded.
_LEXICONS: dict[Path | None, tuple[tuple[tuple[str, int, int], ...], dict[str, FigureLexicon]]] = {}


def worker_lexicons(lexicon_dir: Path | None) -> dict[str, FigureLexicon]:
    """The lexicons of ``lexicon_dir`` (None: the shipped ones), loaded once a process and
    again when a file was added, removed or changed: a daemon's workers outlive cycles
    and must see an edit as its main process does. Loading costs ~9 ms; the check, a
    stat of each file."""
    state = tuple(
        (str(f), st.st_mtime_ns, st.st_size)
        for f in lexicon_files(lexicon_dir)
        for st in (f.stat(),)
    )
    loaded = _LEXICONS.get(lexicon_dir)
    if loaded is None or loaded[0] != state:
        loaded = _LEXICONS[lexicon_dir] = (state, dict(load_lexicons(lexicon_dir)))
    return loaded[1]


def prepare_batch(
    lexicon_dir: Path | None, batch: Sequence[tuple[StoredArticle, datetime]]
) -> list[Prepared]:
    """``prepare_version`` for a batch in a pool worker; the lexicons are loaded there
    (they do not pickle), and kept while their files stay the same."""
    lexicons = worker_lexicons(lexicon_dir)
    return [prepare_version(article, published, lexicons) for article, published in batch]


def exit_with_parent(parent: int) -> None:
    """Pool worker initializer (here, not in ``pipeline.run``, so that a worker imports
    only this module): end the worker once the cycle's process is gone.

    A SIGKILLed cycle would otherwise leave its workers blocked on their task
    queue, holding the killed process's stdout and stderr open.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
