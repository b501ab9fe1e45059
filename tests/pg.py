"""A throwaway PostgreSQL cluster on loopback for tests.

    with PgCluster.start() as cluster:
        url = cluster.create_database("storage")   # postgresql+psycopg://…

``initdb`` into a fresh temp dir, ``pg_ctl start`` on a free port of
127.0.0.1 with its unix socket in that dir, trust authentication, one
database per test module; stopped and deleted at the end. PostgreSQL refuses
to run as root: under root the cluster runs as ``NEWSDRIFT_PG_USER`` (default
``nobody``) through ``runuser``.

Without the PostgreSQL binaries the tests that need them are skipped with the
reason, except under ``CI=true``, where they fail: CI must run both backends.
Fixtures (load with ``pytest_plugins = ("tests.pg",)`` in conftest): ``pg_cluster``
(session), ``pg_url`` (one database per module) and ``new_db`` (fresh databases of each
backend under ``NEWSDRIFT_TEST_DB``: ``new_db(name)`` and ``new_db.copy(url)``).
``snapshot_of(url)`` and ``integrity_of(url)`` read what a database holds and check it
is whole, on either backend.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.helpers_cli import Snapshot

# Settings that make a test cluster fast; durability does not matter for it.
FAST_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
    "shared_buffers=64MB",
)
START_TIMEOUT_S = 60
SUPERUSER = "postgres"


class PgUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: Debian's, else the PATH."""
    override = os.environ.get("NEWSDRIFT_PG_BINDIR")
    candidates = [Path(override)] if override else []
    candidates += [
        Path(p)
        for p in sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: [int(x) for x in re.findall(r"\d+", p)],
            reverse=True,
        )
    ]
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    raise PgUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; run scripts/install-postgres"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    bindir: Path
    base: Path
    port: int
    run_as: str | None  # a user to run the server as when we are root

    @property
    def data(self) -> Path:
        return self.base / "data"

    def _cmd(self, args: Sequence[str]) -> list[str]:
        if self.run_as is None:
            return list(args)
        return ["runuser", "-u", self.run_as, "--", *args]

    def _run(self, args: Sequence[str]) -> None:
        r = subprocess.run(self._cmd(args), capture_output=True, text=True, check=False)
        if r.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {r.stderr or r.stdout}\n{tail}")

    @classmethod
    def start(cls) -> PgCluster:
        bindir = find_bindir()
        run_as = os.environ.get("NEWSDRIFT_PG_USER", "nobody") if os.geteuid() == 0 else None
        base = Path(tempfile.mkdtemp(prefix="ndpg-"))
        if run_as is not None:
            shutil.chown(base, user=run_as)
        cluster = cls(bindir=bindir, base=base, port=0, run_as=run_as)
        cluster._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(cluster.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        last: RuntimeError | None = None
        for _attempt in range(3):  # a port taken between free_port() and the bind: retry
            cluster.port = free_port()
            try:
                cluster._start_server()
                return cluster
            except RuntimeError as e:
                last = e
        shutil.rmtree(base, ignore_errors=True)
        assert last is not None
        raise last

    def _options(self) -> str:
        return " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.base}",
                *(f"-c {s}" for s in FAST_SETTINGS),
            ]
        )

    def _start_server(self) -> None:
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.base / "server.log"),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-o",
                f"-p {self.port} {self._options()}",
                "start",
            ]
        )

    def stop_server(self, mode: str = "fast") -> None:
        """Shut the server down (``fast``: clients are disconnected); the data stay."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def start_server(self) -> None:
        """Start the server again, on the same port."""
        self._start_server()

    def stop(self) -> None:
        try:
            self.stop_server("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def conninfo(self, database: str = "postgres") -> str:
        """A libpq connection string (psycopg, Procrastinate)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        safe = re.sub(r"[^a-z0-9_]", "_", name.lower())[:60]
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{safe}"')
            conn.execute(f'CREATE DATABASE "{safe}"')
        return self.url(safe)

    def execute(self, *statements: str, database: str = "postgres") -> None:
        """Run ``statements`` as the superuser, each in its own transaction."""
        import psycopg

        with psycopg.connect(self.conninfo(database), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def query(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """The rows of one query, as the superuser."""
        import psycopg

        with psycopg.connect(self.conninfo(database), autocommit=True) as conn:
            return [tuple(r) for r in conn.execute(sql.encode()).fetchall()]

    def copy_database(self, source_url: str, name: str) -> str:
        """A copy of the database of ``source_url`` (nobody may be connected to it)."""
        safe = re.sub(r"[^a-z0-9_]", "_", name.lower())[:60]
        self.execute(
            f'DROP DATABASE IF EXISTS "{safe}"',
            f'CREATE DATABASE "{safe}" TEMPLATE "{database_name(source_url)}"',
        )
        return self.url(safe)


def unavailable(reason: str) -> None:
    """Skip with ``reason``; under CI=true fail instead: CI must run PostgreSQL."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    try:
        cluster = PgCluster.start()
    except PgUnavailable as e:
        unavailable(str(e))
        raise  # not reached: skip/fail raise
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def pg_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> str:
    """A fresh database for the requesting test module."""
    return pg_cluster.create_database(f"t_{request.module.__name__.rsplit('.', 1)[-1]}")


# --- one suite, both backends --------------------------------------------------------------------

BACKENDS = ("sqlite", "postgresql")


def backends_under_test() -> tuple[str, ...]:
    """The backends the storage-touching tests run on: ``NEWSDRIFT_TEST_DB`` =
    ``sqlite`` (default), ``postgresql``, or ``both``."""
    chosen = os.environ.get("NEWSDRIFT_TEST_DB", "sqlite").lower()
    if chosen == "both":
        return BACKENDS
    if chosen not in BACKENDS:
        raise pytest.UsageError(f"NEWSDRIFT_TEST_DB={chosen!r}: use sqlite, postgresql or both")
    return (chosen,)


class DbFactory:
    """Fresh, empty databases of one backend: ``new_db(name)`` returns a URL."""

    def __init__(self, backend: str, tmp: Path, module: str, cluster: PgCluster | None) -> None:
        self.backend = backend
        self._tmp = tmp
        self._module = module
        self._cluster = cluster
        self._count = 0

    @property
    def cluster(self) -> PgCluster:
        """The PostgreSQL cluster (only for the ``postgresql`` backend)."""
        assert self._cluster is not None, "not a PostgreSQL backend"
        return self._cluster

    def _next(self, name: str) -> str:
        self._count += 1
        return f"{name}-{self._count}"

    def __call__(self, name: str = "nd") -> str:
        unique = self._next(name)
        if self.backend == "sqlite":
            return f"sqlite:///{self._tmp / f'{unique}.db'}"
        return self.cluster.create_database(f"{self._module}_{unique}")

    def copy(self, url: str, name: str = "copy") -> str:
        """A fresh database holding what the database of ``url`` holds (no process may
        be writing to it): the file copied, or ``CREATE DATABASE … TEMPLATE``."""
        unique = self._next(name)
        if self.backend == "sqlite":
            target = self._tmp / f"{unique}.db"
            shutil.copy(sqlite_file(url), target)
            return f"sqlite:///{target}"
        return self.cluster.copy_database(url, f"{self._module}_{unique}")


@pytest.fixture(scope="module", params=backends_under_test())
def new_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DbFactory:
    """A factory of fresh databases on each backend under test (``NEWSDRIFT_TEST_DB``)."""
    backend: str = request.param
    cluster = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    module = request.module.__name__.rsplit(".", 1)[-1]
    return DbFactory(backend, tmp_path_factory.mktemp("db"), module, cluster)


# --- reading a database of either backend ---------------------------------------------------------


def database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name, url
    return name


def sqlite_file(url: str) -> Path:
    from storage.db import sqlite_path

    path = sqlite_path(url)
    assert path is not None, f"not a SQLite file URL: {url}"
    return path


def _pg_connect(url: str) -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True
    )


def integrity_of(url: str) -> str:
    """``"ok"`` when the database is sound. SQLite: ``PRAGMA integrity_check``.
    PostgreSQL: amcheck's ``bt_index_check`` (with ``heapallindexed``) over every index of
    newsdrift's tables — every row is in its indexes and every index is well-formed."""
    if url.startswith("sqlite"):
        from tests.helpers_cli import integrity_check

        return integrity_check(sqlite_file(url))
    problems: list[str] = []
    with _pg_connect(url) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        indexes = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam "
            "WHERE n.nspname = 'public' AND a.amname = 'btree' ORDER BY 1"
        ).fetchall()
        for (index,) in indexes:
            try:
                conn.execute(
                    "SELECT bt_index_check(index => %s::regclass, heapallindexed => true)",
                    (index,),
                )
            except Exception as e:  # reported, like PRAGMA integrity_check's rows
                problems.append(f"{index}: {e}")
    return "\n".join(problems) or "ok"


def snapshot_of(url: str) -> Snapshot:
    """What the database of ``url`` holds (``tests.helpers_cli.Snapshot``), on either
    backend; the PostgreSQL queries are those of ``helpers_cli.snapshot``.

    An alert's key starts with its story's id. PostgreSQL does not give back the ids of
    a rolled-back transaction (a sequence never goes back), SQLite does: after a run
    killed mid-transaction, the same stories have other ids on PostgreSQL only. Keys are
    compared with each story id replaced by its rank among the stories (1, 2, …), which
    is the id SQLite would have given."""
    from tests.helpers_cli import Snapshot, snapshot

    if url.startswith("sqlite"):
        return snapshot(sqlite_file(url))
    with _pg_connect(url) as conn:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sql.encode()).fetchall()]

        articles = sorted(r[0] for r in rows("SELECT key FROM articles"))
        versions = sorted(
            rows(
                "SELECT a.key, v.content_hash FROM article_versions v "
                "JOIN articles a ON a.id = v.article_id"
            )
        )
        figures = sorted(
            rows(
                'SELECT a.key, v.content_hash, f.start, f."end", f.unit FROM figures f '
                "JOIN article_versions v ON v.id = f.version_id "
                "JOIN articles a ON a.id = v.article_id"
            )
        )
        rank = {r[0]: n for n, r in enumerate(rows("SELECT id FROM stories ORDER BY id"), 1)}

        def dense(key: str) -> str:
            head, bar, rest = key.partition("|")
            if bar and head.isdigit() and int(head) in rank:
                return f"{rank[int(head)]}|{rest}"
            return key

        alerts = sorted(dense(r[0]) for r in rows("SELECT key FROM alerts"))
        deliveries = sorted(
            (dense(k), c)
            for k, c in rows(
                "SELECT a.key, d.channel FROM deliveries d JOIN alerts a ON a.id = d.alert_id"
            )
        )
        groups: dict[int, set[str]] = {}
        for key, story in rows(
            "SELECT a.key, a.story_id FROM articles a JOIN stories s ON s.id = a.story_id "
            "WHERE s.merged_into IS NULL"
        ):
            groups.setdefault(story, set()).add(key)
        unprocessed = rows(
            "SELECT count(*) FROM article_versions v JOIN articles a ON a.id = v.article_id "
            "WHERE v.processed_at IS NULL AND a.status != 'skipped'"
        )[0][0]
    return Snapshot(
        article_keys=tuple(articles),
        versions=tuple(versions),
        figures=tuple(figures),
        alert_keys=tuple(alerts),
        deliveries=tuple(deliveries),
        stories=frozenset(frozenset(g) for g in groups.values()),
        unprocessed_versions=int(unprocessed),
    )
