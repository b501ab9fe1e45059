"""A read-only database or a full disk: a clear error, a non-zero exit, no traceback, no
corruption, and nothing lost once the disk has room again. Every test runs on each
backend under test (``NEWSDRIFT_TEST_DB``), with that backend's own way of being
read-only or full:

| case | SQLite | PostgreSQL |
|---|---|---|
| read-only database | a read-only bind mount (as root, where file modes do not stop writes), else file modes | the database set ``default_transaction_read_only`` |
| read-only by the URL | ``mode=ro`` URI (and no stray ``-wal``/``-shm`` files) | ``options=-c default_transaction_read_only=on`` |
| full disk | the file on a small tmpfs | the database moved to a tablespace on a small tmpfs |
| a role with SELECT only | (no roles: PostgreSQL only) | ``GRANT SELECT`` and nothing else |
| server down | (no server: PostgreSQL only) | nothing listens on the port; a server stopped mid-run / under a daemon and started again |

Mounting needs root with CAP_SYS_ADMIN; without it those tests are skipped.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.helpers_cli import (
    Site,
    Snapshot,
    cli_args,
    compare,
    describe,
    make_corpus,
    newsdrift,
    serve_outlets,
    start_newsdrift,
    write_config,
)
from tests.pg import (
    DbFactory,
    PgCluster,
    database_name,
    free_port,
    integrity_of,
    snapshot_of,
    sqlite_file,
)

# Room left on the tmpfs above the size of a freshly migrated database: enough to start
# a run, far too little for the ~28 articles with their compressed HTML (≈ 1 MB).
DISK_HEADROOM_BYTES = 128 * 1024
# PostgreSQL also writes its relation-cache file (pg_internal.init, ≈ 160 kB) into the
# database's directory whenever a connection finds it missing: room for it on top, or
# whether a daemon can even take its lease would depend on when that file was written.
PG_RELCACHE_BYTES = 256 * 1024
# How long a daemon (cycles every 1.2 s) may take to hit the full disk, or to catch up.
DAEMON_WAIT_S = 60.0
# The daemons' interval in minutes (1.2 s).
DAEMON_INTERVAL_MIN = "0.02"


@dataclass(frozen=True)
class Env:
    tmp: Path
    site: Site
    config: Path
    reference_url: str
    reference: Snapshot
    new_db: DbFactory

    @property
    def backend(self) -> str:
        return self.new_db.backend


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, new_db: DbFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("rodb")
    corpus = make_corpus(tmp / "corpus", mirrors=1)
    with serve_outlets(corpus) as site:
        config = write_config(tmp / "config", site, alerts_log=tmp / "alerts.log")
        url = new_db("reference")
        result = newsdrift(url, config, "run")
        assert result.returncode == 0, describe(result)
        yield Env(tmp, site, config, url, snapshot_of(url), new_db)


def _postgresql_only(env: Env, why: str) -> PgCluster:
    if env.backend != "postgresql":
        pytest.skip(f"PostgreSQL only: {why}")
    return env.new_db.cluster


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here ({result.stderr.strip()})")


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=True)


@contextmanager
def read_only_dir(path: Path) -> Iterator[None]:
    """``path`` (a directory) cannot be written inside the block, even by root."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.iterdir()]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(stat.S_IMODE(mode))
        return
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield
    finally:
        _umount(path)


@contextmanager
def small_disk(path: Path, size: int, *, owner: str | None = None) -> Iterator[None]:
    """A tmpfs of ``size`` bytes mounted at ``path`` for the block (owned by ``owner``)."""
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755"
    if owner is not None:
        user = pwd.getpwnam(owner)
        options = f"size={size},mode=0700,uid={user.pw_uid},gid={user.pw_gid}"
    _mount("-t", "tmpfs", "-o", options, "tmpfs", str(path))
    try:
        yield
    finally:
        _umount(path)


def _grow(disk: Path) -> None:
    """An operator frees space: the tmpfs grows to 64 MB."""
    _mount("-o", "remount,size=64m", str(disk))


@contextmanager
def read_only_copy(env: Env, name: str) -> Iterator[str]:
    """A copy of the reference database that cannot be written inside the block: its
    directory read-only (SQLite), or ``default_transaction_read_only`` (PostgreSQL)."""
    if env.backend == "sqlite":
        ro = env.tmp / name
        ro.mkdir()
        shutil.copy(sqlite_file(env.reference_url), ro / "nd.db")
        with read_only_dir(ro):
            yield f"sqlite:///{ro / 'nd.db'}"
        return
    url = env.new_db.copy(env.reference_url, name)
    env.new_db.cluster.execute(
        f'ALTER DATABASE "{database_name(url)}" SET default_transaction_read_only = on'
    )
    yield url


def read_only_url(env: Env, name: str) -> tuple[str, str]:
    """A copy of the reference database and a URL that opens it read-only: SQLite's
    ``mode=ro`` URI (the copy in a new ``env.tmp / name``, made either way), PostgreSQL's
    ``default_transaction_read_only``. Returns (the plain URL, the read-only one)."""
    work = env.tmp / name
    work.mkdir()
    if env.backend == "sqlite":
        db = work / "nd.db"
        shutil.copy(sqlite_file(env.reference_url), db)
        return f"sqlite:///{db}", f"sqlite:///file:{db}?mode=ro&uri=true"
    plain = env.new_db.copy(env.reference_url, name)
    return plain, f"{plain}?options=-c%20default_transaction_read_only%3Don"


@contextmanager
def full_disk(env: Env, name: str) -> Iterator[tuple[str, Path]]:
    """A freshly migrated, empty database on a disk with DISK_HEADROOM_BYTES to spare:
    yields its URL and the disk's mount point (to ``_grow``)."""
    fresh = env.new_db(name)
    result = newsdrift(fresh, env.config, "feeds", "list", "--format", "json")  # migrates
    assert result.returncode == 0, describe(result)
    disk = env.tmp / f"{name}-disk"
    if env.backend == "sqlite":
        with small_disk(disk, sqlite_file(fresh).stat().st_size + DISK_HEADROOM_BYTES):
            shutil.copy(sqlite_file(fresh), disk / "nd.db")
            yield f"sqlite:///{disk / 'nd.db'}", disk
        return
    # PostgreSQL: the whole database (tables, indexes, its catalogs) moves to a tablespace
    # on the tmpfs; the cluster's WAL stays on the big disk, so only this database's writes
    # find the disk full, as a SQLite file would.
    cluster = env.new_db.cluster
    database = database_name(fresh)
    disk = cluster.base / f"{name}-disk"  # a path the server's user can reach
    size = int(cluster.query(f"SELECT pg_database_size('{database}')")[0][0])
    with small_disk(disk, size + PG_RELCACHE_BYTES + DISK_HEADROOM_BYTES, owner=cluster.run_as):
        space = f"ts_{database}"
        cluster.execute(
            f"CREATE TABLESPACE \"{space}\" LOCATION '{disk}'",
            f'ALTER DATABASE "{database}" SET TABLESPACE "{space}"',
        )
        try:
            yield fresh, disk
        finally:
            cluster.execute(f'DROP DATABASE "{database}"', f'DROP TABLESPACE "{space}"')


def _assert_clean_failure(result: subprocess.CompletedProcess[str], env: Env, *words: str) -> None:
    """Non-zero, no traceback, and a last line ``Error: …`` that names the cause."""
    assert result.returncode != 0, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), describe(result)
    message = lines[-1].replace(str(env.tmp), "<tmp>").lower()  # the path proves nothing
    assert any(w in message for w in words), f"unclear message: {lines[-1]!r}"


def _assert_unchanged(env: Env, url: str) -> None:
    assert integrity_of(url) == "ok"
    problems = compare(env.reference, snapshot_of(url))
    assert not problems, "\n".join(problems)


def test_run_on_a_read_only_database_fails_clearly(env: Env) -> None:
    with read_only_copy(env, "ro") as url:
        result = newsdrift(url, env.config, "run")
        _assert_clean_failure(result, env, "read-only", "readonly")
    _assert_unchanged(env, url)


def test_feeds_list_on_a_read_only_database_lists_what_is_stored(env: Env) -> None:
    """`feeds list` applies feeds.toml first; a database that takes no writes still lists
    its feeds, with a warning that the file was not applied."""
    cfg = env.tmp / "cfg-extra"
    shutil.copytree(env.config, cfg)
    with (cfg / "feeds.toml").open("a", encoding="utf-8") as fh:
        fh.write(
            '\n[[outlet]]\nname = "extra"\nlang = "en"\nfeeds = ["https://extra.example/rss"]\n'
        )
    # by the URL: a read-only directory cannot even be read by SQLite in WAL mode
    plain, url = read_only_url(env, "ro-list")
    result = newsdrift(url, cfg, "feeds", "list", "--format", "json")
    assert result.returncode == 0, describe(result)
    assert "feeds.toml not applied" in result.stderr
    listed = [f["url"] for f in json.loads(result.stdout)]
    assert listed and "https://extra.example/rss" not in listed
    _assert_unchanged(env, plain)


def test_read_only_url_fails_clearly_and_leaves_no_stray_files(env: Env) -> None:
    """Read-only asked for in the URL: SQLite's ``mode=ro`` URI (no ``-wal``/``-shm``
    files left next to the database), PostgreSQL's ``default_transaction_read_only``."""
    plain, url = read_only_url(env, "uri")
    work = env.tmp / "uri"
    result = subprocess.run(
        [*cli_args(url, env.config), "run"],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=120,
        check=False,
    )
    _assert_clean_failure(result, env, "read-only", "readonly")
    assert sorted(p.name for p in work.iterdir() if not p.name.startswith("nd.db")) == []
    _assert_unchanged(env, plain)


def test_disk_full_fails_clearly_then_the_next_run_loses_nothing(env: Env) -> None:
    with full_disk(env, "full") as (url, disk):
        full = newsdrift(url, env.config, "run")
        _assert_clean_failure(full, env, "disk is full", "no space")
        _grow(disk)  # room again (an operator freed space): the next run completes the work
        # Whole after the failure (checked with room: PostgreSQL may refuse any new
        # connection to a database whose disk is full, failing to write its relcache file).
        assert integrity_of(url) == "ok"
        again = newsdrift(url, env.config, "run")
        assert again.returncode == 0, describe(again)
        _assert_unchanged(env, url)


def test_daemon_survives_a_full_disk_and_catches_up(env: Env) -> None:
    """A cycle failing on a full disk is logged; the daemon keeps going and, once there
    is room, its next cycle stores everything."""
    log = env.tmp / "daemon.log"
    with full_disk(env, "fulld") as (url, disk):
        daemon = start_newsdrift(
            url, env.config, "-v", "daemon", "--interval", DAEMON_INTERVAL_MIN, stderr_file=log
        )
        try:
            _wait_for(lambda: "disk is full" in log.read_text(), daemon, "the full disk", log)
            _grow(disk)
            _wait_for_catch_up(env, url, daemon, log)
        finally:
            daemon.send_signal(signal.SIGTERM)
            _out, _err = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
        _assert_unchanged(env, url)


def test_role_with_select_only_fails_clearly_and_changes_nothing(env: Env) -> None:
    """A role that may read but not write (a reporting account used by mistake): the
    run stops at its first write with a message naming the missing privilege."""
    cluster = _postgresql_only(env, "SQLite has no roles (file modes are tested above)")
    url = env.new_db.copy(env.reference_url, "reader")
    database = database_name(url)
    cluster.execute(
        "DROP ROLE IF EXISTS reader",
        "CREATE ROLE reader LOGIN",
        f'GRANT CONNECT ON DATABASE "{database}" TO reader',
    )
    cluster.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader", database=database)
    try:
        as_reader = make_url(url).set(username="reader").render_as_string(hide_password=False)
        result = newsdrift(as_reader, env.config, "run")
        _assert_clean_failure(result, env, "privilege", "permission denied")
        listing = newsdrift(as_reader, env.config, "stories", "--format", "json")
        assert listing.returncode == 0, describe(listing)  # reading still works
    finally:
        cluster.execute(f'DROP DATABASE "{database}"', "DROP ROLE reader")
    # The copy is gone; the reference it came from is untouched.
    assert compare(env.reference, snapshot_of(env.reference_url)) == []


def test_server_refusing_connections_fails_clearly(env: Env) -> None:
    _postgresql_only(env, "SQLite has no server")

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/newsdrift"
    for args in (("run",), ("stories", "--format", "json")):
        result = newsdrift(url, env.config, *args)
        _assert_clean_failure(result, env, "cannot connect")


def test_server_stopped_mid_run_then_the_next_run_loses_nothing(env: Env) -> None:
    """The server goes down while a run is mid-cycle: the run fails clearly; once the
    server is back, the next run completes the work. (A cluster of its own: stopping the
    shared one would pull the databases of other tests away.)"""
    _postgresql_only(env, "SQLite has no server")
    with PgCluster.start() as cluster:
        url = cluster.create_database("outage")
        with env.site.held():
            run = start_newsdrift(url, env.config, "run")
            seen = env.site.requests
            _wait_for(lambda: env.site.requests > seen, run, "the first HTTP request")
            cluster.stop_server()
        out, err = run.communicate(timeout=120)
        result = subprocess.CompletedProcess(run.args, run.returncode, out, err)
        _assert_clean_failure(result, env, "connection", "connect")
        cluster.start_server()
        again = newsdrift(url, env.config, "run")
        assert again.returncode == 0, describe(again)
        _assert_unchanged(env, url)


def test_daemon_survives_a_server_outage_and_catches_up(env: Env) -> None:
    """The daemon's cycles fail (logged) while the server is down; the daemon keeps
    going, and once the server is back its next cycle stores everything."""
    _postgresql_only(env, "SQLite has no server")
    log = env.tmp / "outage-daemon.log"
    with PgCluster.start() as cluster:
        url = cluster.create_database("outage_daemon")
        with env.site.held():
            daemon = start_newsdrift(
                url, env.config, "-v", "daemon", "--interval", DAEMON_INTERVAL_MIN, stderr_file=log
            )
            try:
                seen = env.site.requests
                _wait_for(lambda: env.site.requests > seen, daemon, "the first HTTP request")
                cluster.stop_server()
            except BaseException:
                _terminate(daemon)
                raise
        try:
            _wait_for(lambda: "connect" in log.read_text(), daemon, "the failed cycle", log)
            cluster.start_server()
            _wait_for_catch_up(env, url, daemon, log)
        finally:
            _terminate(daemon)
        assert daemon.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
        _assert_unchanged(env, url)


def _terminate(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)


def _caught_up(url: str, reference: Snapshot) -> bool:
    try:
        return compare(reference, snapshot_of(url)) == []
    except sqlite3.OperationalError:
        return False  # busy: look again
    except Exception as e:  # PostgreSQL still starting: look again
        if type(e).__module__.startswith("psycopg"):
            return False
        raise


def _wait_for_catch_up(env: Env, url: str, daemon: subprocess.Popen[str], log: Path) -> None:
    try:
        _wait_for(lambda: _caught_up(url, env.reference), daemon, "the catch-up cycle", log)
    except pytest.fail.Exception as e:
        problems = "\n".join(compare(env.reference, snapshot_of(url)))
        raise AssertionError(f"{e}\ndifferences from the reference:\n{problems}") from None


def _wait_for(
    condition: Callable[[], bool],
    proc: subprocess.Popen[str],
    what: str,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + DAEMON_WAIT_S
    while not condition():
        tail = "\n".join(log.read_text().splitlines()[-30:]) if log is not None else ""
        if proc.poll() is not None:
            pytest.fail(f"the process exited (status {proc.returncode}) before {what}\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DAEMON_WAIT_S}s\n{tail}")
        time.sleep(0.1)
