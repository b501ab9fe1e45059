"""worker claims: feed leases and the shared per-domain politeness budget

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

`newsdrift worker` (PostgreSQL, several processes) claims due feeds with
`FOR UPDATE SKIP LOCKED` and a lease that lapses if the worker dies
(`feeds.claimed_by`, `feeds.claim_expires_at`), and shares each domain's start
gap and Retry-After through `crawl_domains`. See docs/scale-out.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "crawl_domains",
        sa.Column("domain", sa.String(length=300), nullable=False),
        sa.Column("next_start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("min_gap_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("domain"),
    )


def downgrade() -> None:
    op.drop_table("crawl_domains")
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.drop_column("claim_expires_at")
        batch_op.drop_column("claimed_by")
