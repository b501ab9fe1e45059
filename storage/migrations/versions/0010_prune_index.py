"""a partial index on the versions that still hold their page

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24

``prune`` drops the raw HTML of versions fetched before a cut. It found them with a scan
of ``article_versions`` by ``fetched_at``, a column SQLite stores after ``text`` and
``html_gz``: reading it walks each row's overflow pages, about 45 KB a version (20 µs a
row with the file in the page cache; 22,000 versions took 0.3-0.4 s, and every later
prune scanned them all again, pruned or not). The index holds only the versions whose
page is still stored, so a prune reads those old enough to drop and nothing else.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_article_versions_html_fetched",
        "article_versions",
        ["fetched_at"],
        unique=False,
        sqlite_where=sa.text("html_gz IS NOT NULL"),
        postgresql_where=sa.text("html_gz IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_article_versions_html_fetched", table_name="article_versions")
