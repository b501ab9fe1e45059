"""The command line: parse arguments, call the library, print. No logic here.

Every listing takes ``--format table|json|csv`` (table on a terminal, JSON
otherwise); JSON is a list of objects, one per row.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import click

from pipeline.errors import LeaseHeld, NewsdriftError
from pipeline.models import METRICS, display_scale, utcnow
from pipeline.paths import default_db_url, own_folder

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("newsdrift")


@dataclass
class Context:
    db_url: str
    config_dir: Path | None


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, float) and math.isinf(value):
        return None
    return value


def emit(
    rows: Sequence[dict[str, Any]],
    fmt: str | None,
    columns: Sequence[str],
    extra: Sequence[str] = (),
) -> None:
    """Print rows as a table, JSON (a list of objects) or CSV.

    ``extra`` columns appear in JSON and CSV only (they would crowd a table).
    """
    if fmt is None:
        fmt = "table" if sys.stdout.isatty() else "json"
    if fmt != "table":
        columns = [*columns, *extra]
    clean = [{k: _iso(r.get(k)) for k in columns} for r in rows]
    if fmt == "json":
        click.echo(json.dumps(clean, ensure_ascii=False, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns))
        writer.writeheader()
        for r in clean:
            writer.writerow({k: _cell(v, exact=True) for k, v in r.items()})
        click.echo(buf.getvalue(), nl=False)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in clean:
            table.add_row(*(_cell(r[c]) for c in columns))
        Console(width=max(160, Console().width)).print(table)


def _cell(v: Any, *, exact: bool = False) -> str:
    """A value as text: numbers for people in a table ("14.3 bn"), every digit in CSV."""
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return ", ".join(str(x) for x in v)
    if isinstance(v, float):
        return repr(v) if exact else _human(v)
    return str(v)


def _human(v: float) -> str:
    """A float for a table: 14.3 bn, 900 m, 49 (the unit has its own column; an open
    bound is empty, as in JSON)."""
    div, word = display_scale(v)
    return f"{v / div:.7g} {word}" if word else f"{v:.7g}"


def since_option(what: str) -> Callable[[F], F]:
    """``--since T``: a time (ISO 8601) or an age (24h, 7d); parse with ``_since``."""
    return click.option(
        "--since", default=None, help=f"Only {what} from this time on (ISO 8601, or an age: 2d)."
    )


def listing(f: F) -> F:
    """Give a command ``--format table|json|csv``."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json", "csv"]),
        default=None,
        help="Output format (default: table on a terminal, json otherwise).",
    )(f)


# Another process holds the database lease: try again later (sysexits EX_TEMPFAIL).
EXIT_LEASE_HELD = 75


class LeaseHeldExit(click.ClickException):
    exit_code = EXIT_LEASE_HELD


def clean_errors(f: F) -> F:
    """Turn newsdrift's errors into one clear line: exit 75 when another run holds
    the lease, 1 for every other error."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except LeaseHeld as e:
            raise LeaseHeldExit(f"{e}; not running") from e
        except NewsdriftError as e:
            raise click.ClickException(str(e)) from e

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: int, quiet: int, log_format: str) -> None:
    """Warnings by default; ``-v`` info, ``-vv`` debug; ``-q`` errors only, ``-qq`` critical.
    Libraries log quieter than newsdrift (``QUIETER_LOGGERS``, never below warnings): what
    they say about a page ("not valid HTML", "discarding data") restates a failure
    newsdrift reports itself, with the page's URL: their errors show from -v on, the
    extraction libraries' warnings from -vv."""
    level = max(logging.DEBUG, min(logging.CRITICAL, logging.WARNING - 10 * verbose + 10 * quiet))
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy, steps in QUIETER_LOGGERS.items():
        logging.getLogger(noisy).setLevel(max(level + 10 * steps, logging.WARNING))


# Libraries that log quieter than newsdrift (``setup_logging``), by how many levels. The
# extraction libraries log a page's faults as errors ("parsed tree length: 1, wrong data
# type or not valid HTML"), beside newsdrift's own error for the same page: two levels.
QUIETER_LOGGERS = {
    "httpx": 1,
    "httpcore": 1,
    "alembic": 1,
    "apscheduler": 1,
    "trafilatura": 2,
    "htmldate": 2,
    "courlan": 2,
}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            },
            ensure_ascii=False,
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "db_url",
    envvar="NEWSDRIFT_DB",
    default=None,
    help="Database URL (env NEWSDRIFT_DB; default: a SQLite file in the user data directory).",
)
@click.option(
    "--config",
    "config_dir",
    envvar="NEWSDRIFT_CONFIG",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Config directory with newsdrift.toml and feeds.toml "
    "(env NEWSDRIFT_CONFIG; default: the shipped config/).",
)
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", help="Log line format."
)
@click.pass_context
def main(
    ctx: click.Context,
    db_url: str | None,
    config_dir: Path | None,
    verbose: int,
    quiet: int,
    log_format: str,
) -> None:
    """newsdrift: which outlets report which figures, and where they disagree."""
    setup_logging(verbose, quiet, log_format)
    ctx.obj = Context(db_url=db_url or default_db_url(), config_dir=config_dir)


def _app(ctx: click.Context) -> Any:
    from pipeline import app

    obj: Context = ctx.obj
    return app.App(db_url=obj.db_url, config_dir=obj.config_dir)


# --- pipeline commands --------------------------------------------------------------------------


@main.command()
@click.option(
    "--cycles",
    default=2,
    show_default=True,
    help="How many cycles to run against the sample outlets.",
)
@click.option(
    "--keep-db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the demo database here instead of a temporary file.",
)
@clean_errors
def demo(cycles: int, keep_db: Path | None) -> None:
    """Serve the bundled sample outlets on loopback and run the real pipeline on them."""
    from pipeline import demo as demo_mod

    demo_mod.run_demo(cycles=cycles, db_path=keep_db, out=sys.stdout)


METRICS_FILE = click.option(
    "--metrics-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="After each cycle, write Prometheus text-format metrics here.",
)


@main.command()
@METRICS_FILE
@click.pass_context
@clean_errors
def run(ctx: click.Context, metrics_file: Path | None) -> None:
    """Run one cycle over the due feeds (cron mode).

    Exit status: 0 when the cycle ran (failing feeds only warn), 75 when another
    process holds the database lease, 1 when the run itself could not work or when
    feeds.toml could not be applied (the cycle then polled the feeds stored).
    """
    app = _app(ctx)
    with progress_display() as progress, stop_on_signals() as stop:
        report = app.run_once(progress=progress, stop=stop)
    if metrics_file:
        app.write_metrics(metrics_file)
    click.echo(report.summary())
    if report.feeds_failed:
        click.echo(
            f"warning: {report.feeds_failed} feed(s) failed; see `newsdrift feeds list`", err=True
        )
    if report.feeds_file_error:
        ctx.exit(1)  # the error is logged by run_once, which also tells the daemon's log


@main.command()
@METRICS_FILE
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Minutes between cycles (default: [daemon] interval_minutes).",
)
@click.pass_context
@clean_errors
def daemon(ctx: click.Context, interval: float | None, metrics_file: Path | None) -> None:
    """Run cycles on a schedule until stopped (SIGTERM/SIGINT stop it cleanly).

    SIGHUP reads newsdrift.toml and the lexicons again before the next cycle (an
    error in them keeps the settings in use); feeds.toml is read before every cycle.
    The interval and the number of processes hold until a restart. A second daemon
    on the same database exits at once with status 75.
    """
    from pipeline.daemon import run_daemon

    run_daemon(_app(ctx), interval_minutes=interval, metrics_file=metrics_file)


@main.command()
@click.option("--concurrency", type=int, default=2, show_default=True, help="Tasks run at once.")
@click.option(
    "--feed-threads", type=int, default=2, show_default=True, help="Threads polling feeds."
)
@click.option(
    "--claim-ttl",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds after which a dead worker's feed claims lapse.",
)
@click.option(
    "--stalled-after",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds without heartbeat after which a dead worker's jobs run elsewhere.",
)
@click.pass_context
@clean_errors
def worker(
    ctx: click.Context,
    concurrency: int,
    feed_threads: int,
    claim_ttl: float,
    stalled_after: float,
) -> None:
    """Run one of many workers on a PostgreSQL database until stopped (SIGTERM/SIGINT).

    Claims due feeds, polls them politely (the per-domain budget is shared by all
    workers) and runs analysis, drift and alerts as Procrastinate tasks.
    """
    from datetime import timedelta

    from pipeline.worker import WorkerOptions, run_worker

    run_worker(
        _app(ctx),
        WorkerOptions(
            concurrency=concurrency,
            feed_threads=feed_threads,
            claim_ttl=timedelta(seconds=claim_ttl),
            stalled_after_s=stalled_after,
        ),
    )


@main.command()
@click.option(
    "--jsonl",
    "path",
    type=click.File("rb"),
    required=True,
    help="One JSON object per line: id, url, outlet, lang, published, title, "
    "text or html ('-' for stdin).",
)
@click.option("--all", "keep_all", is_flag=True, help="Keep every article (skip the topic filter).")
@click.pass_context
@clean_errors
def ingest(ctx: click.Context, path: BinaryIO, keep_all: bool) -> None:
    """Take already-fetched articles through the rest of the pipeline.

    The file is read twice: once to check every line and sort the articles by
    publication, keeping only where each line starts; then article by article, so a
    file of any size needs little memory. A bad line is reported and skipped.
    """
    from pipeline.ingest import index_jsonl, read_places

    source = getattr(path, "name", "<stdin>")
    with contextlib.ExitStack() as stack:
        if not path.seekable():  # stdin: kept in a temporary file to read it twice
            spool = stack.enter_context(tempfile.TemporaryFile())
            shutil.copyfileobj(path, spool)
            spool.seek(0)
            path = spool
        places, errors = index_jsonl(path, source)
        items = read_places(path, places, source)
        with progress_display() as progress:
            report = _app(ctx).ingest(
                items, keep_all=keep_all, progress=progress, total=len(places)
            )
    click.echo(report.summary())
    for error in errors + report.errors:
        click.echo(f"error: {error}", err=True)
    if errors:
        raise click.ClickException(f"{len(errors)} invalid line(s) were not ingested")


# --- feeds --------------------------------------------------------------------------------------


@main.group()
def feeds() -> None:
    """Manage feeds: list (with health), add, remove, import/export OPML."""


@feeds.command("list")
@listing
@click.pass_context
@clean_errors
def feeds_list(ctx: click.Context, fmt: str | None) -> None:
    """List feeds with their health: status, last error, last success, next poll.

    The list is what the next cycle polls: feeds.toml as it will be applied (nothing is
    written; `feeds sync` applies it now). in_feeds_file marks the feeds it manages.
    """
    rows = [r.__dict__ for r in _app(ctx).feeds()]
    emit(
        rows,
        fmt,
        [
            "id",
            "outlet",
            "lang",
            "url",
            "in_feeds_file",
            "status",
            "last_error",
            "last_error_at",
            "last_success_at",
            "next_due_at",
        ],
    )


@feeds.command("sync")
@click.pass_context
@clean_errors
def feeds_sync(ctx: click.Context) -> None:
    """Apply feeds.toml to the database now, as every cycle does first (for workers,
    which apply it when they start): add its missing feeds, take its changed settings,
    remove the feeds it no longer lists (their articles stay). Prints what changed."""
    applied = _app(ctx).sync_config_feeds()
    for verb, urls in (
        ("added", applied.added),
        ("updated", applied.updated),
        ("removed", applied.removed),
    ):
        for url in urls:
            click.echo(f"{verb} {url}")
    for old, new in applied.renamed:
        click.echo(f"renamed outlet {old!r} to {new!r}")
    if not (applied.added or applied.updated or applied.removed or applied.renamed):
        click.echo("nothing to change")


@feeds.command("add")
@click.argument("url")
@click.option("--outlet", required=True, help="Outlet name.")
@click.option(
    "--lang", type=click.Choice(["de", "en"]), required=True, help="Language of the feed."
)
@click.option(
    "--interval", type=click.IntRange(min=1), default=None, help="Poll interval in minutes."
)
@click.option("--on-topic", is_flag=True, help="Every item is on topic: skip the topic filter.")
@click.pass_context
@clean_errors
def feeds_add(
    ctx: click.Context, url: str, outlet: str, lang: str, interval: int | None, on_topic: bool
) -> None:
    """Add a feed."""
    app = _app(ctx)
    similar = app.similar_outlets(outlet)
    added = app.add_feed(url, outlet=outlet, lang=lang, interval=interval, on_topic=on_topic)
    click.echo(f"added {url}" if added else f"already present: {url}")
    if added and similar:
        names = " or ".join(repr(n) for n in similar)
        click.echo(
            f"warning: new outlet {outlet!r}; did you mean {names}? An outlet under two names "
            "has two histories in the drift table (`feeds remove` and add it again to fix).",
            err=True,
        )


@feeds.command("remove")
@click.argument("url")
@click.pass_context
@clean_errors
def feeds_remove(ctx: click.Context, url: str) -> None:
    """Remove a feed (its articles stay).

    A feed that feeds.toml lists is removed by deleting it from the file.
    """
    if not _app(ctx).remove_feed(url):
        raise click.ClickException(f"no such feed: {url}")
    click.echo(f"removed {url}")


@feeds.command("import")
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.pass_context
@clean_errors
def feeds_import(ctx: click.Context, source: Path) -> None:
    """Import feeds from an OPML file or a feeds.toml."""
    added, total = _app(ctx).import_feeds(source)
    click.echo(f"imported {added} new of {total} feed(s) from {source}")


@feeds.command("export")
@click.option(
    "-o", "--output", type=click.File("wb"), default="-", help="Write OPML here (default: stdout)."
)
@click.pass_context
@clean_errors
def feeds_export(ctx: click.Context, output: io.BufferedWriter) -> None:
    """Export feeds as OPML."""
    output.write(_app(ctx).export_opml())


# --- reading results ----------------------------------------------------------------------------


@main.command()
@since_option("stories with an article published")
@click.option(
    "--min-outlets",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Only stories that this many outlets report.",
)
@listing
@click.pass_context
@clean_errors
def stories(ctx: click.Context, since: str | None, min_outlets: int, fmt: str | None) -> None:
    """List stories with their articles and outlets, oldest first."""
    found = _app(ctx).stories(since=_since(since), min_outlets=min_outlets)
    rows = [
        {
            "story": s.id,
            "title": s.title,
            "articles": list(s.articles),
            "outlets": list(s.outlets),
            "first_seen": s.first_seen,
            "last_seen": s.last_seen,
        }
        for s in found
    ]
    emit(rows, fmt, ["story", "title", "articles", "outlets", "first_seen", "last_seen"])


@main.command()
@click.argument("story_id", type=int)
@listing
@click.pass_context
@clean_errors
def story(ctx: click.Context, story_id: int, fmt: str | None) -> None:
    """One story: its articles and their figures side by side."""
    rows = _app(ctx).story_figures(story_id)
    emit(
        rows,
        fmt,
        [
            "article",
            "outlet",
            "published",
            "metric",
            "subject",
            "period",
            "value",
            "unit",
            "qualifier",
            "quote",
        ],
    )


@main.command()
@click.option("--story", "story_id", type=int, default=None, help="Only this story.")
@click.option("--metric", type=click.Choice(METRICS), default=None, help="Only this metric.")
@click.option("--outlet", default=None, help="Only this outlet's observations.")
@since_option("observations")
@click.option("--diverging", is_flag=True, help="Only rows of diverging groups.")
@click.option(
    "--as-of", "as_of", default=None, help="What was known at this time (ISO 8601, or an age: 2d)."
)
@click.option(
    "--revisions", is_flag=True, help="Outlets changing their own figure between versions."
)
@listing
@click.pass_context
@clean_errors
def drift(
    ctx: click.Context,
    story_id: int | None,
    metric: str | None,
    outlet: str | None,
    since: str | None,
    diverging: bool,
    as_of: str | None,
    revisions: bool,
    fmt: str | None,
) -> None:
    """The drift table: one row per claim, with its group's status.

    A figure an article repeats in the same words (headline and lede) is one claim."""
    rows = _app(ctx).drift_rows(
        story_id=story_id,
        metric=metric,
        outlet=outlet,
        since=_since(since),
        diverging=diverging,
        as_of=_parse_time(as_of) if as_of else None,
        revisions=revisions,
    )
    emit(rows, fmt, DRIFT_COLUMNS, DRIFT_EXTRA)


@main.command()
@click.argument("story_id", type=int)
@click.option(
    "--metric",
    type=click.Choice(METRICS),
    default=None,
    help="Only this metric (default: every metric).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="PNG file to write (default: story-ID.png).",
)
@click.pass_context
@clean_errors
def plot(ctx: click.Context, story_id: int, metric: str | None, output: Path | None) -> None:
    """Write a PNG timeline of a story's figures per outlet."""
    path = _app(ctx).plot(story_id, metric, output or Path(f"story-{story_id}.png"))
    click.echo(f"wrote {path}")


DRIFT_COLUMNS = [
    "story",
    "subject",
    "metric",
    "period",
    "outlet",
    "article",
    "value",
    "unit",
    "qualifier",
    "quote",
    "observed_at",
    "status",
]
DRIFT_EXTRA = [
    "version",
    "low",
    "high",
    "kind",
    "first",
    "consensus_low",
    "consensus_high",
    "spread",
    "note",
]


def _since(value: str | None) -> datetime | None:
    return _parse_time(value) if value else None


def _parse_time(value: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone), or an age that long ago: 24h, 7d."""
    if _AGE.fullmatch(value):
        return utcnow() - _parse_age(value)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(
            f"expected an ISO 8601 time or an age such as 24h or 7d, got {value!r}"
        ) from e
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@main.command()
@click.option(
    "--test",
    "test_",
    is_flag=True,
    help="Send a test message to every channel and say which worked.",
)
@since_option("alerts created")
@listing
@click.pass_context
@clean_errors
def alerts(ctx: click.Context, test_: bool, since: str | None, fmt: str | None) -> None:
    """Alerts sent, pending and failed."""
    app = _app(ctx)
    if test_:
        failed = 0
        for name, error in app.test_channels():
            click.echo(f"{name}: {'ok' if error is None else 'FAILED: ' + error}")
            failed += error is not None
        if failed:
            raise SystemExit(1)
        return
    rows = [
        {
            "id": a.id,
            "kind": a.kind,
            "story": a.story_id,
            "status": a.status,
            "title": a.title,
            "created_at": a.created_at,
            "channels": [f"{c}:{s}" for c, s, _n, _e in a.deliveries],
            "body": a.body,
        }
        for a in app.alerts(since=_since(since))
    ]
    emit(rows, fmt, ["id", "kind", "story", "status", "title", "created_at", "channels", "body"])


@main.command()
@click.option(
    "--skipped",
    is_flag=True,
    help="Only articles the topic filter dropped, with the terms that decided.",
)
@since_option("articles first seen")
@listing
@click.pass_context
@clean_errors
def articles(ctx: click.Context, skipped: bool, since: str | None, fmt: str | None) -> None:
    """Articles seen, with the topic decision that kept or dropped each."""
    rows = [
        {
            "article": a.key,
            "outlet": a.outlet,
            "published": a.published,
            "title": a.title,
            "status": a.status,
            "score": a.topic_score,
            "terms": list(a.topic_terms),
            "stage": a.topic_stage,
            "story": a.story_id,
        }
        for a in _app(ctx).articles(status="skipped" if skipped else None, since=_since(since))
    ]
    emit(
        rows,
        fmt,
        ["article", "outlet", "published", "title", "status", "score", "terms", "stage", "story"],
    )


@main.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "prometheus"]),
    default=None,
    help="Output format (default: table on a terminal, json otherwise).",
)
@click.pass_context
@clean_errors
def status(ctx: click.Context, fmt: str | None) -> None:
    """Last cycle, feeds failing, articles waiting, alerts pending/failed, database size."""
    from pipeline.metrics import prometheus_text

    info = _app(ctx).status()
    fmt = fmt or ("table" if sys.stdout.isatty() else "json")
    if fmt == "prometheus":
        click.echo(prometheus_text(info), nl=False)
    elif fmt == "json":
        click.echo(
            json.dumps({k: _jsonable(v) for k, v in info.items()}, ensure_ascii=False, indent=2)
        )
    else:
        rows = [
            {"key": k, "value": v}
            for k, v in info.items()
            if k not in ("failing_feeds", "last_cycle")
        ]
        rows += [
            {"key": f"last_cycle.{k}", "value": v}
            for k, v in info["last_cycle"].items()
            if k != "errors"
        ]
        rows += [
            {"key": f"failing: {f['url']}", "value": f["last_error"]} for f in info["failing_feeds"]
        ]
        emit(rows, "table", ["key", "value"])


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return _iso(v)


_AGE = re.compile(r"\s*(\d+)\s*([dhm])\s*")


def _parse_age(value: str) -> timedelta:
    m = _AGE.fullmatch(value)
    if not m:
        raise click.BadParameter(f"expected a number with d, h or m (e.g. 180d), got {value!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit]


@main.command()
@click.option("--older-than", "older_than", required=True, help="Age such as 180d, 12h.")
@click.pass_context
@clean_errors
def prune(ctx: click.Context, older_than: str) -> None:
    """Drop raw HTML and superseded versions older than the given age, and the story
    postings older than that by the story window.

    Figures that a drift row refers to are never removed. An article published after
    the cut still meets every story of its window; one published before it meets fewer.
    Pages and postings go a day at a time, so a running cycle waits little.
    """
    done = _app(ctx).prune(_parse_age(older_than))
    click.echo(
        f"dropped raw HTML of {done['html_dropped']} version(s); "
        f"deleted {done['versions_deleted']} old version(s) "
        f"and {done['postings_deleted']} story posting(s)"
    )


@main.group()
def config() -> None:
    """Configuration files."""


@config.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Read newsdrift.toml, feeds.toml, the lexicons and the alert channels' URLs, and say
    what is wrong, with file and line; exit 1 if anything is. Touches no database and
    sends nothing: run it before `systemctl reload newsdrift`."""
    from pipeline.app import check_config

    obj: Context = ctx.obj
    read, errors = check_config(obj.config_dir)
    for line in read:
        click.echo(f"ok: {line}")
    for line in errors:
        click.echo(f"error: {line}", err=True)
    if errors:
        ctx.exit(1)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
@clean_errors
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the database schema to the newest version."""
    from storage.db import create_db_engine, current_revision, upgrade

    obj: Context = ctx.obj
    engine = create_db_engine(obj.db_url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        click.echo(f"database schema: {before or 'empty'} -> {current_revision(engine)}")
    finally:
        engine.dispose()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set a flag: the cycle finishes the item in hand, commits and ends."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.warning("stage=run signal=%s status=stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def progress_display() -> Iterator[Any]:
    """A rich progress bar on a terminal; nothing in cron or pipes."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as bar:
        yield bar


# --- single-document tools ----------------------------------------------------------------------


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as e:
        raise click.ClickException(f"{source}: {e.strerror}") from e


@main.command()
@click.option("--url", default=None, help="The page's URL (for relative links and metadata).")
@click.argument("source", default="-")
@clean_errors
def extract(url: str | None, source: str) -> None:
    """Text and metadata newsdrift extracts from one HTML page, as one JSON object."""
    from pipeline.errors import ParseError
    from pipeline.extract import decode_html, extract_article

    html, _how = decode_html(_read_input(source), {})
    try:
        ex = extract_article(html, url)
    except ParseError as e:
        # without --url the page is known by its file
        where = url or ("<stdin>" if source == "-" else source)
        raise click.ClickException(f"{where}: {e.reason}") from e
    site = ex.site
    click.echo(
        json.dumps(
            {
                "title": ex.title,
                "text": ex.text,
                "published": _iso(ex.published),
                "lang": ex.lang,
                "site": site,
                "method": ex.method,
            },
            ensure_ascii=False,
        )
    )


@main.command()
@click.option(
    "--lang",
    type=click.Choice(["de", "en", "auto"]),
    default="auto",
    show_default=True,
    help="Language of the text.",
)
@click.option(
    "--published", default=None, help="The article's publication time (ISO 8601), for 'this year'."
)
@click.argument("source", default="-")
@click.pass_context
@clean_errors
def figures(ctx: click.Context, lang: str, published: str | None, source: str) -> None:
    """Figures in a text, one JSON object per line."""
    from pipeline.figures import extract_figures, load_lexicons

    data = _read_input(source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{source}: not UTF-8 text ({e})") from e
    when = _parse_time(published) if published else None
    obj: Context = ctx.obj
    lexicons = load_lexicons(own_folder(obj.config_dir, "lexicons"))
    for fig in extract_figures(text, lang, when, lexicons):
        click.echo(json.dumps(fig.to_json(), ensure_ascii=False))


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    main(prog_name="newsdrift")
