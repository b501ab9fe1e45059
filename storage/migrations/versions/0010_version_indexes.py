"""indexes that spare reading a version's row

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24

SQLite stores a row's columns in table order and moves what does not fit a page to
overflow pages. ``article_versions`` holds ``text`` and ``html_gz`` before ``method``,
``fetched_at`` and ``observed_at``, so reading one of those walks the row's overflow
chain: about 45 KB a version of real pages, 20 µs a row from the page cache and a disk
read from a cold one. (PostgreSQL keeps large values out of line and is not affected.)

* ``prune`` found the versions whose HTML to drop by scanning every version's
  ``fetched_at``, pruned or not: a partial index holds only the versions whose page is
  still stored (a daily prune of 22,000 versions: 0.51 → 0.03 s).
* The drift queries read ``observed_at`` and ``method`` of every observation's version:
  the (article, number) index of 0003 and the ``observed_at`` index of 0001 now carry
  them, so the versions are read from the indexes alone (with real-sized versions,
  "stake, last day" at 1M observations: 93-113 → 70-82 ms).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (name, table, columns) of the covering indexes, and the indexes they replace;
# scripts/bench_query.py drops and creates these to compare.
INDEXES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "ix_article_versions_newest",
        "article_versions",
        ("article_id", "number", "observed_at", "method"),
    ),
    (
        "ix_article_versions_observed",
        "article_versions",
        ("observed_at", "article_id", "number", "method"),
    ),
)
REPLACED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ix_article_versions_article_number", "article_versions", ("article_id", "number")),
    ("ix_article_versions_observed_at", "article_versions", ("observed_at",)),
)
_HTML_HELD = sa.text("html_gz IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_article_versions_html_fetched",
        "article_versions",
        ["fetched_at"],
        unique=False,
        sqlite_where=_HTML_HELD,
        postgresql_where=_HTML_HELD,
    )
    for name, table, columns in INDEXES:
        op.create_index(name, table, list(columns), unique=False)
    for name, table, _columns in REPLACED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, columns in REPLACED:
        op.create_index(name, table, list(columns), unique=False)
    for name, table, _columns in INDEXES:
        op.drop_index(name, table_name=table)
    op.drop_index("ix_article_versions_html_fetched", table_name="article_versions")
