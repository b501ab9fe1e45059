"""Engine creation and migrations: the only place a database is opened."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from pipeline.errors import StorageError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest migration's revision. A database already there opens without importing
# Alembic (0.15-0.27 s of every command's start); tests/test_storage.py checks that this
# is the head of the migration scripts, so a new migration must update it.
HEAD_REVISION = "0010"
# PostgreSQL advisory lock held while migrating (an arbitrary constant: b"ndmigr").
MIGRATION_LOCK_KEY = 0x6E646D696772


SQLITE_BUSY_TIMEOUT_S = 10.0


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """WAL mode, waiting as for any other lock. Two processes opening a new database at
    the same instant (two cron runs) both switch it; SQLite answers one of them
    "database is locked" at once, without its busy handler. Once the file is in WAL mode
    the pragma changes nothing, so the loser tries again until the other is done."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            busy = e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # extended codes too
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise StorageError(f"invalid database URL {url!r}: {e}") from e
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StorageError(
            f"unsupported database {backend!r} in {parsed!r}: newsdrift stores to SQLite "
            "(sqlite:///PATH) or PostgreSQL (postgresql://USER@HOST/NAME)"
        )
    if backend == "sqlite":
        path = sqlite_path(url)
        if path is not None and not parsed.query.get("uri"):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(f"cannot create {path.parent}: {e.strerror}") from e
        # Named parameters: a value bound several times in one statement (the story
        # window's bounds, once per branch of Repo.candidates) is converted once, not
        # once per "?": 218,000 → 72,000 conversions in a 1,000-article cycle.
        engine = create_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, paramstyle="named"
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        engine = create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as e:  # "postgresql+nodriver", a driver not installed
        raise StorageError(f"cannot use database URL {parsed!r}: {e}") from e
    event.listen(engine, "handle_error", _server_condition)
    return engine


# SQLSTATEs (or their class, the first two characters) of conditions of the database
# server, not of newsdrift's code: each becomes a StorageError with a plain message, as
# SQLite's read-only file or full disk do (an OperationalError there). Constraint
# violations and the like stay SQLAlchemy errors: the repository handles some (the
# lease's IntegrityError) and any other is a bug that must fail loudly.
_SERVER_CONDITIONS = {
    "25006": "the database is read-only",  # read_only_sql_transaction
    "42501": "the database role lacks a privilege newsdrift needs",  # insufficient_privilege
    "53100": "the database server's disk is full",  # disk_full
    "53": "the database server is out of resources",  # memory, connections
    "08": "lost the connection to the database server",  # connection_exception
    "57P": "the database server is shutting down or restarting",  # operator_intervention
}


def _one_line(message: object) -> str:
    """libpq's messages span lines (a hint on the next, tab-indented): one line for a log
    line or the CLI's ``Error: …``."""
    return " ".join(str(message).split())


def _server_condition(ctx: ExceptionContext) -> None:
    """``handle_error`` hook of PostgreSQL engines: a server condition (read-only, no
    privilege, disk full, server down or restarting) raises StorageError instead."""
    error = ctx.original_exception
    if not hasattr(error, "sqlstate"):
        return  # not an error of the driver (psycopg's errors carry their SQLSTATE)
    sqlstate = error.sqlstate or ""
    where = ctx.engine.url.render_as_string(hide_password=True) if ctx.engine else "database"
    for prefix in sorted(_SERVER_CONDITIONS, key=len, reverse=True):
        if sqlstate.startswith(prefix):
            raise StorageError(f"{_SERVER_CONDITIONS[prefix]} ({where}): {_one_line(error)}")
    if ctx.is_disconnect or (ctx.connection is None and not sqlstate):
        what = "cannot connect to" if ctx.connection is None else "lost the connection to"
        raise StorageError(f"{what} the database server ({where}): {_one_line(error)}")


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser treats "%" as interpolation: escape it (percent-encoded passwords,
    # "file%3A" in SQLite URIs) or every such URL fails with a traceback.
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration."""
    try:
        with engine.begin() as conn:
            before = schema_revision(conn)
            if before == HEAD_REVISION:
                return  # nothing to do, and no write lock: read-only databases still open
            from alembic import command

            cfg = alembic_config(engine)
            if engine.dialect.name == "sqlite":
                # pysqlite runs DDL outside any transaction unless one is open: two first
                # runs would race ("table ... already exists") and a run killed mid-way
                # would leave half a schema. BEGIN IMMEDIATE takes the write lock (waiting
                # up to the busy timeout): one process migrates, all or nothing, and the
                # other then finds the schema current.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif engine.dialect.name == "postgresql":
                # The same on PostgreSQL: DDL is transactional, but two first runs would
                # both create the tables and one would fail on a duplicate catalog entry.
                # The lock is held to the commit; the second process then finds the
                # schema current (alembic reads the version again, in a new snapshot).
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            if engine.dialect.name == "sqlite" and before is not None:
                # a migration may have added indexes: SQLite's planner weighs them by
                # statistics (Store.refresh_statistics takes them as the data grows)
                conn.exec_driver_sql("ANALYZE")
    except OperationalError as e:
        raise StorageError(
            f"cannot migrate database {engine.url!r}: {explain(engine, e.orig)}"
        ) from e


def database_size(engine: Engine) -> int | None:
    """Bytes on disk: the SQLite file with its WAL, or PostgreSQL's database size."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            return None
        path = Path(database).expanduser()
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.connect() as conn:
            return int(
                conn.execute(text("select pg_database_size(current_database())")).scalar_one()
            )
    return None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return schema_revision(conn)


def schema_revision(conn: Connection) -> str | None:
    """The migration the database is at, as Alembic records it (None: no schema yet, or
    more than one head, which newsdrift's linear history never writes)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return versions[0] if len(versions) == 1 else None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (``sqlite:///path`` or ``sqlite:///file:path?uri=true``)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if parsed.query.get("uri"):
        database = database.removeprefix("file:")
        if not database or database.startswith(":memory:"):
            return None
    return Path(database).expanduser()


def explain(engine: Engine, error: BaseException | None) -> str:
    """SQLite's message, with the cause when the file or its directory is read-only."""
    message = str(error)
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if path is None:
        return message
    for p in (path, path.parent):
        if p.exists() and not os.access(p, os.W_OK):
            return (
                f"{message} ({p} is read-only: newsdrift writes the database file and, "
                "for SQLite's write-ahead log, files next to it)"
            )
    return message
