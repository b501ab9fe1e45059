"""the feeds.toml URL a feed was added under

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24

feeds.toml was applied to the database by adding the feeds it lists that the database
lacked, matched by URL. So a feed the file stopped listing was polled on, a changed
interval, topic flag or outlet was never taken, a feed removed with ``feeds remove`` came
back at the next cycle, and a listed feed that had moved to its permanent redirect was
added once more under its old URL (then both were polled). ``config_url`` records the URL
the file lists for a feed it manages; NULL for a feed added by ``feeds add`` or
``feeds import``. Feeds stored before this revision are NULL until the file lists them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.add_column(sa.Column("config_url", sa.String(2000), nullable=True))
    op.create_index("ux_feeds_config_url", "feeds", ["config_url"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_feeds_config_url", table_name="feeds")
    with op.batch_alter_table("feeds") as batch:
        batch.drop_column("config_url")
