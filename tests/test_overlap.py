"""Overlap: runs, cron and daemons on one database never run a cycle at the same time
(on each backend under test, ``NEWSDRIFT_TEST_DB``).

Two ``newsdrift run`` at once: one runs, the other exits at once with
``EXIT_LEASE_HELD`` (75, EX_TEMPFAIL: "try again later") and a message saying that
another process holds the lease. A daemon and a cron run likewise; a second
daemon exits; SIGTERM stops a daemon with status 0 within a bounded time, even in
the middle of a cycle, and what it did not finish the next run does.

The outlets answer slowly so that the first process is still in its cycle when
the second starts: the loopback server holds its replies until the test has seen the
second process out, so "in its cycle" is observed, not assumed, however loaded the
machine. The SIGTERM and lease-TTL tests use slow replies instead (the cycle must go on).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.app import CYCLE_LEASE, LEASE_TTL, App
from pipeline.errors import LeaseHeld
from storage.repository import Store
from tests.helpers_cli import (
    Site,
    Snapshot,
    compare,
    describe,
    kill_hard,
    make_corpus,
    newsdrift,
    serve_outlets,
    start_newsdrift,
    write_config,
)
from tests.pg import DbFactory, integrity_of, snapshot_of

# Exit status of a run that found the lease taken (sysexits.h EX_TEMPFAIL).
EXIT_LEASE_HELD = 75
# A daemon must exit this soon after SIGTERM: finish the item in hand (one HTTP reply of
# REPLY_DELAY_S plus its processing), commit, release the lease, exit.
STOP_BOUND_S = 6.0
# Per reply. A cycle over the demo outlets makes ~20 requests one after the other, so it
# lasts ≈ 10 s: long enough to start a second process inside it, and longer than
# STOP_BOUND_S, so a daemon that stops only after its whole cycle fails the bound.
REPLY_DELAY_S = 0.5
# How long a started process may take to reach its first HTTP request (start-up ≈ 1.5 s).
START_TIMEOUT_S = 30.0
# Daemon interval in minutes (3 s): later cycles find nothing due and are short.
DAEMON_INTERVAL_MIN = "0.05"


@dataclass(frozen=True)
class Env:
    tmp: Path
    site: Site
    config: Path
    reference: Snapshot
    new_db: DbFactory


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, new_db: DbFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("overlap")
    corpus = make_corpus(tmp / "corpus", mirrors=0)
    with serve_outlets(corpus) as site:
        config = write_config(tmp / "config", site, alerts_log=tmp / "alerts.log")
        reference = new_db("reference")
        result = newsdrift(reference, config, "run")
        assert result.returncode == 0, describe(result)
        yield Env(tmp, site, config, snapshot_of(reference), new_db)


@contextmanager
def slow_outlets(env: Env) -> Iterator[None]:
    """Outlets answer slowly inside the block (a cycle lasts ≈ 21 × REPLY_DELAY_S)."""
    env.site.set_delay(REPLY_DELAY_S)
    try:
        yield
    finally:
        env.site.set_delay(0.0)


def _fresh_db(env: Env, name: str) -> str:
    """A URL of a new, empty database on the backend under test."""
    return env.new_db(name)


def _wait_until(condition: Callable[[], bool], what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        # The process may end between the two tests, and its end may be the condition
        # itself (the run refused the lease): the condition is asked once more first.
        if proc.poll() is not None and not condition():
            out, err = proc.communicate()
            pytest.fail(f"process ended before {what}: exit {proc.returncode}\n{out}\n{err}")
        if time.monotonic() > deadline:
            kill_hard(proc)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _in_cycle(env: Env, proc: subprocess.Popen[str]) -> None:
    seen = env.site.requests
    _wait_until(lambda: env.site.requests > seen, "the first HTTP request", proc)


def _assert_lease_refusal(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == EXIT_LEASE_HELD, describe(result)
    assert "another newsdrift process" in result.stderr and "lease" in result.stderr, describe(
        result
    )
    assert "Traceback" not in result.stderr, describe(result)


def _finish(proc: subprocess.Popen[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_hard(proc)
        pytest.fail(f"process did not end within {timeout}s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _stop(proc: subprocess.Popen[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=STOP_BOUND_S)
    except subprocess.TimeoutExpired:
        log = kill_hard(proc)
        pytest.fail(f"still running {STOP_BOUND_S}s after SIGTERM; its log:\n{log}")
    took = time.monotonic() - started
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), took


def _assert_complete(env: Env, url: str) -> None:
    """The database holds what the never-interrupted reference holds."""
    assert integrity_of(url) == "ok"
    assert compare(env.reference, snapshot_of(url)) == []


def test_two_runs_one_runs_the_other_exits_cleanly(env: Env) -> None:
    url = _fresh_db(env, "two-runs")
    with env.site.held():
        first = start_newsdrift(url, env.config, "run")
        _in_cycle(env, first)
        second = newsdrift(url, env.config, "run")
        _assert_lease_refusal(second)
    done = _finish(first, 120)
    assert done.returncode == 0, describe(done)
    _assert_complete(env, url)


def test_two_runs_started_together_on_a_fresh_database(env: Env) -> None:
    """Started in the same instant (both migrate, both race for the lease): one runs."""
    url = _fresh_db(env, "together")
    with env.site.held():
        procs = [start_newsdrift(url, env.config, "run") for _ in range(2)]
        _wait_until(lambda: any(p.poll() is not None for p in procs), "one run to end", procs[0])
    results = sorted((_finish(p, 120) for p in procs), key=lambda r: r.returncode)
    assert results[0].returncode == 0, describe(results[0])
    _assert_lease_refusal(results[1])
    _assert_complete(env, url)


def test_cron_run_while_the_daemon_cycles_exits_cleanly(env: Env) -> None:
    url = _fresh_db(env, "daemon-cron")
    daemon = start_newsdrift(url, env.config, "daemon", "--interval", DAEMON_INTERVAL_MIN)
    try:
        with env.site.held():
            _in_cycle(env, daemon)
            _assert_lease_refusal(newsdrift(url, env.config, "run"))
    finally:
        stopped, _took = _stop(daemon)
    assert stopped.returncode == 0, describe(stopped)
    assert "Traceback" not in stopped.stderr, describe(stopped)
    assert integrity_of(url) == "ok"


def test_daemon_started_while_a_cron_run_cycles_skips_then_runs(env: Env) -> None:
    url = _fresh_db(env, "cron-daemon")
    with env.site.held():
        cron = start_newsdrift(url, env.config, "-v", "run")
        _in_cycle(env, cron)
        log = env.tmp / "cron-daemon.log"
        daemon = start_newsdrift(
            url, env.config, "-v", "daemon", "--interval", DAEMON_INTERVAL_MIN, stderr_file=log
        )
        _wait_until(lambda: "lease" in log.read_text(), "the daemon's skipped cycle", daemon)
    try:
        done = _finish(cron, 120)
        assert done.returncode == 0, describe(done)
        # The daemon skipped its first cycle (lease held), kept running, and its next
        # cycle runs.
        assert daemon.poll() is None, "the daemon exited while a cron run held the lease"
        _wait_until(lambda: "status=done" in log.read_text(), "a daemon cycle", daemon)
    finally:
        stopped, _took = _stop(daemon)
    assert stopped.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    _assert_complete(env, url)


def test_second_daemon_exits_with_a_clear_message(env: Env) -> None:
    url = _fresh_db(env, "two-daemons")
    first = start_newsdrift(url, env.config, "daemon", "--interval", DAEMON_INTERVAL_MIN)
    try:
        with env.site.held():
            _in_cycle(env, first)
            second = start_newsdrift(url, env.config, "daemon", "--interval", DAEMON_INTERVAL_MIN)
            result = _finish(second, START_TIMEOUT_S)
        _assert_lease_refusal(result)
    finally:
        stopped, _took = _stop(first)
    assert stopped.returncode == 0, describe(stopped)


def test_sigterm_mid_cycle_exits_zero_within_bound_and_releases_the_lease(env: Env) -> None:
    url = _fresh_db(env, "sigterm")
    daemon = start_newsdrift(url, env.config, "daemon", "--interval", DAEMON_INTERVAL_MIN)
    with slow_outlets(env):
        _in_cycle(env, daemon)
        stopped, took = _stop(daemon)
    assert stopped.returncode == 0, describe(stopped)
    assert took < STOP_BOUND_S
    assert "Traceback" not in stopped.stderr, describe(stopped)
    assert integrity_of(url) == "ok"
    # The lease is free at once (not left to expire) and the rest of the work gets done.
    result = newsdrift(url, env.config, "run")
    assert result.returncode == 0, describe(result)
    _assert_complete(env, url)


def test_sigterm_mid_run_exits_zero_after_committing_the_item_in_hand(env: Env) -> None:
    url = _fresh_db(env, "sigterm-run")
    run = start_newsdrift(url, env.config, "run")
    with slow_outlets(env):
        _in_cycle(env, run)
        stopped, took = _stop(run)
    assert stopped.returncode == 0, describe(stopped)
    assert took < STOP_BOUND_S
    assert "Traceback" not in stopped.stderr, describe(stopped)
    assert integrity_of(url) == "ok"
    result = newsdrift(url, env.config, "run")  # the lease is free; the rest gets done
    assert result.returncode == 0, describe(result)
    _assert_complete(env, url)


class _SteppingClock:
    """An injected clock that moves ``step`` ahead at every reading (thread-safe)."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.now, self.step, self.lock = start, step, threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            self.now += self.step
            return self.now


def test_a_cycle_longer_than_the_lease_ttl_keeps_its_lease(env: Env) -> None:
    """A cycle that lasts longer than LEASE_TTL (many feeds, polite gaps) renews its lease:
    a process on another host must not take it over while the cycle is still running."""
    # A cycle over the demo outlets reads the clock ≈ 50 times: it lasts ≈ 2.5 TTLs.
    clock = _SteppingClock(datetime(2026, 1, 5, tzinfo=UTC), LEASE_TTL / 20)
    url = _fresh_db(env, "long")
    app = App(db_url=url, config_dir=env.config, clock=clock)
    other = Store.open(url)
    outcome: list[BaseException | None] = []

    def cycle() -> None:
        try:
            app.run_once()
            outcome.append(None)
        except BaseException as e:  # reported below, in the test's thread
            outcome.append(e)

    with slow_outlets(env):
        runner = threading.Thread(target=cycle)
        runner.start()
        # Wait until the cycle is fetching and its clock is well past the lease's TTL.
        started = clock()
        deadline = time.monotonic() + START_TIMEOUT_S
        while clock.now - started < 1.5 * LEASE_TTL and runner.is_alive():
            assert time.monotonic() < deadline, "the cycle's clock did not advance"
            time.sleep(0.05)
        assert runner.is_alive(), "the cycle ended before its lease's TTL passed"
        with pytest.raises(LeaseHeld), other.unit() as repo:
            repo.acquire_lease(CYCLE_LEASE, "elsewhere.example:4242:feedbeef", clock(), LEASE_TTL)
    runner.join(timeout=120)
    other.close()
    assert outcome == [None], outcome
