"""drift_observations: the drift table as a SQL view

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

One row per figure with a metric, per article version, with its story,
outlet and the time newsdrift observed it. `is_current` is 1 for an
article's newest version. Consistent/diverging is decided in Python
(`newsdrift drift`), since it depends on configured tolerances; the view
gives every observation for any SQL tool. See docs/drift-view.md.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEW = """
CREATE VIEW drift_observations AS
SELECT
    a.story_id AS story,
    f.subject AS subject,
    f.metric AS metric,
    f.period AS period,
    o.name AS outlet,
    a.key AS article,
    a.url AS url,
    v.number AS version,
    CASE WHEN v.number = (
        SELECT MAX(v2.number) FROM article_versions v2 WHERE v2.article_id = v.article_id
    ) THEN 1 ELSE 0 END AS is_current,
    f.value AS value,
    f.low AS low,
    f.high AS high,
    f.unit AS unit,
    f.qualifier AS qualifier,
    f.quote AS quote,
    v.observed_at AS observed_at
FROM figures f
JOIN article_versions v ON v.id = f.version_id
JOIN articles a ON a.id = v.article_id
JOIN outlets o ON o.id = a.outlet_id
WHERE f.metric IS NOT NULL AND f.kind = 'absolute' AND a.story_id IS NOT NULL
  AND a.status <> 'skipped'
"""


def upgrade() -> None:
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW drift_observations")
