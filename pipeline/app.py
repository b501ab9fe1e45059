"""The one place that builds real objects: store, fetcher, analysis, channels.

The CLI, the daemon and the demo create an ``App``; tests may pass their own
store, fetcher, clock and channels.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import platformdirs

from pipeline import drift as drift_mod
from pipeline.errors import ConfigError
from pipeline.fetch import Fetcher, FetchSettings
from pipeline.models import FeedConfig, FeedState, IngestItem
from pipeline.notify import AppriseChannel, Channel, FileChannel, NotifyError, StreamChannel
from pipeline.opml import parse_opml, to_opml
from pipeline.run import Analysis, Clock, RunReport, finish_analysis, ingest, run_cycle, utcnow
from pipeline.settings import Settings, feeds_path, load_feeds, load_settings
from storage.repository import AlertRecord, ArticleRecord, Store, StorySummary, lease_holder

CYCLE_LEASE = "cycle"
# A killed run's lease expires after this; a live run renews it each cycle.
LEASE_TTL = timedelta(minutes=30)


def fetch_settings(settings: Settings) -> FetchSettings:
    f = settings.fetch
    return FetchSettings(
        user_agent=f.full_user_agent,
        connect_timeout=f.connect_timeout_s,
        read_timeout=f.read_timeout_s,
        total_timeout=f.total_timeout_s,
        max_bytes=f.max_bytes,
        max_redirects=f.max_redirects,
        allow_private=f.allow_private,
        per_domain_concurrency=f.per_domain_concurrency,
        per_domain_min_gap_s=f.per_domain_min_gap_s,
        obey_robots=f.obey_robots,
    )


def build_channels(settings: Settings, *, stream: Any = None) -> list[Channel]:
    channels: list[Channel] = []
    if settings.alerts.console:
        channels.append(StreamChannel(stream or sys.stdout))
    log_file = settings.alerts.log_file or str(
        Path(platformdirs.user_log_dir("newsdrift", appauthor=False)) / "alerts.log"
    )
    channels.append(FileChannel(Path(log_file).expanduser()))
    for c in settings.alerts.channels:
        channels.append(AppriseChannel(c.name, c.url))
    return channels


@dataclass
class App:
    db_url: str
    config_dir: Path | None = None
    settings: Settings | None = None
    store: Store | None = None
    fetcher: Fetcher | None = None
    channels: Sequence[Channel] | None = None
    clock: Clock = utcnow
    # Add the feeds of the config's feeds.toml before each cycle (off for the demo).
    sync_feeds: bool = True

    def __post_init__(self) -> None:
        if self.settings is None:
            self.settings = load_settings(self.config_dir)
        if self.store is None:
            self.store = Store.open(self.db_url)

    # Built lazily: listing commands need neither HTTP nor lexicons.
    def _settings(self) -> Settings:
        assert self.settings is not None
        return self.settings

    def _store(self) -> Store:
        assert self.store is not None
        return self.store

    def _channels(self) -> Sequence[Channel]:
        if self.channels is None:
            self.channels = build_channels(self._settings())
        return self.channels

    def _fetcher(self) -> Fetcher:
        if self.fetcher is None:
            self.fetcher = Fetcher(fetch_settings(self._settings()))
        return self.fetcher

    def analysis(self, *, use_topic: bool = True) -> Analysis:
        return Analysis.from_settings(self._settings(), use_topic=use_topic)

    # --- cycles ---------------------------------------------------------------------------

    def sync_config_feeds(self) -> int:
        """Add the feeds of the config's feeds.toml that the database lacks."""
        s = self._settings()
        feeds_file = load_feeds(feeds_path(self.config_dir), s.fetch.default_interval_minutes)
        added = 0
        with self._store().unit() as repo:
            for outlet in feeds_file.outlets:
                repo.ensure_outlet(outlet)
            for feed in feeds_file.feeds:
                added += repo.add_feed(feed, self.clock())
        return added

    def run_once(self, *, rng: random.Random | None = None) -> RunReport:
        """One cycle under the database lease (cron mode and the daemon both call this)."""
        store = self._store()
        holder = lease_holder()
        with store.unit() as repo:
            repo.acquire_lease(CYCLE_LEASE, holder, self.clock(), LEASE_TTL)
        try:
            if self.sync_feeds:
                self.sync_config_feeds()
            return run_cycle(
                store, self._fetcher(), self.analysis(), self._channels(), clock=self.clock, rng=rng
            )
        finally:
            with store.unit() as repo:
                repo.release_lease(CYCLE_LEASE, holder)

    def ingest(self, items: Sequence[IngestItem], *, keep_all: bool = False) -> RunReport:
        store = self._store()
        holder = lease_holder()
        with store.unit() as repo:
            repo.acquire_lease(CYCLE_LEASE, holder, self.clock(), LEASE_TTL)
        try:
            report = RunReport()
            analysis = self.analysis(use_topic=not keep_all)
            ingest(store, items, analysis, self.clock, report, keep_all=keep_all)
            finish_analysis(store, analysis, self._channels(), self.clock, report)
            return report
        finally:
            with store.unit() as repo:
                repo.release_lease(CYCLE_LEASE, holder)

    # --- feeds ----------------------------------------------------------------------------

    def feeds(self) -> list[FeedState]:
        with self._store().unit() as repo:
            return repo.feeds()

    def add_feed(
        self, url: str, *, outlet: str, lang: str, interval: int | None, on_topic: bool
    ) -> bool:
        feed = FeedConfig(
            url=url,
            outlet=outlet,
            lang=lang,
            interval_minutes=interval or self._settings().fetch.default_interval_minutes,
            on_topic=on_topic,
        )
        with self._store().unit() as repo:
            return repo.add_feed(feed, self.clock())

    def remove_feed(self, url: str) -> bool:
        with self._store().unit() as repo:
            return repo.remove_feed(url)

    def import_feeds(self, source: Path) -> tuple[int, int]:
        if source.suffix == ".toml":
            feeds = list(load_feeds(source, self._settings().fetch.default_interval_minutes).feeds)
        else:
            try:
                content = source.read_bytes()
            except OSError as e:
                raise ConfigError(f"cannot read: {e.strerror}", path=str(source)) from e
            feeds = parse_opml(content, str(source))
        added = 0
        with self._store().unit() as repo:
            for feed in feeds:
                added += repo.add_feed(feed, self.clock())
        return added, len(feeds)

    def export_opml(self) -> bytes:
        feeds = [
            FeedConfig(
                url=f.url,
                outlet=f.outlet,
                lang=f.lang,
                interval_minutes=f.interval_minutes,
                on_topic=f.on_topic,
            )
            for f in self.feeds()
        ]
        return to_opml(feeds)

    # --- reading --------------------------------------------------------------------------

    def stories(self) -> list[StorySummary]:
        with self._store().unit() as repo:
            return repo.stories()

    def articles(self, *, status: str | None = None) -> list[ArticleRecord]:
        with self._store().unit() as repo:
            return repo.articles(status=status)

    def story_figures(self, story_id: int) -> list[dict[str, Any]]:
        with self._store().unit() as repo:
            found = repo.stories(story_id)
            if not found:
                raise ConfigError(f"no story with id {story_id}")
            rows = []
            for a in repo.articles():
                if a.story_id != story_id:
                    continue
                for f in repo.figures_of_article(a.id):
                    rows.append(
                        {
                            "article": a.key,
                            "outlet": a.outlet,
                            "published": a.published,
                            "metric": f.metric,
                            "subject": f.subject,
                            "period": f.period,
                            "value": f.value,
                            "unit": f.unit,
                            "qualifier": str(f.qualifier),
                            "quote": f.quote,
                        }
                    )
        rows.sort(key=lambda r: (r["metric"] or "~", r["subject"] or "", r["outlet"]))
        return rows

    def drift_rows(
        self,
        *,
        story_id: int | None = None,
        metric: str | None = None,
        diverging: bool = False,
        as_of: datetime | None = None,
    ) -> list[dict[str, Any]]:
        s = self._settings()
        rules = drift_mod.DriftRules(
            relative_tolerance=s.drift.relative_tolerance, metrics=s.drift.metrics
        )
        with self._store().unit() as repo:
            obs = repo.observations(story_id=story_id, metric=metric, as_of=as_of)
        rows = []
        for f in drift_mod.findings(obs, rules):
            if diverging and f.status != "diverging":
                continue
            for o in f.observations:
                rows.append(
                    {
                        "story": f.story_id,
                        "subject": f.subject,
                        "metric": f.metric,
                        "period": f.period,
                        "outlet": o.outlet,
                        "article": o.article,
                        "value": o.value,
                        "unit": o.unit,
                        "qualifier": str(o.qualifier),
                        "quote": o.quote,
                        "observed_at": o.observed_at,
                        "status": f.status,
                    }
                )
        return rows

    def alerts(self) -> list[AlertRecord]:
        with self._store().unit() as repo:
            return repo.alerts()

    def test_channels(self) -> list[tuple[str, str | None]]:
        results: list[tuple[str, str | None]] = []
        for channel in self._channels():
            try:
                channel.send("newsdrift test message", "If you can read this, the channel works.")
                results.append((channel.name, None))
            except (NotifyError, ConfigError) as e:
                results.append((channel.name, str(e)))
        return results
