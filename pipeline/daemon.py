"""``newsdrift daemon``: the same cycle as cron, on an APScheduler 3.x schedule."""

from __future__ import annotations

import logging
import signal
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler

from pipeline.errors import LeaseHeld, StorageError

log = logging.getLogger(__name__)


def _cycle(app: Any) -> None:
    try:
        report = app.run_once()
    except LeaseHeld as e:
        log.warning("stage=daemon status=skipped reason=%s", e)
        return
    except StorageError as e:
        log.error("stage=daemon status=failed error=%s", e)
        return
    log.info("stage=daemon status=done %s", report.summary())


def run_daemon(app: Any, *, interval_minutes: float | None = None) -> None:
    """Run cycles until SIGTERM/SIGINT; the cycle in hand finishes before exit."""
    minutes = interval_minutes or app.settings.daemon.interval_minutes
    scheduler = BlockingScheduler(timezone=UTC)
    scheduler.add_job(
        _cycle,
        "interval",
        args=[app],
        minutes=minutes,
        next_run_time=datetime.now(UTC),
        id="cycle",
        # One cycle at a time; a late run still runs (grace = one interval), and
        # several missed runs collapse into one.
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, int(minutes * 60)),
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stage=daemon signal=%s status=stopping", signal.Signals(signum).name)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("stage=daemon status=started interval_minutes=%s", minutes)
    scheduler.start()
    log.info("stage=daemon status=stopped")
