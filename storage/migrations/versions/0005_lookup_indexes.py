"""indexes for the per-article look-ups that scanned whole tables

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

A py-spy profile of ``scripts/bench_pipeline.py`` (docs/performance.md) showed three
statements that run once an article and scanned a whole table, so that storing an
article got slower as the database grew:

* ``Repo.attach`` deletes the article's old blocking keys by ``article_id``, which the
  primary key (key, article_id) cannot serve: a scan of ``story_keys``, ~50 rows an
  article;
* ``Repo.find_by_content`` (the same text under a new URL) looks a version up by
  ``content_hash`` alone, which the unique (article_id, content_hash) cannot serve;
* ``Repo.window_size`` counts the articles published inside the story window by
  ``coalesce(published, first_seen)``: an expression index, with ``story_id`` so that
  the count reads the index only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_story_keys_article", "story_keys", ["article_id"], unique=False)
    op.create_index(
        "ix_article_versions_content_hash", "article_versions", ["content_hash"], unique=False
    )
    op.create_index(
        "ix_articles_window",
        "articles",
        [sa.text("coalesce(published, first_seen)"), "story_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_articles_window", table_name="articles")
    op.drop_index("ix_article_versions_content_hash", table_name="article_versions")
    op.drop_index("ix_story_keys_article", table_name="story_keys")
