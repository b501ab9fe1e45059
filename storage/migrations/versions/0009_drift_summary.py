"""a drift summary per story group, kept by the cycle, for the broad drift queries

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24

``newsdrift drift --diverging`` compared every pair of outlets in every group it read:
over 1,000,000 observations, "diverging in the last day" read 11,272 observations to
show 1,684 (scripts/bench_query.py, docs/performance.md). ``drift_summary`` keeps, per
story, metric, period and unit kind, the widest relative gap between two outlets'
current figures (``max_ratio``, NULL when money in several currencies needs the rate
table) and when the newest of them was observed. It holds no tolerance, so a changed
``[drift]`` table needs no rebuild: a group whose widest gap is within the tolerance
has no diverging pair, whatever subset of its observations a query reads.

``stories.drift_epoch`` counts the changes to a story's articles (attach, merge) and
``stories.drift_summary_epoch`` the change its summary was made from; they differ
(or the summary is NULL: every story stored before this revision) until the cycle
summarises the story again, and a query reads such a story's observations whole.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

STALE = "drift_summary_epoch IS NULL OR drift_summary_epoch <> drift_epoch"


def upgrade() -> None:
    op.add_column(
        "stories", sa.Column("drift_epoch", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("stories", sa.Column("drift_summary_epoch", sa.Integer(), nullable=True))
    op.create_index(
        "ix_stories_drift_stale",
        "stories",
        ["id"],
        sqlite_where=sa.text(STALE),
        postgresql_where=sa.text(STALE),
    )
    op.create_table(
        "drift_summary",
        sa.Column("story_id", sa.Integer(), sa.ForeignKey("stories.id"), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("period", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("max_ratio", sa.Float(), nullable=True),
        sa.Column("last_observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observations", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("story_id", "metric", "period", "kind"),
    )
    op.create_index("ix_drift_summary_observed", "drift_summary", ["last_observed_at"])
    op.create_index(
        "ix_drift_summary_metric_observed", "drift_summary", ["metric", "last_observed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_drift_summary_metric_observed", table_name="drift_summary")
    op.drop_index("ix_drift_summary_observed", table_name="drift_summary")
    op.drop_table("drift_summary")
    op.drop_index("ix_stories_drift_stale", table_name="stories")
    # Not a batch (SQLite would copy ``stories``, which other tables' rows reference):
    # both SQLite (3.35 on) and PostgreSQL drop a column in place.
    for column in ("drift_summary_epoch", "drift_epoch"):
        op.execute(f"ALTER TABLE stories DROP COLUMN {column}")
