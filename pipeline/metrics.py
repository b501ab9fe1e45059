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
    "stories_unsummarised": "Stories whose drift summary is out of date (read whole by drift)",
    "figures": "Figures stored",
    "alerts": "Alerts in the outbox",
    "deliveries_pending": "Alert deliveries waiting to be sent",
    "deliveries_failed": "Alert deliveries given up",
    "database_bytes": "Database size on disk",
    "last_cycle_seconds": "Duration of the last cycle",
}


def prometheus_text(status: dict[str, Any]) -> str:
    gauges: list[tuple[str, str, Any]] = [
        (key, help_text, status[key])
        for key, help_text in GAUGES.items()
        if status.get(key) is not None
    ]
    leases = status.get("leases")
    if isinstance(leases, dict):
        held = {name: int(name in leases) for name in ("daemon", "cycle")}
        gauges += [
            (
                "daemon_running",
                "1 while a daemon holds this database's daemon lease",
                held["daemon"],
            ),
            ("cycle_running", "1 while a cycle runs (its lease is held)", held["cycle"]),
        ]
    cycle = status.get("last_cycle")
    if isinstance(cycle, dict) and cycle:
        gauges += [
            (
                "last_cycle_errors",
                "Errors the last cycle reported (feeds, articles, analysis, feeds.toml)",
                len(cycle.get("errors") or ()),
            ),
            (
                "last_cycle_feeds_file_error",
                "1 when the last cycle could not apply feeds.toml (it polled the feeds stored)",
                int(bool(cycle.get("feeds_file_error"))),
            ),
        ]
    finished = status.get("last_cycle_finished")
    if isinstance(finished, datetime):
        gauges.append(
            (
                "last_cycle_finished_timestamp_seconds",
                "When the last cycle finished (Unix time)",
                round(finished.timestamp()),
            )
        )
    lines = []
    for key, help_text, value in gauges:
        name = f"newsdrift_{key}"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
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
