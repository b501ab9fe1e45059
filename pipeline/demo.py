"""``newsdrift demo``: the real pipeline against bundled sample outlets on loopback.

Starts a loopback HTTP server with the outlets of ``pipeline/demo_data``, runs
cycles into a fresh SQLite database, and prints the stories, the drift table
and the alerts. Nothing leaves the machine.
"""

from __future__ import annotations

import dataclasses
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from pipeline.app import App
from pipeline.demo_server import serve_demo
from pipeline.models import format_figure
from pipeline.notify import Channel, FileChannel, StreamChannel
from pipeline.settings import load_settings


def run_demo(*, cycles: int = 2, db_path: Path | None = None, out: TextIO) -> App:
    console = Console(file=out, width=max(150, Console(file=out).width))
    settings = load_settings(None)
    # The sample outlets live on 127.0.0.1: allow loopback for this run only, and
    # drop the per-domain gap (all outlets share one host here).
    settings = dataclasses.replace(
        settings,
        fetch=dataclasses.replace(
            settings.fetch, allow_private=True, per_domain_min_gap_s=0.0, per_domain_concurrency=4
        ),
    )
    with tempfile.TemporaryDirectory(prefix="newsdrift-demo-") as tmp:
        db = db_path or Path(tmp) / "demo.db"
        if db.exists():
            db.unlink()
        channels: list[Channel] = [StreamChannel(out), FileChannel(Path(tmp) / "alerts.log")]
        with serve_demo() as site:
            app = App(
                db_url=f"sqlite:///{db}", settings=settings, channels=channels, sync_feeds=False
            )
            now = datetime.now(UTC)
            with app._store().unit() as repo:
                for config in site.feeds():
                    repo.add_feed(config, now)
            console.rule(f"newsdrift demo — sample outlets served at {site.base_url}")
            for n in range(1, cycles + 1):
                report = app.run_once()
                console.print(f"cycle {n}: {report.summary()}")
                for error in report.errors:
                    console.print(f"  [yellow]error:[/] {error}")
                # Every feed is due again at once for the demo's second cycle.
                with app._store().unit() as repo:
                    for feed in repo.feeds():
                        repo.record_feed_ok(
                            feed.id, now=now, next_due=now, etag=None, last_modified=None
                        )
            _print_results(app, console)
        if app.store is not None:
            app.store.close()
    return app


def _print_results(app: App, console: Console) -> None:
    console.rule("Stories")
    table = Table("story", "title", "outlets", "articles")
    for s in app.stories():
        table.add_row(str(s.id), s.title, ", ".join(s.outlets), str(len(s.articles)))
    console.print(table)

    console.rule("Drift table")
    table = Table(
        "story", "metric", "subject", "period", "outlet", "value", "qualifier", "status", "quote"
    )
    for r in app.drift_rows():
        style = "bold red" if r["status"] == "diverging" else None
        table.add_row(
            str(r["story"]),
            r["metric"],
            r["subject"] or "",
            r["period"] or "",
            r["outlet"],
            format_figure(r["value"], r["unit"]),
            r["qualifier"],
            r["status"],
            r["quote"],
            style=style,
        )
    console.print(table)

    console.rule("Alerts")
    alerts = app.alerts()
    if not alerts:
        console.print("no alerts")
    for a in alerts:
        channels = ", ".join(f"{c}: {s}" for c, s, _n, _e in a.deliveries)
        console.print(f"[bold]#{a.id}[/] {a.title}  [dim]({a.status}; {channels})[/]")
