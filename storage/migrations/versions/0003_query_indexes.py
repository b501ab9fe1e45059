"""indexes for the drift table's common queries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Measured with scripts/bench_query.py (1,000,000 observations over 50,000
stories; docs/performance.md): the newest-version test of
``Repo.observations`` (NOT EXISTS a version with a higher number) and
``Repo.add_version``'s max(number) look up versions by (article_id, number);
the drift queries filter figures by metric and kind and join them by
version.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# (name, table, columns); scripts/bench_query.py drops and creates these to compare.
INDEXES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ix_article_versions_article_number", "article_versions", ("article_id", "number")),
    ("ix_figures_version_metric", "figures", ("version_id", "metric", "kind")),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, list(columns), unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
