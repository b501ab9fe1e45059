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
(session) and ``pg_url`` (one database per module).
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

import pytest

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
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={base}",
                *(f"-c {s}" for s in FAST_SETTINGS),
            ]
        )
        last: RuntimeError | None = None
        for _attempt in range(3):  # a port taken between free_port() and the bind: retry
            cluster.port = free_port()
            try:
                cluster._run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(cluster.data),
                        "-l",
                        str(base / "server.log"),
                        "-w",
                        "-t",
                        str(START_TIMEOUT_S),
                        "-o",
                        f"-p {cluster.port} {options}",
                        "start",
                    ]
                )
                return cluster
            except RuntimeError as e:
                last = e
        shutil.rmtree(base, ignore_errors=True)
        assert last is not None
        raise last

    def stop(self) -> None:
        try:
            self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
            )
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

    def __call__(self, name: str = "nd") -> str:
        self._count += 1
        if self.backend == "sqlite":
            return f"sqlite:///{self._tmp / f'{name}-{self._count}.db'}"
        assert self._cluster is not None
        return self._cluster.create_database(f"{self._module}_{name}_{self._count}")


@pytest.fixture(scope="module", params=backends_under_test())
def new_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DbFactory:
    """A factory of fresh databases on each backend under test (``NEWSDRIFT_TEST_DB``)."""
    backend: str = request.param
    cluster = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    module = request.module.__name__.rsplit(".", 1)[-1]
    return DbFactory(backend, tmp_path_factory.mktemp("db"), module, cluster)
