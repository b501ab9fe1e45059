#!/usr/bin/env python
"""Copy an existing newsdrift SQLite database into an empty PostgreSQL one.

    .venv/bin/python scripts/copy_sqlite_to_pg.py SQLITE_URL POSTGRES_URL
    .venv/bin/python scripts/copy_sqlite_to_pg.py sqlite:///nd.db \\
        postgresql+psycopg://newsdrift@db.internal/newsdrift

Both databases are upgraded to the newest migration first; the target must hold no
rows yet. Tables are copied through the ORM's table definitions in foreign-key order
(so types — UTC times, JSON, compressed HTML, booleans — convert as the application
reads and writes them), in batches, in one transaction; then each identity sequence
is moved past the copied ids. Stop `newsdrift run`/`daemon` on the source first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select, text

from storage.repository import Store
from storage.tables import Base

BATCH = 1000


def copy(source_url: str, target_url: str) -> dict[str, int]:
    source, target = Store.open(source_url), Store.open(target_url)
    if target.engine.dialect.name != "postgresql":
        raise SystemExit("the target must be a PostgreSQL URL (postgresql+psycopg://…)")
    counts: dict[str, int] = {}
    try:
        with source.engine.connect() as src, target.engine.begin() as dst:
            for table in Base.metadata.sorted_tables:
                if dst.execute(select(func.count()).select_from(table)).scalar():
                    raise SystemExit(f"target table {table.name} is not empty")
                order = list(table.primary_key.columns)
                result = src.execute(select(table).order_by(*order))
                merged: list[dict[str, int]] = []
                n = 0
                while rows := result.fetchmany(BATCH):
                    batch = [dict(r._mapping) for r in rows]
                    if table.name == "stories":
                        # merged_into may point at a later id: set it once all exist
                        merged += [
                            {"i": b["id"], "m": b["merged_into"]} for b in batch if b["merged_into"]
                        ]
                        batch = [{**b, "merged_into": None} for b in batch]
                    dst.execute(table.insert(), batch)
                    n += len(rows)
                if merged:
                    dst.execute(text("UPDATE stories SET merged_into = :m WHERE id = :i"), merged)
                counts[table.name] = n
                if "id" in table.c and n:
                    dst.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"(SELECT max(id) FROM {table.name}))"
                        )
                    )
    finally:
        source.close()
        target.close()
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("source", help="SQLite URL (sqlite:///path)")
    ap.add_argument("target", help="PostgreSQL URL (postgresql+psycopg://…), empty")
    args = ap.parse_args()
    for name, n in copy(args.source, args.target).items():
        print(f"{name:18} {n:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
