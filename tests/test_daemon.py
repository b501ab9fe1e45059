"""The daemon: cycles on a schedule, one daemon per database, a clean stop."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.daemon import run_daemon
from pipeline.errors import ConfigError, LeaseHeld
from storage.repository import Store
from tests.pg import DbFactory


def make_app(tmp_path: Path, db_url: str) -> App:
    cfg = tmp_path / "cfg"
    cfg.mkdir(exist_ok=True)
    (cfg / "feeds.toml").write_text("# no feeds\n")
    (cfg / "newsdrift.toml").write_text(
        f'[alerts]\nconsole = false\nlog_file = "{tmp_path / "a.log"}"\n'
    )
    return App(db_url=db_url, config_dir=cfg)


def cycles(app: App) -> int:
    assert app.store is not None
    with app.store.engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "select count(*) from runs where finished_at is not null"
            ).scalar_one()
        )


def test_daemon_runs_cycles_and_stops_cleanly(tmp_path: Path, new_db: DbFactory) -> None:
    url = new_db("daemon")
    app = make_app(tmp_path, url)
    stop = threading.Event()
    metrics = tmp_path / "metrics.prom"
    worker = threading.Thread(
        target=run_daemon,
        args=(app,),
        kwargs={"interval_minutes": 0.002, "stop": stop, "metrics_file": metrics},
    )
    worker.start()
    deadline = time.monotonic() + 30
    while cycles(app) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cycles(app) >= 2

    second = make_app(tmp_path, url)  # another daemon on the same database
    with pytest.raises(LeaseHeld, match="daemon"):
        run_daemon(second, interval_minutes=0.002, stop=threading.Event())

    stop.set()
    worker.join(timeout=15)
    assert not worker.is_alive()
    assert "newsdrift_feeds 0" in metrics.read_text()
    # written by the daemon between its cycles: its lease held, no cycle's
    assert "newsdrift_daemon_running 1" in metrics.read_text()
    assert "newsdrift_cycle_running 0" in metrics.read_text()
    assert make_app(tmp_path, url).status()["leases"] == {}
    # Its leases are released: a new daemon may start.
    with Store.open(url).engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from leases").scalar_one() == 0


def test_sigterm_taken_by_another_thread_stops_the_daemon(
    tmp_path: Path, new_db: DbFactory
) -> None:
    """A process-directed signal may land on any thread; CPython then runs the handler in
    the main thread only when that thread next runs Python code. The daemon's main thread
    must wake for it: here the signal is sent to a helper thread on purpose."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    app = make_app(tmp_path, new_db("daemon-signal"))
    stop = threading.Event()
    sent: list[float] = []
    gave_up = threading.Event()

    def signal_from_this_thread() -> None:
        deadline = time.monotonic() + 30
        while cycles(app) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        sent.append(time.monotonic())
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # handled on this thread
        if not stop.wait(10):  # the daemon missed it: end it anyway, and fail below
            gave_up.set()
            stop.set()

    handler_before = signal.getsignal(signal.SIGTERM)
    helper = threading.Thread(target=signal_from_this_thread)
    helper.start()
    run_daemon(app, interval_minutes=0.002, stop=stop)  # in the main thread, as the CLI runs it
    stopped = time.monotonic()
    helper.join(timeout=15)
    assert not gave_up.is_set(), "the daemon did not see a SIGTERM taken by another thread"
    assert sent and stopped - sent[0] < 5
    assert signal.getsignal(signal.SIGTERM) == handler_before  # its handler was put back


@pytest.mark.parametrize("minutes", [0.0, -5.0, float("nan")])
def test_a_non_positive_interval_is_refused_before_anything_runs(
    tmp_path: Path, new_db: DbFactory, minutes: float
) -> None:
    # APScheduler's thread died on a negative interval and the daemon hung without cycles
    url = new_db("interval")
    app = make_app(tmp_path, url)
    with pytest.raises(ConfigError, match="more than 0 minutes"):
        run_daemon(app, interval_minutes=minutes, stop=threading.Event())
    assert cycles(app) == 0


def test_the_cli_refuses_a_non_positive_interval(new_db: DbFactory) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main

    for args in (["daemon", "--interval", "0"], ["daemon", "--interval", "-5"]):
        result = CliRunner().invoke(main, ["--db", new_db("cli-interval"), *args])
        assert result.exit_code == 2 and "is not in the range x>0" in result.output
    feed = ["feeds", "add", "https://a.example/f", "--outlet", "a", "--lang", "en"]
    result = CliRunner().invoke(main, ["--db", new_db("cli-interval"), *feed, "--interval", "0"])
    assert result.exit_code == 2 and "is not in the range x>=1" in result.output


def test_sighup_reloads_the_settings_before_the_next_cycle(
    tmp_path: Path, new_db: DbFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """`systemctl reload`: the daemon reads newsdrift.toml again before its next cycle;
    a file with an error keeps the settings in use; the schedule holds until a restart."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    caplog.set_level(logging.INFO, logger="pipeline.daemon")
    app = make_app(tmp_path, new_db("daemon-reload"))
    settings_file = tmp_path / "cfg" / "newsdrift.toml"
    base = settings_file.read_text()
    stop = threading.Event()
    seen: list[float] = []
    failed: list[str] = []

    def wait_for(what: str, ok: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not ok():
            if time.monotonic() > deadline:
                failed.append(what)
                stop.set()
                return
            time.sleep(0.05)

    def reload_with(text: str) -> None:
        settings_file.write_text(base + text)
        signal.pthread_kill(threading.get_ident(), signal.SIGHUP)

    def drive() -> None:
        try:
            wait_for("a first cycle", lambda: cycles(app) >= 1)
            reload_with("[drift]\nrelative_tolerance = 0.05\n")
            wait_for("the new tolerance", lambda: app.settings.drift.relative_tolerance == 0.05)  # type: ignore[union-attr]
            seen.append(app.settings.drift.relative_tolerance)  # type: ignore[union-attr]
            reload_with('[drift]\nrelative_tolerance = "wide"\n')
            wait_for("the bad file's error", lambda: "reload=failed" in caplog.text)
            now = cycles(app)
            wait_for("a cycle after the bad file", lambda: cycles(app) > now)
            seen.append(app.settings.drift.relative_tolerance)  # type: ignore[union-attr]
            reload_with("[daemon]\ninterval_minutes = 99\n")
            wait_for("the restart note", lambda: "takes_effect=restart" in caplog.text)
        finally:
            stop.set()

    hangup_before = signal.getsignal(signal.SIGHUP)
    helper = threading.Thread(target=drive)
    helper.start()
    run_daemon(app, interval_minutes=0.002, stop=stop)
    helper.join(timeout=30)
    assert failed == []
    assert seen == [0.05, 0.05]  # the bad file left the reloaded settings in place
    assert "relative_tolerance: expected float, got str" in caplog.text
    assert "changed=daemon.interval_minutes" in caplog.text
    assert signal.getsignal(signal.SIGHUP) == hangup_before  # its handler was put back
