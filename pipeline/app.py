"""The one place that builds real objects: store, fetcher, analysis, channels.

The CLI, the daemon and the demo create an ``App``; tests may pass their own
store, fetcher, clock and channels.
"""

from __future__ import annotations

import difflib
import logging
import random
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
from sqlalchemy.exc import SQLAlchemyError

from pipeline import drift as drift_mod
from pipeline.errors import ConfigError, StorageError
from pipeline.models import Clock, FeedConfig, FeedState, IngestItem, is_http_url, utcnow
from pipeline.notify import AppriseChannel, Channel, FileChannel, NotifyError, StreamChannel
from pipeline.opml import parse_opml, to_opml
from pipeline.paths import own_folder, shipped_config_dir
from pipeline.settings import (
    FeedsFile,
    Settings,
    feeds_path,
    load_feeds,
    load_settings,
)
from storage.repository import (
    AlertRecord,
    ArticleRecord,
    FeedsApplied,
    Repo,
    Store,
    StorySummary,
    lease_holder,
)

log = logging.getLogger(__name__)

# The pipeline proper (HTTP, extraction, figures, stories: about 0.4 s of imports) is
# imported where it is used, so that listing commands (status, stories, drift …) start
# without it.
if TYPE_CHECKING:
    from pipeline.fetch import Fetcher, FetchSettings
    from pipeline.run import Analysis, RunReport, Workers

CYCLE_LEASE = "cycle"
# A killed run's lease expires after this; a live run renews it each cycle.
LEASE_TTL = timedelta(minutes=30)
# A cycle renews its lease between items once this much of the TTL has passed, so that a
# cycle longer than LEASE_TTL (thousands of feeds, polite gaps) is not taken over.
LEASE_RENEW_AFTER = LEASE_TTL / 3
# ``prune`` drops pages and story postings this much time (fetch, publication) per
# transaction.
PRUNE_STEP = timedelta(days=1)


def fetch_settings(settings: Settings) -> FetchSettings:
    from pipeline.fetch import FetchSettings

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
        channels.append(AppriseChannel(c.name, c.url, c.kinds))
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
    # Apply the config's feeds.toml before each cycle and each feed listing (off for the
    # demo, whose feeds are its own).
    sync_feeds: bool = True
    _analyses: dict[bool, Analysis] = field(default_factory=dict, init=False, repr=False)
    # What this App built from its settings (and so builds again when they are reloaded),
    # as opposed to what its caller gave it.
    _built: set[str] = field(default_factory=set, init=False, repr=False)
    # One lease holder for the App's life: a cycle whose lease could not be released (the
    # database went away at its end) leaves the lease to this App's next cycle, instead
    # of to no one until LEASE_TTL has passed (a daemon locked out by its own lease).
    _holder: str = field(default_factory=lease_holder, init=False, repr=False)

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
            self._built.add("channels")
        return self.channels

    def _fetcher(self) -> Fetcher:
        if self.fetcher is None:
            from pipeline.fetch import Fetcher

            self.fetcher = Fetcher(fetch_settings(self._settings()))
            self._built.add("fetcher")
        return self.fetcher

    def reload_settings(self) -> list[str]:
        """Read newsdrift.toml and the lexicons again (the daemon does on SIGHUP): the next
        cycle fetches, reads figures, compares and alerts by the new settings. Raises
        ConfigError, keeping the settings in use, when the files have an error. Returns
        the settings that changed but hold until a restart (the schedule, the pool)."""
        new = load_settings(self.config_dir)
        old = self._settings()
        self.settings = new
        self._analyses.clear()
        if "channels" in self._built:
            self.channels = None
        if "fetcher" in self._built and self.fetcher is not None:
            self.fetcher.close()
            self.fetcher = None
        self._built.clear()
        held = []
        if new.daemon.interval_minutes != old.daemon.interval_minutes:
            held.append("daemon.interval_minutes")
        if new.fetch.processes != old.fetch.processes:
            held.append("fetch.processes")
        return held

    def analysis(self, *, use_topic: bool = True) -> Analysis:
        """Built once per App: lexicons and topic are read at start-up, like the settings.

        (Rebuilding them every cycle cost ≈ 0.2 s of regex compiling per daemon cycle in
        scripts/soak.py, and made a half-edited lexicon fail every cycle.)
        """
        if use_topic not in self._analyses:
            from pipeline.run import Analysis

            self._analyses[use_topic] = Analysis.from_settings(
                self._settings(), use_topic=use_topic
            )
        return self._analyses[use_topic]

    # --- cycles ---------------------------------------------------------------------------

    def _feeds_file(self) -> tuple[Path, FeedsFile]:
        """The config's feeds.toml (the user's, else the shipped one) and what it lists."""
        path = feeds_path(self.config_dir)
        return path, load_feeds(path, self._settings().fetch.default_interval_minutes)

    def sync_config_feeds(self) -> FeedsApplied:
        """Apply the config's feeds.toml to the database (``Repo.apply_feeds_file``): the
        feeds it manages become what it lists; feeds added otherwise stay."""
        path, listed = self._feeds_file()
        with self._store().unit() as repo:
            applied = repo.apply_feeds_file(listed.outlets, listed.feeds, self.clock())
        for verb, urls in (
            ("added", applied.added),
            ("updated", applied.updated),
            ("removed (no longer listed; its articles stay)", applied.removed),
        ):
            for url in urls:
                log.info("%s: feed %s %s", path, url, verb)
        for old, new in applied.renamed:
            log.info("%s: outlet %r renamed %r (its articles with it)", path, old, new)
        return applied

    def apply_feeds_file(self) -> str | None:
        """``sync_config_feeds`` before polling (a cycle, a worker's start): a file with an
        error is logged and returned, and the feeds stored are polled as they are, none
        removed. Monitoring goes on over a typo."""
        try:
            self.sync_config_feeds()
        except ConfigError as e:
            log.error("feeds.toml not applied; polling the feeds stored: %s", e)
            return str(e)
        return None

    @contextmanager
    def leased(self) -> Iterator[tuple[Store, Callable[[], None]]]:
        """Hold the database lease for one cycle; raises LeaseHeld if another process has it.

        Yields the store and ``renew``, to be called between items: it extends the lease
        once LEASE_RENEW_AFTER has passed (raising LeaseHeld if it was lost meanwhile).
        """
        store = self._store()
        holder = self._holder
        with store.unit() as repo:
            repo.acquire_lease(CYCLE_LEASE, holder, self.clock(), LEASE_TTL)
        renewed = self.clock()

        def renew() -> None:
            nonlocal renewed
            now = self.clock()
            if now - renewed >= LEASE_RENEW_AFTER:
                with store.unit() as repo:
                    repo.acquire_lease(CYCLE_LEASE, holder, now, LEASE_TTL)
                renewed = now

        try:
            yield store, renew
            # SQLite's planner statistics, once the cycle has grown the database enough;
            # the run's work is committed, so a failure here only postpones them
            try:
                if store.refresh_statistics():
                    log.info("stage=statistics refreshed=yes")
            except SQLAlchemyError as e:
                log.warning("stage=statistics refreshed=no error=%s", e)
        finally:
            with store.unit() as repo:
                repo.release_lease(CYCLE_LEASE, holder)

    def run_once(
        self,
        *,
        rng: random.Random | None = None,
        progress: Any = None,
        stop: threading.Event | None = None,
        workers: Workers | None = None,
    ) -> RunReport:
        """One cycle under the database lease (cron mode and the daemon both call this);
        ``workers``: the daemon's threads and pool, kept between its cycles.

        A feeds.toml that cannot be read or has a bad line does not stop the cycle: it
        polls the feeds stored (none removed), and the report carries the error."""
        from pipeline.run import RunReport, run_cycle

        report = RunReport()
        with self.leased() as (store, renew):
            if self.sync_feeds and (error := self.apply_feeds_file()) is not None:
                report.feeds_file_error = error
                report.errors.append(f"feeds.toml not applied: {error}")
            return run_cycle(
                store,
                self._fetcher(),
                self.analysis(),
                self._channels(),
                clock=self.clock,
                rng=rng,
                progress=progress,
                stop=stop,
                renew=renew,
                processes=self._settings().fetch.processes or None,
                workers=workers,
                report=report,
            )

    def workers(self) -> Workers:
        """Fetch threads and a process pool as this App's settings ask for."""
        from pipeline.run import Workers

        return Workers(self._settings().fetch.processes or None)

    def ingest(
        self,
        items: Iterable[IngestItem],
        *,
        keep_all: bool = False,
        progress: Any = None,
        total: int | None = None,
    ) -> RunReport:
        """Store and analyse already-fetched articles; ``total``: the items are in
        publication order already and this many (see ``run.ingest``)."""
        from pipeline.run import RunReport, finish_analysis, ingest

        with self.leased() as (store, _renew):
            report = RunReport()
            # Recorded as a run, like a cycle: a finished run bounds the alert re-check of
            # stories analysed by an interrupted one (see stories_analysed_since_last_run).
            with store.unit() as repo:
                run_id = repo.start_run(self.clock())
            analysis = self.analysis(use_topic=not keep_all)
            with self.workers() as workers:
                ingest(
                    store,
                    items,
                    analysis,
                    self.clock,
                    report,
                    keep_all=keep_all,
                    progress=progress,
                    total=total,
                    workers=workers,
                )
                finish_analysis(
                    store, analysis, self._channels(), self.clock, report, progress, workers=workers
                )
            with store.unit() as repo:
                repo.finish_run(run_id, self.clock(), report.as_dict())
            return report

    def write_metrics(self, path: Path) -> None:
        from pipeline.metrics import prometheus_text, write_atomically

        try:
            write_atomically(path, prometheus_text(self.status()))
        except OSError as e:
            raise ConfigError(f"cannot write metrics file: {e.strerror}", path=str(path)) from e

    # --- feeds ----------------------------------------------------------------------------

    def feeds(self) -> list[FeedState]:
        """The feeds the next cycle polls: the stored ones with feeds.toml applied in a
        transaction that is rolled back, so a listing never changes what is monitored (a
        listing against a workers' database without their --config would otherwise add
        the shipped starter list). Where that cannot run (a read-only database), the feeds
        as stored. A feeds.toml with an error is a ConfigError, as it is for a cycle."""
        if self.sync_feeds:
            _path, listed = self._feeds_file()
            try:
                with self._store().unit() as repo:
                    repo.apply_feeds_file(listed.outlets, listed.feeds, self.clock())
                    feeds = repo.feeds()
                    repo.s.rollback()
                return feeds
            except StorageError as e:
                log.warning("feeds.toml not applied (%s); listing the feeds as stored", e)
        with self._store().unit() as repo:
            return repo.feeds()

    def add_feed(
        self, url: str, *, outlet: str, lang: str, interval: int | None, on_topic: bool
    ) -> bool:
        if not is_http_url(url):
            raise ConfigError(f"not an http(s) URL: {url!r}")
        feed = FeedConfig(
            url=url,
            outlet=outlet,
            lang=lang,
            interval_minutes=interval or self._settings().fetch.default_interval_minutes,
            on_topic=on_topic,
        )
        with self._store().unit() as repo:
            return repo.add_feed(feed, self.clock())

    def similar_outlets(self, name: str) -> list[str]:
        """Stored outlets a new outlet name is likely a variant of ("Heise Online" for
        "heise online"); empty when ``name`` is stored itself. An outlet under two names
        splits its history in the drift table."""
        with self._store().unit() as repo:
            names = repo.outlet_names()
        if name in names:
            return []
        same_case = [n for n in names if n.casefold() == name.casefold()]
        return same_case or difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.85)

    def remove_feed(self, url: str) -> bool:
        """Remove a feed added by `feeds add` or `feeds import`. One that feeds.toml lists
        is refused: the next cycle would add it again."""
        with self._store().unit() as repo:
            listed_as = repo.feed_config_url(url) or url
            if self.sync_feeds:
                self._refuse_if_listed(listed_as)
            return repo.remove_feed(url)

    def _refuse_if_listed(self, url: str) -> None:
        path, listed = self._feeds_file()
        if all(f.url != url for f in listed.feeds):
            return
        text = path.read_text(encoding="utf-8")
        quoted = (f'"{url}"', f"'{url}'")
        line = next(
            (n for n, ln in enumerate(text.splitlines(), 1) if any(q in ln for q in quoted)),
            None,
        )
        hint = (
            "delete it here"
            if path.parent != shipped_config_dir()
            else "this is the shipped starter list: copy it into your own config directory "
            "(--config or NEWSDRIFT_CONFIG) and delete the feed there"
        )
        raise ConfigError(
            f"feed {url} is listed here, and the next cycle would add it again; {hint}",
            path=str(path),
            line=line,
        )

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

    def stories(self, *, since: datetime | None = None, min_outlets: int = 1) -> list[StorySummary]:
        with self._store().unit() as repo:
            return repo.stories(since=since, min_outlets=min_outlets)

    def articles(
        self, *, status: str | None = None, since: datetime | None = None
    ) -> list[ArticleRecord]:
        with self._store().unit() as repo:
            return repo.articles(status=status, since=since)

    def story_figures(self, story_id: int) -> list[dict[str, Any]]:
        with self._store().unit() as repo:
            _require_story(repo, story_id)
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
        outlet: str | None = None,
        since: datetime | None = None,
        revisions: bool = False,
    ) -> list[dict[str, Any]]:
        """Drift-table rows: each observation with its group's status (or revisions)."""
        rules = drift_mod.drift_rules(self._settings())
        with self._store().unit() as repo:
            if story_id is not None:
                _require_story(repo, story_id)
            if outlet is not None and outlet not in (names := repo.outlet_names()):
                raise ConfigError(_unknown("outlet", outlet, names))
            within = None
            if diverging and not revisions and as_of is None and story_id is None:
                # Only the stories that may diverge (``drift.summarise``); a past state
                # (``as_of``) is not summarised.
                within = repo.maybe_diverging(
                    rules.tolerance_by_kind, rules.relative_tolerance, metric=metric, since=since
                )
            obs = repo.observations(
                story_id=story_id,
                metric=metric,
                as_of=as_of,
                history=revisions,
                since=since,
                within=within,
            )
        found = drift_mod.revisions(obs, rules) if revisions else drift_mod.findings(obs, rules)
        rows = []
        for f in found:
            if diverging and f.status != "diverging":
                continue
            for o in f.observations:
                if outlet is not None and o.outlet != outlet:
                    continue
                rows.append(
                    {
                        "story": f.story_id,
                        "subject": f.subject,
                        "metric": f.metric,
                        "period": f.period,
                        "outlet": o.outlet,
                        "article": o.article,
                        "version": o.version,
                        "value": o.value,
                        "low": o.low,
                        "high": o.high,
                        "unit": o.unit,
                        "qualifier": str(o.qualifier),
                        "quote": o.quote,
                        "observed_at": o.observed_at,
                        "status": f.status,
                        "kind": f.kind,
                        "first": f.first,
                        "consensus_low": f.consensus[0] if f.consensus else None,
                        "consensus_high": f.consensus[1] if f.consensus else None,
                        "spread": f.spread,
                        "note": f.note,
                    }
                )
        return rows

    def plot(self, story_id: int, metric: str | None, path: Path) -> Path:
        from pipeline.plot import plot_story

        with self._store().unit() as repo:
            title = _require_story(repo, story_id).title
            obs = repo.observations(story_id=story_id, metric=metric, history=True)
        if not obs:
            raise ConfigError(
                f"story {story_id} has no observations" + (f" of {metric}" if metric else "")
            )
        return plot_story(obs, title=title, path=path)

    def alerts(self, *, since: datetime | None = None) -> list[AlertRecord]:
        with self._store().unit() as repo:
            return repo.alerts(since=since)

    def status(self) -> dict[str, Any]:
        """Last cycle, backlogs, failing feeds and the database size, for `newsdrift status`."""
        from storage.db import current_revision, database_size

        store = self._store()
        with store.unit() as repo:
            last = repo.last_run()
            counts = repo.counts()
            leases = repo.live_leases(self.clock())
            failing = [
                {
                    "url": f.url,
                    "outlet": f.outlet,
                    "status": f.status,
                    "last_error": f.last_error,
                    "since": f.failing_since,
                }
                for f in repo.feeds()
                if f.status in ("error", "gone")
            ]
        started, finished, report = last if last else (None, None, {})
        return {
            "last_cycle_started": started,
            "last_cycle_finished": finished,
            "last_cycle_seconds": (finished - started).total_seconds()
            if started and finished
            else None,
            "last_cycle": report,
            **counts,
            "failing_feeds": failing,
            # a daemon holds "daemon" for its life, any cycle "cycle" while it runs
            "leases": {
                name: {"holder": holder, "expires_at": expires}
                for name, (holder, expires) in leases.items()
            },
            "database_bytes": database_size(store.engine),
            "schema_revision": current_revision(store.engine),
        }

    def prune(self, older_than: timedelta) -> dict[str, int]:
        """Drop the raw HTML fetched more than ``older_than`` ago, the superseded
        versions as old (never a figure a drift row refers to), and the story postings
        older than that by the story window.

        Every read of the postings is bounded by a new article's story window, so these
        serve no article published after the cut; they are a quarter of a database, more
        than half of it once the HTML is gone, and grow with every article analysed.
        Pages and postings go a day at a time, each day in its own transaction: on
        SQLite a running cycle waits for one day's worth at most, not for years of it
        (the first prune of a long-running database)."""
        before = self.clock() - older_than
        cut = before - timedelta(days=self._settings().stories.window_days)
        html = self._in_steps(Repo.oldest_page, Repo.drop_pages, before)
        with self._store().unit() as repo:
            versions = repo.prune_versions(before)
        postings = self._in_steps(Repo.oldest_posting, Repo.prune_postings, cut)
        return {"html_dropped": html, "versions_deleted": versions, "postings_deleted": postings}

    def _in_steps(
        self,
        oldest: Callable[[Repo], datetime | None],
        drop: Callable[[Repo, datetime], int],
        cut: datetime,
    ) -> int:
        """``drop`` everything before ``cut``, PRUNE_STEP of time per transaction from
        the ``oldest``; returns how much went."""
        done = 0
        while True:
            with self._store().unit() as repo:
                first = oldest(repo)
                if first is None or first >= cut:
                    return done
                done += drop(repo, min(cut, first + PRUNE_STEP))

    def test_channels(self) -> list[tuple[str, str | None]]:
        results: list[tuple[str, str | None]] = []
        for channel in self._channels():
            try:
                channel.send("newsdrift test message", "If you can read this, the channel works.")
                results.append((channel.name, None))
            except (NotifyError, ConfigError) as e:
                results.append((channel.name, str(e)))
        return results


def check_config(config_dir: Path | None) -> tuple[list[str], list[str]]:
    """What ``newsdrift config check`` reports: (what was read, what is wrong), without a
    database or the network. newsdrift.toml first (the rest depends on it); then
    feeds.toml, the figure lexicons and the topic filter, and each alert channel: its
    ``${ENV}`` variables set and its URL one apprise understands (nothing is sent)."""
    import apprise

    from pipeline.figures import load_lexicons
    from pipeline.notify import expand_env
    from pipeline.topic import load_topic

    read: list[str] = []
    errors: list[str] = []
    try:
        settings = load_settings(config_dir)
    except ConfigError as e:
        return read, [str(e)]
    own = settings.config_dir / "newsdrift.toml"
    shipped = settings.config_dir == shipped_config_dir() or not own.is_file()
    read.append(f"settings: {'the shipped defaults' if shipped else f'{own} over the defaults'}")
    path = feeds_path(config_dir)
    try:
        listed = load_feeds(path, settings.fetch.default_interval_minutes)
        read.append(f"feeds: {path}: {len(listed.outlets)} outlets, {len(listed.feeds)} feeds")
    except ConfigError as e:
        errors.append(str(e))
    user = settings.config_dir
    for what, load in (
        ("figure lexicons", lambda: ", ".join(sorted(load_lexicons(own_folder(user, "lexicons"))))),
        ("topic filter", lambda: load_topic(own_folder(user, "topic")).name),
    ):
        try:
            read.append(f"{what}: {load()}")
        except ConfigError as e:
            errors.append(str(e))
    for channel in settings.alerts.channels:
        try:
            url = expand_env(channel.url, f"alerts channel {channel.name!r}")
        except ConfigError as e:
            errors.append(str(e))
            continue
        if not apprise.Apprise().add(url):
            errors.append(f"alerts channel {channel.name!r}: apprise does not understand its URL")
        else:
            read.append(f"alerts channel {channel.name!r}: {url.split(':', 1)[0]}")
    return read, errors


def _unknown(what: str, name: str, known: Sequence[str] | set[str]) -> str:
    """``no outlet named 'x'``, with the closest known names when there are any."""
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"no {what} named {name!r}{hint}"


def _require_story(repo: Repo, story_id: int) -> StorySummary:
    """The story ``story_id``, or a ConfigError saying it does not exist or where it went."""
    found = repo.stories(story_id)
    if found:
        return found[0]
    live = repo.live_story(story_id)
    if live != story_id:
        raise ConfigError(f"story {story_id} was merged into story {live}")
    raise ConfigError(f"no story with id {story_id}")
