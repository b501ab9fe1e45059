"""One cycle: wires the stages together and decides nothing itself.

Each feed and each article is handled in its own transaction: an expected
failure (``FetchError``, ``ParseError``) becomes a line in the report and a
health field on the feed, and the cycle goes on. Running a cycle twice, or
after a crash, loses and duplicates nothing: every write is keyed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline import stories
from pipeline.alerts import AlertRules, plan_alerts
from pipeline.drift import DriftRules, findings
from pipeline.errors import FetchError, NewsdriftError, ParseError
from pipeline.extract import decode_html, extract_article
from pipeline.feeds import normalize_url, parse_feed
from pipeline.fetch import Fetcher, FetchResult
from pipeline.figures import FigureLexicon, extract_figures, load_lexicons
from pipeline.models import Document, FeedEntry, FeedState, IngestItem, StoredArticle
from pipeline.notify import Channel, NotifyError
from pipeline.polling import next_poll
from pipeline.settings import Settings
from pipeline.topic import Topic, TopicDecision, decide_entry, decide_text, load_topic
from storage.repository import Repo, Store, text_hash

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# A permanent redirect moves the stored feed URL after this many consistent sightings.
REDIRECT_CONFIRMATIONS = 3
# Delivery retries: first retry after this, doubling, given up after MAX_ATTEMPTS.
DELIVERY_RETRY = timedelta(minutes=2)
DELIVERY_MAX_ATTEMPTS = 8


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunReport:
    """What one cycle did; expected failures are listed here, not raised."""

    feeds_polled: int = 0
    feeds_not_modified: int = 0
    feeds_failed: int = 0
    articles_new: int = 0
    articles_skipped: int = 0
    articles_partial: int = 0
    articles_failed: int = 0
    versions_processed: int = 0
    stories_touched: int = 0
    alerts_new: int = 0
    deliveries_sent: int = 0
    deliveries_failed: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"feeds={self.feeds_polled} not_modified={self.feeds_not_modified} "
            f"failed={self.feeds_failed} articles_new={self.articles_new} "
            f"skipped={self.articles_skipped} partial={self.articles_partial} "
            f"article_errors={self.articles_failed} analysed={self.versions_processed} "
            f"stories={self.stories_touched} alerts_new={self.alerts_new} "
            f"sent={self.deliveries_sent} delivery_errors={self.deliveries_failed}"
        )


@dataclass(frozen=True)
class Analysis:
    """The analysis stages' configuration, built once per process."""

    lexicons: dict[str, FigureLexicon]
    topic: Topic | None
    drift: DriftRules
    alerts: AlertRules
    window: timedelta
    max_articles_per_feed: int = 50

    @classmethod
    def from_settings(cls, settings: Settings, *, use_topic: bool = True) -> Analysis:
        # A user config dir overrides a shipped data folder only where it has one.
        user: Path = settings.config_dir
        lexicon_dir = user if (user / "lexicons").is_dir() else None
        topic_dir = user if (user / "topic").is_dir() else None
        return cls(
            lexicons=dict(load_lexicons(lexicon_dir)),
            topic=load_topic(topic_dir) if use_topic else None,
            drift=DriftRules(
                relative_tolerance=settings.drift.relative_tolerance,
                metrics=settings.drift.metrics,
            ),
            alerts=AlertRules(min_outlets=settings.alerts.min_outlets),
            window=timedelta(days=settings.stories.window_days),
            max_articles_per_feed=settings.fetch.max_articles_per_feed,
        )


# --- polling feeds ------------------------------------------------------------------------------


def _keep_status(decision: TopicDecision | None) -> str:
    return "skipped" if decision is not None and decision.keep is False else "kept"


def _topic_fields(d: TopicDecision | None) -> tuple[float | None, tuple[str, ...], str | None]:
    return (d.score, d.terms, d.stage) if d is not None else (None, (), None)


def poll_feed(
    store: Store,
    fetcher: Fetcher,
    feed: FeedState,
    analysis: Analysis,
    clock: Clock,
    rng: random.Random,
    report: RunReport,
) -> None:
    """Fetch one feed, store its new articles; failures land on the feed's health."""
    now = clock()
    report.feeds_polled += 1
    try:
        result = fetcher.fetch(
            feed.url, etag=feed.etag, last_modified=feed.last_modified, kind="feed"
        )
        parsed = (
            None if result.not_modified else parse_feed(result.content, result.url, result.headers)
        )
    except (FetchError, ParseError) as e:
        kind = getattr(e, "kind", "hard") if isinstance(e, FetchError) else "hard"
        with store.unit() as repo:
            failures = repo.feed_failures(feed.id)
            due = next_poll(
                now=now,
                interval_minutes=feed.interval_minutes,
                outcome=kind,
                consecutive_failures=failures + 1,
                cache_control=None,
                expires=None,
                date_header=None,
                ttl_minutes=None,
                retry_after=getattr(e, "retry_after", None),
                rng=rng,
            )
            status = "gone" if kind == "gone" else "error"
            repo.record_feed_error(feed.id, now=now, next_due=due, status=status, message=str(e))
        report.feeds_failed += 1
        report.errors.append(f"feed {feed.url}: {e}")
        log.warning(
            "stage=feed outlet=%s url=%s status=%s error=%s", feed.outlet, feed.url, kind, e
        )
        return

    due = next_poll(
        now=now,
        interval_minutes=feed.interval_minutes,
        outcome="not_modified" if result.not_modified else "ok",
        consecutive_failures=0,
        cache_control=result.headers.get("cache-control"),
        expires=result.headers.get("expires"),
        date_header=result.headers.get("date"),
        ttl_minutes=parsed.ttl_minutes if parsed else None,
        retry_after=None,
        rng=rng,
    )
    with store.unit() as repo:
        repo.record_feed_ok(
            feed.id,
            now=now,
            next_due=due,
            etag=result.headers.get("etag"),
            last_modified=result.headers.get("last-modified"),
        )
        permanent = [url for status, url in result.redirects if status in (301, 308)]
        if result.redirects and len(permanent) == len(result.redirects):
            if repo.record_redirect(feed.id, permanent[-1], REDIRECT_CONFIRMATIONS):
                log.info("stage=feed url=%s moved_to=%s", feed.url, permanent[-1])
        else:
            repo.record_redirect(feed.id, None, REDIRECT_CONFIRMATIONS)
    if result.not_modified or parsed is None:
        report.feeds_not_modified += 1
        log.info("stage=feed outlet=%s url=%s status=304", feed.outlet, feed.url)
        return
    log.info(
        "stage=feed outlet=%s url=%s status=%d entries=%d",
        feed.outlet,
        feed.url,
        result.status,
        len(parsed.entries),
    )
    with store.unit() as repo:
        extra = repo.feed_extra_terms(feed.id)
    for entry in parsed.entries[: analysis.max_articles_per_feed]:
        take_entry(store, fetcher, feed, entry, extra, analysis, clock, report)


def take_entry(
    store: Store,
    fetcher: Fetcher,
    feed: FeedState,
    entry: FeedEntry,
    extra_terms: Sequence[str],
    analysis: Analysis,
    clock: Clock,
    report: RunReport,
) -> None:
    """Fetch and store one feed entry unless it is known or clearly off topic."""
    url = normalize_url(entry.url)
    with store.unit() as repo:
        if repo.find_article(keys=[url, entry.url], guid=entry.guid, outlet=feed.outlet):
            return
    now = clock()
    decision: TopicDecision | None = None
    if analysis.topic is not None and not feed.on_topic:
        decision = decide_entry(analysis.topic, entry.title, entry.summary, feed.lang, extra_terms)
        if decision.keep is False:
            with store.unit() as repo:
                repo.add_article(
                    key=url,
                    url=url,
                    guid=entry.guid,
                    outlet=feed.outlet,
                    lang=feed.lang,
                    published=entry.published,
                    title=entry.title,
                    summary=entry.summary,
                    now=now,
                    feed_id=feed.id,
                    status="skipped",
                    topic=_topic_fields(decision),
                )
            report.articles_skipped += 1
            log.info("stage=topic outlet=%s url=%s status=skipped", feed.outlet, url)
            return
    try:
        page: FetchResult = fetcher.fetch(entry.url, kind="article")
        html, _how = decode_html(page.content, page.headers)
        extracted = extract_article(html, page.url)
    except (FetchError, ParseError) as e:
        if not entry.summary.strip():
            report.articles_failed += 1
            report.errors.append(f"article {entry.url}: {e}")
            log.warning("stage=article outlet=%s url=%s error=%s", feed.outlet, entry.url, e)
            return
        # Keep what the feed itself says; the article is partial.
        with store.unit() as repo:
            aid, created = repo.add_article(
                key=url,
                url=url,
                guid=entry.guid,
                outlet=feed.outlet,
                lang=feed.lang,
                published=entry.published,
                title=entry.title,
                summary=entry.summary,
                now=now,
                feed_id=feed.id,
                status="partial",
            )
            if created:
                repo.add_version(
                    aid,
                    title=entry.title,
                    text=entry.summary,
                    method="feed-summary",
                    fetched_at=now,
                )
        report.articles_partial += 1
        log.warning("stage=article outlet=%s url=%s status=partial error=%s", feed.outlet, url, e)
        return

    canonical = normalize_url(extracted.canonical_url or page.url)
    lang = extracted.lang if extracted.lang in ("de", "en") else feed.lang
    if analysis.topic is not None and not feed.on_topic:
        decision = decide_text(
            analysis.topic, extracted.title or entry.title, extracted.text, lang, extra_terms
        )
    with store.unit() as repo:
        if repo.find_article(keys=[canonical]) or repo.find_by_content(
            feed.outlet, text_hash(extracted.text)
        ):
            return  # the same article under another URL or GUID
        aid, created = repo.add_article(
            key=canonical,
            url=canonical,
            guid=entry.guid,
            outlet=feed.outlet,
            lang=lang,
            published=extracted.published or entry.published,
            title=extracted.title or entry.title,
            summary=entry.summary,
            now=now,
            feed_id=feed.id,
            status=_keep_status(decision),
            topic=_topic_fields(decision),
        )
        if created:
            repo.add_version(
                aid,
                title=extracted.title or entry.title,
                text=extracted.text,
                method=extracted.method,
                fetched_at=now,
                html=html,
            )
    if _keep_status(decision) == "skipped":
        report.articles_skipped += 1
    else:
        report.articles_new += 1
    log.info(
        "stage=article outlet=%s url=%s status=%s", feed.outlet, canonical, _keep_status(decision)
    )


# --- ingesting already-fetched articles ---------------------------------------------------------


def ingest(
    store: Store,
    items: Iterable[IngestItem],
    analysis: Analysis,
    clock: Clock,
    report: RunReport,
    *,
    keep_all: bool = False,
) -> None:
    """Store already-fetched articles (in ``published`` order); analysis follows."""
    for item in sorted(items, key=lambda i: i.published):
        now = clock()
        if item.html is not None and item.text is None:
            try:
                extracted = extract_article(item.html, item.url)
            except ParseError as e:
                report.articles_failed += 1
                report.errors.append(f"article {item.id or item.url}: {e}")
                continue
            text, title, method = extracted.text, item.title or extracted.title, extracted.method
        else:
            text, title, method = item.text or "", item.title, "given-text"
        decision = None
        if analysis.topic is not None and not keep_all:
            decision = decide_text(analysis.topic, title, text, item.lang)
        with store.unit() as repo:
            aid, created = repo.add_article(
                key=item.id or item.url,
                url=item.url,
                outlet=item.outlet,
                lang=item.lang,
                published=item.published,
                title=title,
                now=now,
                status=_keep_status(decision),
                topic=_topic_fields(decision),
            )
            version = repo.add_version(
                aid, title=title, text=text, method=method, fetched_at=now, html=item.html
            )
        if _keep_status(decision) == "skipped":
            report.articles_skipped += 1
        elif created or version is not None:
            report.articles_new += 1


# --- analysis: figures, stories, drift, alerts --------------------------------------------------


def analyse_version(repo: Repo, article: StoredArticle, analysis: Analysis, now: datetime) -> int:
    """Figures and story assignment of one stored version; returns its story id."""
    published = article.published or now
    figures = extract_figures(article.text, article.lang, published, analysis.lexicons)
    doc = Document(
        title=article.title,
        text=article.text,
        lang=article.lang,
        published=published,
        outlet=article.outlet,
        url=article.url,
    )
    fp = stories.fingerprint(doc, figures)
    keys = stories.blocking_keys(fp)
    if article.story_id is not None:
        story_id = repo.live_story(
            article.story_id
        )  # a new version keeps its story: ids are stable
        level, score = "kept", 1.0
    else:
        raw = repo.candidates(keys, published - analysis.window, exclude=article.id)
        candidates = [
            stories.Candidate(
                article_id=aid, story_id=sid, fingerprint=stories.Fingerprint.from_json(fj)
            )
            for aid, sid, fj in raw
            if fj
        ]
        decision = stories.assign(fp, candidates)
        if decision.story_id is None:
            story_id = repo.create_story(article.title, published)
        else:
            story_id = repo.live_story(decision.story_id)
            for other in decision.merge:
                repo.merge_stories(repo.live_story(other), story_id, article.id, now)
        level, score = decision.level, decision.score
    repo.attach(
        article.id,
        story_id,
        level=level,
        score=score,
        fingerprint=fp.to_json(),
        keys=keys,
        published=published,
    )
    repo.save_figures(article.version_id, figures)
    repo.mark_processed(article.version_id, now)
    log.info(
        "stage=analyse outlet=%s article=%s story=%d level=%s figures=%d",
        article.outlet,
        article.key,
        story_id,
        level,
        len(figures),
    )
    return story_id


def analyse_pending(store: Store, analysis: Analysis, clock: Clock, report: RunReport) -> set[int]:
    """Analyse every stored version not analysed yet, oldest first, one transaction each."""
    touched: set[int] = set()
    with store.unit() as repo:
        pending = repo.pending_versions()
    for article in pending:
        with store.unit() as repo:
            touched.add(analyse_version(repo, article, analysis, clock()))
        report.versions_processed += 1
    return touched


def update_alerts(
    store: Store,
    story_ids: Iterable[int],
    analysis: Analysis,
    channels: Sequence[str],
    clock: Clock,
    report: RunReport,
) -> None:
    """Recompute the findings of the touched stories and queue new alerts (outbox)."""
    for story_id in sorted(set(story_ids)):
        with store.unit() as repo:
            live = repo.live_story(story_id)
            obs = repo.observations(story_id=live)
            titles = {s.id: s.title for s in repo.stories(live)}
            for alert in plan_alerts(
                findings(obs, analysis.drift), analysis.alerts, titles, clock()
            ):
                if repo.add_alert(alert, channels):
                    report.alerts_new += 1
                    log.info("stage=alert story=%d key=%s status=queued", live, alert.key)
    report.stories_touched += len(set(story_ids))


def deliver(store: Store, channels: Sequence[Channel], clock: Clock, report: RunReport) -> None:
    """Send pending deliveries; a failing channel is retried later and blocks no other."""
    by_name = {c.name: c for c in channels}
    with store.unit() as repo:
        pending = repo.pending_deliveries(clock())
    for d in pending:
        channel = by_name.get(d.channel)
        now = clock()
        with store.unit() as repo:
            if channel is None:
                repo.record_delivery(
                    d.id, ok=False, now=now, error=f"channel {d.channel!r} is not configured"
                )
                report.deliveries_failed += 1
                continue
            try:
                channel.send(d.title, d.body)
            except NotifyError as e:
                retry = None
                if d.attempts + 1 < DELIVERY_MAX_ATTEMPTS:
                    retry = now + DELIVERY_RETRY * (2**d.attempts)
                repo.record_delivery(d.id, ok=False, now=now, error=str(e), retry_at=retry)
                report.deliveries_failed += 1
                log.warning("stage=notify channel=%s alert=%d error=%s", d.channel, d.alert_id, e)
                continue
            repo.record_delivery(d.id, ok=True, now=now)
            report.deliveries_sent += 1


# --- the cycle ----------------------------------------------------------------------------------


def run_cycle(
    store: Store,
    fetcher: Fetcher,
    analysis: Analysis,
    channels: Sequence[Channel],
    *,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
) -> RunReport:
    """Poll the due feeds, analyse what is new, queue and send alerts."""
    report = RunReport()
    rng = rng or random.Random()
    with store.unit() as repo:
        run_id = repo.start_run(clock())
        due = repo.feeds(due_at=clock())
    for feed in due:
        poll_feed(store, fetcher, feed, analysis, clock, rng, report)
    finish_analysis(store, analysis, channels, clock, report)
    with store.unit() as repo:
        repo.finish_run(run_id, clock(), report.as_dict())
    log.info("stage=cycle %s", report.summary())
    return report


def finish_analysis(
    store: Store, analysis: Analysis, channels: Sequence[Channel], clock: Clock, report: RunReport
) -> None:
    """Everything after storing articles: analysis, drift, outbox, delivery."""
    touched = analyse_pending(store, analysis, clock, report)
    update_alerts(store, touched, analysis, [c.name for c in channels], clock, report)
    deliver(store, channels, clock, report)


__all__ = [
    "Analysis",
    "IngestItem",
    "NewsdriftError",
    "RunReport",
    "deliver",
    "finish_analysis",
    "ingest",
    "run_cycle",
]
