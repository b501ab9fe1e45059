"""a covering index for each key's newest postings

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

``Repo.candidates`` takes each blocking key's ``per_key`` newest postings in the story
window. The index (key, published) found them, but the article id sat in the table, and
ties on ``published`` were broken by ``article_id`` in a sort. With (key, published,
article_id) each key's branch reads its newest entries from the index alone, in order.
Measured on the database of a 1,000-article ``bench_pipeline.py`` cycle (SQLite, 200
articles' keys, in sqlite3 alone): the ranking statement 1.7 -> 0.3-0.4 ms, the key
counts 0.30 -> 0.18 ms; ``Repo.candidates`` as a whole 1.8 -> 1.0 ms (docs/performance.md,
sixth round). The new index replaces the old one, which it covers.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_story_keys_postings", "story_keys", ["key", "published", "article_id"], unique=False
    )
    op.drop_index("ix_story_keys_key_published", table_name="story_keys")


def downgrade() -> None:
    op.create_index("ix_story_keys_key_published", "story_keys", ["key", "published"], unique=False)
    op.drop_index("ix_story_keys_postings", table_name="story_keys")
