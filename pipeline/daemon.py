"""``newsdrift daemon``: the same cycle as cron, on an APScheduler 3.x schedule.

The daemon holds a ``daemon`` lease for its lifetime (a second daemon on the
same database exits at once) and the ``cycle`` lease during each cycle (a cron
run at the same moment exits instead). SIGTERM/SIGINT set a stop flag that the
cycle checks between items: the item in hand is finished and committed, and
the daemon exits 0. The fetch threads and the process pool live as long as the
daemon (idle workers hold their memory between cycles; ``[fetch] processes = 1``
does without them).
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from pipeline.errors import ConfigError, LeaseHeld, NewsdriftError
from storage.repository import lease_holder

log = logging.getLogger(__name__)

DAEMON_LEASE = "daemon"
# How often the main thread wakes while the scheduler runs the cycles. A signal may land
# on any of the daemon's threads; CPython runs its handler in the main thread, but only
# when that thread next runs Python code, and a main thread blocked in ``Event.wait()``
# without a timeout is not woken by a signal another thread took: the handler would never
# run and the daemon would never stop (seen in CI: SIGTERM ignored, cycles went on).
SIGNAL_POLL_S = 0.2


def _reload(app: Any) -> None:
    try:
        held = app.reload_settings()
    except ConfigError as e:
        log.error("stage=daemon reload=failed error=%s; the settings in use stay", e)
        return
    log.info("stage=daemon reload=done")
    if held:
        log.warning("stage=daemon reload=done changed=%s takes_effect=restart", ",".join(held))


def _cycle(
    app: Any,
    holder: str,
    stop: threading.Event,
    metrics_file: Path | None,
    ttl: timedelta,
    workers: Any,
    reload: threading.Event,
) -> None:
    if stop.is_set():
        return
    if reload.is_set():
        reload.clear()
        _reload(app)
    try:
        with app._store().unit() as repo:  # renew: a live daemon never loses its lease
            repo.acquire_lease(DAEMON_LEASE, holder, app.clock(), ttl)
        report = app.run_once(stop=stop, workers=workers)
        if metrics_file is not None:
            app.write_metrics(metrics_file)
    except LeaseHeld as e:
        log.warning("stage=daemon status=skipped reason=%s", e)
        return
    except NewsdriftError as e:
        log.error("stage=daemon status=failed error=%s", e)
        return
    log.info("stage=daemon status=done %s", report.summary())


def run_daemon(
    app: Any,
    *,
    interval_minutes: float | None = None,
    metrics_file: Path | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run cycles until SIGTERM/SIGINT (or ``stop`` is set); raises LeaseHeld at once
    when another daemon runs on this database."""
    minutes = app.settings.daemon.interval_minutes if interval_minutes is None else interval_minutes
    if not minutes > 0:  # (NaN too) APScheduler's thread would die on it, the daemon hang
        raise ConfigError(f"daemon interval must be more than 0 minutes, got {minutes!r}")
    ttl = max(timedelta(minutes=30), timedelta(minutes=3 * minutes))
    holder = lease_holder()
    with app._store().unit() as repo:
        repo.acquire_lease(DAEMON_LEASE, holder, app.clock(), ttl)
    stop = stop or threading.Event()
    reload = threading.Event()  # SIGHUP: read the settings again before the next cycle
    # One pool for the daemon's life: a pool's start (a process a core, each importing the
    # extraction and analysis stack, about a second of CPU) is paid once, not every cycle.
    workers = app.workers()
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        _cycle,
        "interval",
        args=[app, holder, stop, metrics_file, ttl, workers, reload],
        seconds=minutes * 60,
        next_run_time=datetime.now(UTC),
        id="cycle",
        # One cycle at a time; several missed runs collapse into one; a late run
        # still runs within one interval (the 1-second default would skip it).
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, int(minutes * 60)),
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stage=daemon signal=%s status=stopping", signal.Signals(signum).name)
        stop.set()

    def on_hangup(signum: int, _frame: FrameType | None) -> None:
        log.info("stage=daemon signal=SIGHUP status=reload_before_next_cycle")
        reload.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        if hasattr(signal, "SIGHUP"):  # not on Windows
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    log.info("stage=daemon status=started interval_minutes=%s", minutes)
    try:
        scheduler.start()
        while not stop.wait(SIGNAL_POLL_S):  # wakes to run a pending signal handler
            pass
        scheduler.shutdown(wait=True)  # the cycle in hand stops at its next item
    finally:
        workers.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        with app._store().unit() as repo:
            repo.release_lease(DAEMON_LEASE, holder)
    log.info("stage=daemon status=stopped")
