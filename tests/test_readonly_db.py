"""A read-only database or a full disk: a clear error, a non-zero exit, no traceback, no
corruption, and nothing lost once the disk has room again.

Read-only is made three ways: a read-only bind mount (as root, where file modes do not
stop writes), file modes (as any other user), and SQLite's own ``mode=ro`` URI. A full
disk is a small tmpfs. Mounting needs root with CAP_SYS_ADMIN; without it those tests
are skipped, the URI test always runs.
"""

from __future__ import annotations

import os
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

from tests.helpers_cli import (
    Site,
    Snapshot,
    cli_args,
    compare,
    describe,
    integrity_check,
    make_corpus,
    newsdrift,
    serve_outlets,
    snapshot,
    start_newsdrift,
    write_config,
)

# Room left on the tmpfs above the size of a freshly migrated database: enough to start
# a run, far too little for the ~28 articles with their compressed HTML (≈ 1 MB).
DISK_HEADROOM_BYTES = 128 * 1024
# How long a daemon (cycles every 1.2 s) may take to hit the full disk, or to catch up.
DAEMON_WAIT_S = 60.0


@dataclass(frozen=True)
class Env:
    tmp: Path
    site: Site
    config: Path
    reference_db: Path
    reference: Snapshot


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("rodb")
    corpus = make_corpus(tmp / "corpus", mirrors=1)
    with serve_outlets(corpus) as site:
        config = write_config(tmp / "config", site, alerts_log=tmp / "alerts.log")
        db = tmp / "reference.db"
        result = newsdrift(f"sqlite:///{db}", config, "run")
        assert result.returncode == 0, describe(result)
        yield Env(tmp, site, config, db, snapshot(db))


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
def small_disk(path: Path, size: int) -> Iterator[None]:
    """A tmpfs of ``size`` bytes mounted at ``path`` for the block."""
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield
    finally:
        _umount(path)


def _assert_clean_failure(result: subprocess.CompletedProcess[str], env: Env, *words: str) -> None:
    """Non-zero, no traceback, and a last line ``Error: …`` that names the cause."""
    assert result.returncode != 0, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), describe(result)
    message = lines[-1].replace(str(env.tmp), "<tmp>").lower()  # the path proves nothing
    assert any(w in message for w in words), f"unclear message: {lines[-1]!r}"


def test_run_on_a_read_only_database_fails_clearly(env: Env) -> None:
    ro = env.tmp / "ro"
    ro.mkdir()
    shutil.copy(env.reference_db, ro / "nd.db")
    with read_only_dir(ro):
        result = newsdrift(f"sqlite:///{ro / 'nd.db'}", env.config, "run")
        _assert_clean_failure(result, env, "read-only", "readonly")
    assert integrity_check(ro / "nd.db") == "ok"
    assert compare(env.reference, snapshot(ro / "nd.db")) == []


def test_read_only_uri_fails_clearly_and_leaves_no_stray_files(env: Env) -> None:
    work = env.tmp / "uri"
    work.mkdir()
    db = work / "nd.db"
    shutil.copy(env.reference_db, db)
    url = f"sqlite:///file:{db}?mode=ro&uri=true"
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
    assert integrity_check(db) == "ok"


def test_disk_full_fails_clearly_then_the_next_run_loses_nothing(env: Env) -> None:
    fresh = env.tmp / "fresh.db"
    result = newsdrift(f"sqlite:///{fresh}", env.config, "feeds", "list", "--format", "json")
    assert result.returncode == 0, describe(result)
    disk = env.tmp / "disk"
    with small_disk(disk, fresh.stat().st_size + DISK_HEADROOM_BYTES):
        db = disk / "nd.db"
        shutil.copy(fresh, db)
        full = newsdrift(f"sqlite:///{db}", env.config, "run")
        _assert_clean_failure(full, env, "disk is full", "no space")
        assert integrity_check(db) == "ok"
        # Room again (an operator freed space): the next run completes the work.
        _mount("-o", "remount,size=64m", str(disk))
        again = newsdrift(f"sqlite:///{db}", env.config, "run")
        assert again.returncode == 0, describe(again)
        assert integrity_check(db) == "ok"
        assert compare(env.reference, snapshot(db)) == []


def test_daemon_survives_a_full_disk_and_catches_up(env: Env) -> None:
    """A cycle failing on a full disk is logged; the daemon keeps going and, once there
    is room, its next cycle stores everything."""
    fresh = env.tmp / "fresh-daemon.db"
    result = newsdrift(f"sqlite:///{fresh}", env.config, "feeds", "list", "--format", "json")
    assert result.returncode == 0, describe(result)
    disk = env.tmp / "daemon-disk"
    log = env.tmp / "daemon.log"
    with small_disk(disk, fresh.stat().st_size + DISK_HEADROOM_BYTES):
        db = disk / "nd.db"
        shutil.copy(fresh, db)
        daemon = start_newsdrift(
            f"sqlite:///{db}", env.config, "-v", "daemon", "--interval", "0.02", stderr_file=log
        )
        try:
            _wait_for(lambda: "disk is full" in log.read_text(), daemon, "the full disk")
            _mount("-o", "remount,size=64m", str(disk))
            _wait_for(lambda: _caught_up(db, env.reference), daemon, "the catch-up cycle")
        finally:
            daemon.send_signal(signal.SIGTERM)
            _out, _err = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
        assert integrity_check(db) == "ok"
        assert compare(env.reference, snapshot(db)) == []


def _caught_up(db: Path, reference: Snapshot) -> bool:
    try:
        return compare(reference, snapshot(db)) == []
    except sqlite3.OperationalError:
        return False  # busy: look again


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + DAEMON_WAIT_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the daemon exited (status {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DAEMON_WAIT_S}s")
        time.sleep(0.1)
