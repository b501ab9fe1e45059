"""The drift summary (migration 0009): ``drift --diverging`` reads only the stories that
may diverge, and answers exactly as reading every story would, on both backends.

``drift.summarise`` keeps per bucket the widest relative gap between two outlets; a
bucket within a tolerance has no diverging part. The cycle keeps the summaries of the
stories it touches, ``summarise_stale`` the rest; a story changed since its summary was
made (``stories.drift_epoch``) is read whole until then.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from pipeline.app import App
from pipeline.drift import DriftRules, findings, summarise
from pipeline.models import Figure, Observation, Qualifier
from pipeline.run import summarise_stale
from pipeline.settings import load_settings
from storage.repository import Repo, Store
from tests.pg import DbFactory

T = datetime(2026, 3, 2, 9, tzinfo=UTC)
OUTLETS = ("a.example", "b.example", "c.example", "d.example")


# --- the bound, pure -------------------------------------------------------------------------


def _obs(outlet: str, value: float, spread: float, at: int, subject: str, n: int) -> Observation:
    return Observation(
        story_id=1,
        subject=subject or None,
        metric="deal_value",
        period=None,
        outlet=outlet,
        article=f"{outlet}/{n}",
        article_url=f"https://{outlet}/{n}",
        value=value,
        low=value * (1 - spread),
        high=value * (1 + spread),
        unit="USD",
        qualifier=Qualifier.APPROX if spread else Qualifier.EXACT,
        quote=f"{value}",
        observed_at=T + timedelta(hours=at),
    )


observations = st.lists(
    st.builds(
        _obs,
        outlet=st.sampled_from(OUTLETS),
        value=st.sampled_from([100.0, 100.5, 101.0, 103.0, 110.0, 0.0]),
        spread=st.sampled_from([0.0, 0.01, 0.05]),
        at=st.integers(0, 48),
        subject=st.sampled_from(["", "Acme", "Acme → Beta", "Gamma"]),
        n=st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda o: o.article,
)


@settings(max_examples=300, deadline=None)
@given(
    obs=observations,
    tolerance=st.sampled_from([0.0, 0.004, 0.01, 0.03, 0.2]),
    since=st.integers(0, 48),
    outlets=st.sets(st.sampled_from(OUTLETS), min_size=1),
)
def test_a_bucket_within_the_tolerance_has_no_diverging_part(
    obs: list[Observation], tolerance: float, since: int, outlets: set[str]
) -> None:
    """Whole, a bucket diverges exactly when its widest gap exceeds the tolerance; any
    part of it (a time window, some outlets' articles) diverges only if the whole may."""
    rules = DriftRules(relative_tolerance=tolerance)
    (summary,) = summarise(obs)
    assert summary.max_ratio is not None and summary.observations == len(obs)
    assert summary.last_observed_at == max(o.observed_at for o in obs)
    whole = any(f.status == "diverging" for f in findings(obs, rules))
    assert whole == (summary.max_ratio > tolerance)
    part = [o for o in obs if o.observed_at >= T + timedelta(hours=since) and o.outlet in outlets]
    if any(f.status == "diverging" for f in findings(part, rules)):
        assert summary.max_ratio > tolerance


def test_money_in_two_currencies_has_no_bound() -> None:
    """Only the rate table compares EUR with USD: such a bucket is always read."""
    usd = _obs("a.example", 100.0, 0.0, 0, "Acme", 1)
    eur = _obs("b.example", 100.0, 0.0, 0, "Acme", 2)
    eur = Observation(**{**eur.__dict__, "unit": "EUR"})
    (summary,) = summarise([usd, eur])
    assert summary.kind == "money" and summary.max_ratio is None


# --- in the database, both backends ----------------------------------------------------------


def report(
    repo: Repo,
    story: int | None,
    outlet: str,
    value: float,
    at: datetime,
    *,
    metric: str = "deal_value",
    unit: str = "USD",
    n: int,
) -> int:
    """One article of ``outlet`` giving one figure, attached to ``story`` (a new story
    when None) as analysis does; returns the story."""
    article, _ = repo.add_article(
        key=f"https://{outlet}/{n}",
        url=f"https://{outlet}/{n}",
        outlet=outlet,
        lang="en",
        published=at,
        title=f"{n}",
        now=at,
    )
    version = repo.add_version(
        article, title=f"{n}", text=f"{value}", method="test", fetched_at=at, content_hash=f"{n}"
    )
    assert version is not None
    story = story if story is not None else repo.create_story(f"{n}", at)
    repo.attach(article, story, level="new", score=1.0, fingerprint={}, keys=[], published=at)
    figure = Figure(
        value=value,
        unit=unit,
        qualifier=Qualifier.EXACT,
        low=value,
        high=value,
        metric=metric,
        subject="Acme",
        period=None,
        quote=f"{value}",
        start=0,
        end=5,
    )
    repo.save_figures(version, [figure])
    repo.mark_processed(version, at)
    return story


def fill(url: str, stories: int = 40, seed: int = 3) -> None:
    """Stories of 2 to 4 outlets over four days, a third with one outlet 1 to 20 % off,
    some with a stake too; ids and values from ``seed``."""
    rng = random.Random(seed)
    store = Store.open(url)
    n = 0
    with store.unit() as repo:
        for _ in range(stories):
            first = T + timedelta(hours=rng.randrange(96))
            off = rng.random() < 0.33
            truth = rng.uniform(1e8, 1e10)
            story = None
            for i, outlet in enumerate(rng.sample(OUTLETS, rng.randint(2, 4))):
                n += 1
                value = truth * (1 + rng.choice([0.01, 0.05, 0.2])) if off and i == 1 else truth
                at = first + timedelta(hours=rng.randrange(30))
                story = report(repo, story, outlet, value, at, n=n)
                if rng.random() < 0.3:
                    n += 1
                    stake = 10.0 + (i if off else 0)
                    report(repo, story, outlet, stake, at, metric="stake", unit="percent", n=n)
    store.close()


def shown(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((r["story"], r["metric"], r["outlet"], r["article"], r["value"]) for r in rows)


def read_whole(app: App, **query: Any) -> list[tuple[Any, ...]]:
    """What ``drift --diverging`` shows when every story is read (the query before 0009)."""
    from pipeline.drift import drift_rules

    rules = drift_rules(app._settings())
    store = app._store()
    with store.unit() as repo:
        obs = repo.observations(metric=query.get("metric"), since=query.get("since"))
    return sorted(
        (f.story_id, f.metric, o.outlet, o.article, o.value)
        for f in findings(obs, rules)
        if f.status == "diverging"
        for o in f.observations
    )


QUERIES = [
    {},
    {"since": T + timedelta(days=2)},
    {"since": T + timedelta(days=3), "metric": "stake"},
    {"metric": "deal_value"},
    {"since": T + timedelta(days=9)},
]


@pytest.fixture
def summarised(new_db: DbFactory) -> Iterator[App]:
    url = new_db()
    fill(url)
    app = App(db_url=url, channels=[], sync_feeds=False)
    store = app._store()
    assert summarise_stale(store) == 40
    yield app
    store.close()


@pytest.mark.parametrize("tolerance", [0.0, 0.01, 0.03, 0.5])
def test_the_diverging_query_answers_as_reading_every_story(
    summarised: App, tolerance: float
) -> None:
    """Summaries made under one tolerance serve any other: they hold none."""
    app = summarised
    base = load_settings(None)
    drift = replace(base.drift, relative_tolerance=tolerance, tolerance={"percent": tolerance * 2})
    app.settings = replace(base, drift=drift)
    answers = 0
    for query in QUERIES:
        expected = read_whole(app, **query)
        assert shown(app.drift_rows(diverging=True, **query)) == expected, query
        answers += bool(expected)
    assert answers >= (2 if tolerance < 0.5 else 0)


def test_the_query_reads_only_what_the_summary_lets_through(summarised: App) -> None:
    """A diverging story whose summary (fresh, but doctored here) says its widest gap is
    0 is not read: the summary, not a full read, decides which stories are read."""
    app = summarised
    before = shown(app.drift_rows(diverging=True))
    story = before[0][0]
    store = app._store()
    with store.unit() as repo:
        repo.s.execute(
            text("UPDATE drift_summary SET max_ratio = 0 WHERE story_id = :s"), {"s": story}
        )
    after = shown(app.drift_rows(diverging=True))
    assert after == [r for r in before if r[0] != story]


def test_a_story_changed_since_its_summary_is_read_whole(summarised: App) -> None:
    """An article attached after the summary was made (a run killed before it queued
    the story's alerts) is shown at once: the story's epoch moved past its summary's."""
    app = summarised
    store = app._store()
    with store.unit() as repo:
        consistent = next(
            s
            for s in range(1, 41)
            if s not in {r[0] for r in shown(app.drift_rows(diverging=True))}
            and repo.observations(story_id=s, metric="deal_value")
        )
        value = repo.observations(story_id=consistent, metric="deal_value")[0].value
        report(repo, consistent, "e.example", value * 1.5, T + timedelta(days=5), n=9999)
        assert repo.count_stale_drift_stories() == 1
    assert consistent in {r[0] for r in shown(app.drift_rows(diverging=True))}
    assert shown(app.drift_rows(diverging=True)) == read_whole(app)
    assert summarise_stale(store) == 1
    with store.unit() as repo:
        assert repo.count_stale_drift_stories() == 0
    assert consistent in {r[0] for r in shown(app.drift_rows(diverging=True))}


def test_a_summary_of_an_older_epoch_is_not_saved(summarised: App) -> None:
    """Made from observations read before an article was attached, a summary would
    hide that article: ``save_drift_summary`` refuses it and the story stays stale."""
    store = summarised._store()
    with store.unit() as repo:
        epoch = repo.drift_epoch(1)
        obs = repo.observations(story_id=1, history=True)
        report(repo, 1, "e.example", 1.0, T, n=9998)  # another worker, in effect
        assert not repo.save_drift_summary(1, epoch, summarise(obs))
        assert repo.count_stale_drift_stories() == 1
        assert repo.save_drift_summary(1, epoch + 1, summarise(obs))
        assert repo.count_stale_drift_stories() == 0


def test_a_merge_moves_the_summary(summarised: App) -> None:
    """Merged, both stories are out of date; summarised again, the merged-away story has
    no summary rows and the live one answers for both."""
    app = summarised
    store = app._store()
    with store.unit() as repo:
        repo.merge_stories(2, 1, None, T)  # type: ignore[arg-type]
        assert repo.count_stale_drift_stories() == 2
    assert shown(app.drift_rows(diverging=True)) == read_whole(app)
    assert summarise_stale(store) == 2
    with store.unit() as repo:
        left = repo.s.execute(text("SELECT count(*) FROM drift_summary WHERE story_id = 2"))
        assert left.scalar_one() == 0
    assert shown(app.drift_rows(diverging=True)) == read_whole(app)


def test_the_cycle_keeps_the_summaries(new_db: DbFactory) -> None:
    """Stories analysed by a cycle (``ingest`` here) are summarised by it: none is left
    for a drift query to read whole."""
    from tests.test_stories import EN, WIRE, text_items

    url = new_db()
    app = App(db_url=url, channels=[], sync_feeds=False)
    app.ingest(
        text_items([("de", WIRE), ("en", EN)], lambda i: T + timedelta(hours=i)), keep_all=True
    )
    store = app._store()
    with store.unit() as repo:
        assert repo.count_stale_drift_stories() == 0
        rows = repo.s.execute(text("SELECT count(*) FROM drift_summary")).scalar_one()
    assert rows > 0
    store.close()


def test_a_database_from_before_0009_is_caught_up(new_db: DbFactory) -> None:
    """Upgraded, every story is out of date and read whole, so the answer is the same
    before the cycle has summarised them, and after."""
    from alembic import command

    from storage.db import alembic_config

    url = new_db()
    fill(url, stories=30, seed=5)
    app = App(db_url=url, channels=[], sync_feeds=False)
    expected = read_whole(app)
    assert expected
    store = app._store()
    with store.engine.begin() as conn:
        cfg = alembic_config(store.engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008")
    store.close()
    app = App(db_url=url, channels=[], sync_feeds=False)  # migrates
    store = app._store()
    assert app.status()["stories_unsummarised"] == 30  # status, and Prometheus, show it
    assert shown(app.drift_rows(diverging=True)) == expected
    assert summarise_stale(store, limit=20) == 20
    assert shown(app.drift_rows(diverging=True)) == expected
    assert summarise_stale(store) == 10
    assert summarise_stale(store) == 0
    assert app.status()["stories_unsummarised"] == 0
    assert shown(app.drift_rows(diverging=True)) == expected
    store.close()
