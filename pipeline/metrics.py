"""Prometheus text exposition of `newsdrift status` (for node_exporter's textfile collector)."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

GAUGES = {
    "feeds": "Feeds configured",
    "feeds_failing": "Feeds whose last poll failed",
    "articles": "Articles seen (kept and skipped)",
    "articles_skipped": "Articles dropped by the topic filter",
    "articles_waiting": "Article versions not analysed yet",
    "stories": "Stories",
    "figures": "Figures stored",
    "alerts": "Alerts in the outbox",
    "deliveries_pending": "Alert deliveries waiting to be sent",
    "deliveries_failed": "Alert deliveries given up",
    "database_bytes": "Database size on disk",
    "last_cycle_seconds": "Duration of the last cycle",
}


def prometheus_text(status: dict[str, Any]) -> str:
    lines = []
    for key, help_text in GAUGES.items():
        value = status.get(key)
        if value is None:
            continue
        name = f"newsdrift_{key}"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
    leases = status.get("leases")
    if isinstance(leases, dict):
        for lease, help_text in (
            ("daemon", "1 while a daemon holds this database's daemon lease"),
            ("cycle", "1 while a cycle runs (its lease is held)"),
        ):
            name = f"newsdrift_{lease}_running"
            lines += [
                f"# HELP {name} {help_text}",
                f"# TYPE {name} gauge",
                f"{name} {int(lease in leases)}",
            ]
    cycle = status.get("last_cycle")
    if isinstance(cycle, dict) and cycle:
        for name, help_text, value in (
            (
                "newsdrift_last_cycle_errors",
                "Errors the last cycle reported (feeds, articles, analysis, feeds.toml)",
                len(cycle.get("errors") or ()),
            ),
            (
                "newsdrift_last_cycle_feeds_file_error",
                "1 when the last cycle could not apply feeds.toml (it polled the feeds stored)",
                int(bool(cycle.get("feeds_file_error"))),
            ),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    finished = status.get("last_cycle_finished")
    if isinstance(finished, datetime):
        name = "newsdrift_last_cycle_finished_timestamp_seconds"
        lines += [
            f"# HELP {name} When the last cycle finished (Unix time)",
            f"# TYPE {name} gauge",
            f"{name} {finished.timestamp():.0f}",
        ]
    return "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    """Every digit: counts as integers, the rest as Python's shortest exact float text
    (``:g`` kept six digits, so 1,234,567 articles read 1.23457e+06)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return repr(float(value))


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so a scraper never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
