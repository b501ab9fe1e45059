"""Load and validate configuration. Read at the entry points only.

Errors name the file, the line and the key: ``feeds.toml:12: outlet[3].lang:
expected one of de, en, got 'xx'``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.alerts import ALERT_KINDS, QuietHours
from pipeline.errors import ConfigError
from pipeline.models import METRICS, FeedConfig, Outlet, is_http_url
from pipeline.paths import shipped_config_dir

LANGS = ("de", "en")


@dataclass(frozen=True)
class FetchConfig:
    user_agent: str = "newsdrift/0.1"
    contact_url: str = ""
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 20.0
    total_timeout_s: float = 60.0
    max_bytes: int = 10_000_000
    max_redirects: int = 5
    allow_private: bool = False
    per_domain_concurrency: int = 2
    per_domain_min_gap_s: float = 2.0
    obey_robots: bool = True
    default_interval_minutes: int = 30
    max_articles_per_feed: int = 50
    # Processes that extract pages and prepare analysis; 0: one per core, 1: in-process.
    processes: int = 0
    # Re-fetch each article this many minutes after publication, to catch edits.
    refetch_ladder_minutes: tuple[int, ...] = (15, 60, 180, 1440, 4320)

    @property
    def full_user_agent(self) -> str:
        return f"{self.user_agent} (+{self.contact_url})" if self.contact_url else self.user_agent


@dataclass(frozen=True)
class StoriesConfig:
    window_days: float = 4.0


@dataclass(frozen=True)
class DriftConfig:
    relative_tolerance: float = 0.01
    metrics: tuple[str, ...] = tuple(m for m in METRICS if m != "age")
    tolerance: Mapping[str, float] = field(default_factory=dict)  # per unit kind
    rates: Mapping[str, float] = field(default_factory=dict)
    rates_base: str = "USD"
    rates_date: str = ""


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    url: str
    kinds: tuple[str, ...] = ALERT_KINDS


@dataclass(frozen=True)
class AlertsConfig:
    min_outlets: int = 2
    log_file: str = ""
    console: bool = True
    channels: tuple[ChannelConfig, ...] = ()
    metrics: tuple[str, ...] | None = None
    cooldown_hours: float = 24.0
    revisions: bool = True
    feed_broken_after_hours: float = 24.0
    quiet_hours: str = ""  # "22:00-07:00", local time of `timezone`
    timezone: str = "UTC"
    digest: str = "off"  # off | hourly | daily

    @property
    def quiet(self) -> QuietHours | None:
        if not self.quiet_hours:
            return None
        start, end = (time.fromisoformat(p.strip()) for p in self.quiet_hours.split("-"))
        return QuietHours(start, end, ZoneInfo(self.timezone))

    @property
    def digest_period(self) -> timedelta | None:
        return {"off": None, "hourly": timedelta(hours=1), "daily": timedelta(days=1)}[self.digest]


@dataclass(frozen=True)
class DaemonConfig:
    interval_minutes: float = 15.0


@dataclass(frozen=True)
class Settings:
    config_dir: Path
    fetch: FetchConfig = field(default_factory=FetchConfig)
    stories: StoriesConfig = field(default_factory=StoriesConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)


@dataclass(frozen=True)
class FeedsFile:
    outlets: tuple[Outlet, ...]
    feeds: tuple[FeedConfig, ...]


# --- locating keys in the source text, for messages -------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")


def _line_of(text: str, table: str, key: str | None = None, index: int | None = None) -> int | None:
    """The 1-based line of ``key`` in ``[table]`` (or the ``index``-th ``[[table]]``)."""
    current: str | None = None
    seen = -1
    for number, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            current = m.group(2)
            if current == table and m.group(1) == "[[":
                seen += 1
            if current == table and key is None and (index is None or seen == index):
                return number
            continue
        if current != table or (index is not None and seen != index):
            continue
        if key is not None and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return None


class _Reader:
    """Typed access to one TOML table with located errors."""

    def __init__(self, path: Path, text: str, data: dict[str, Any], table: str, index: int | None):
        self.path, self.text, self.data, self.table, self.index = path, text, data, table, index

    def where(self, key: str | None = None) -> str:
        return f"{self.table}[{self.index}]" if self.index is not None else self.table

    def fail(self, key: str | None, message: str) -> ConfigError:
        line = _line_of(self.text, self.table, key, self.index) or _line_of(
            self.text, self.table, None, self.index
        )
        label = f"{self.where()}.{key}" if key else self.where()
        return ConfigError(f"{label}: {message}", path=str(self.path), line=line)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        # bool is an int in Python; keep them apart.
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.fail(key, f"expected a number, got {value!r}")
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise self.fail(key, f"must be greater than 0, got {value!r}")
        return value

    def unknown_keys(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.fail(key, f"unknown key (known: {', '.join(sorted(allowed))})")


def _parse(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=str(path)) from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e}", path=str(path)) from e
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = getattr(e, "lineno", None) or (int(m.group(1)) if m else None)
        raise ConfigError(f"invalid TOML: {e}", path=str(path), line=line) from e


def _table(path: Path, text: str, data: dict[str, Any], name: str) -> _Reader:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{name}: expected a table", path=str(path), line=_line_of(text, name))
    return _Reader(path, text, section, name, None)


def _fields(cls: type) -> set[str]:
    return set(cls.__dataclass_fields__)  # type: ignore[attr-defined]


def _read_fetch(r: _Reader) -> FetchConfig:
    r.unknown_keys(_fields(FetchConfig))
    d = FetchConfig()
    return FetchConfig(
        user_agent=r.get("user_agent", str, d.user_agent),
        contact_url=r.get("contact_url", str, d.contact_url),
        connect_timeout_s=r.positive("connect_timeout_s", float, d.connect_timeout_s),
        read_timeout_s=r.positive("read_timeout_s", float, d.read_timeout_s),
        total_timeout_s=r.positive("total_timeout_s", float, d.total_timeout_s),
        max_bytes=r.positive("max_bytes", int, d.max_bytes),
        max_redirects=r.get("max_redirects", int, d.max_redirects),
        allow_private=r.get("allow_private", bool, d.allow_private),
        per_domain_concurrency=r.positive("per_domain_concurrency", int, d.per_domain_concurrency),
        per_domain_min_gap_s=r.get("per_domain_min_gap_s", float, d.per_domain_min_gap_s),
        obey_robots=r.get("obey_robots", bool, d.obey_robots),
        default_interval_minutes=r.positive(
            "default_interval_minutes", int, d.default_interval_minutes
        ),
        max_articles_per_feed=r.positive("max_articles_per_feed", int, d.max_articles_per_feed),
        processes=_processes(r, d.processes),
        refetch_ladder_minutes=_ladder(r, d.refetch_ladder_minutes),
    )


def _processes(r: _Reader, default: int) -> int:
    n = r.get("processes", int, default)
    if isinstance(n, bool) or n < 0:
        raise r.fail("processes", "expected 0 (one per core) or a positive number of processes")
    return int(n)


def _ladder(r: _Reader, default: tuple[int, ...]) -> tuple[int, ...]:
    ladder = r.get("refetch_ladder_minutes", list, list(default))
    if any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in ladder):
        raise r.fail("refetch_ladder_minutes", "expected a list of positive whole minutes")
    if ladder != sorted(set(ladder)):
        raise r.fail("refetch_ladder_minutes", "minutes must increase, e.g. [15, 60, 180]")
    return tuple(ladder)


_UNIT_KINDS = ("money", "percent", "count")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _read_drift(r: _Reader) -> DriftConfig:
    r.unknown_keys(_fields(DriftConfig) - {"rates_base", "rates_date"})
    d = DriftConfig()
    tolerance = r.get("tolerance", dict, {})
    for kind, value in tolerance.items():
        if kind not in _UNIT_KINDS:
            raise r.fail(
                "tolerance", f"unknown unit kind {kind!r} (known: {', '.join(_UNIT_KINDS)})"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise r.fail("tolerance", f"{kind}: expected a number in [0, 1), got {value!r}")
    rates_raw = dict(r.get("rates", dict, {}))
    base = rates_raw.pop("base", "USD")
    date = rates_raw.pop("date", "")
    if rates_raw and not date:
        raise r.fail("rates", 'a rate table needs its date (date = "YYYY-MM-DD")')
    if not isinstance(base, str) or not _CURRENCY.match(base):
        raise r.fail("rates", f"base: expected a currency code such as USD, got {base!r}")
    rates: dict[str, float] = {}
    for code, value in rates_raw.items():
        if not _CURRENCY.match(code):
            raise r.fail("rates", f"{code!r} is not a currency code (three capital letters)")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise r.fail("rates", f"{code}: expected a positive number of {base}, got {value!r}")
        rates[code] = float(value)
    metrics = r.get("metrics", list, list(d.metrics))
    for m in metrics:
        if m not in METRICS:
            raise r.fail("metrics", f"unknown metric {m!r} (known: {', '.join(METRICS)})")
    tol = r.get("relative_tolerance", float, d.relative_tolerance)
    if not 0 <= tol < 1:
        raise r.fail("relative_tolerance", f"must be in [0, 1), got {tol!r}")
    return DriftConfig(
        relative_tolerance=tol,
        metrics=tuple(metrics),
        tolerance={k: float(v) for k, v in tolerance.items()},
        rates=rates,
        rates_base=base,
        rates_date=str(date),
    )


def _read_alerts(r: _Reader) -> AlertsConfig:
    r.unknown_keys(_fields(AlertsConfig) - {"channels"} | {"channel"})
    d = AlertsConfig()
    channels = []
    raw = r.data.get("channel", [])
    if not isinstance(raw, list):
        raise r.fail("channel", "expected [[alerts.channel]] tables")
    for i, item in enumerate(raw):
        cr = _Reader(r.path, r.text, item, "alerts.channel", i)
        cr.unknown_keys({"name", "url", "kinds"})
        name = cr.get("name", str, None)
        url = cr.get("url", str, None)
        if not name or not url:
            raise cr.fail(None, "a channel needs both name and url")
        kinds = cr.get("kinds", list, list(ALERT_KINDS))
        for k in kinds:
            if k not in ALERT_KINDS:
                raise cr.fail(
                    "kinds", f"unknown alert kind {k!r} (known: {', '.join(ALERT_KINDS)})"
                )
        channels.append(ChannelConfig(name=name, url=url, kinds=tuple(kinds)))
    metrics = r.get("metrics", list, None)
    for m in metrics or ():
        if m not in METRICS:
            raise r.fail("metrics", f"unknown metric {m!r} (known: {', '.join(METRICS)})")
    quiet = r.get("quiet_hours", str, d.quiet_hours)
    if quiet and not re.match(r"^\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*$", quiet):
        raise r.fail("quiet_hours", f'expected "HH:MM-HH:MM", got {quiet!r}')
    tz = r.get("timezone", str, d.timezone)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise r.fail("timezone", f"unknown time zone {tz!r}") from e
    digest = r.get("digest", str, d.digest)
    if digest not in ("off", "hourly", "daily"):
        raise r.fail("digest", f"expected off, hourly or daily, got {digest!r}")
    return AlertsConfig(
        min_outlets=r.positive("min_outlets", int, d.min_outlets),
        log_file=r.get("log_file", str, d.log_file),
        console=r.get("console", bool, d.console),
        channels=tuple(channels),
        metrics=tuple(metrics) if metrics is not None else None,
        cooldown_hours=r.get("cooldown_hours", float, d.cooldown_hours),
        revisions=r.get("revisions", bool, d.revisions),
        feed_broken_after_hours=r.positive(
            "feed_broken_after_hours", float, d.feed_broken_after_hours
        ),
        quiet_hours=quiet,
        timezone=tz,
        digest=digest,
    )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(config_dir: Path | None = None) -> Settings:
    """Shipped defaults overlaid with ``config_dir/newsdrift.toml`` when given."""
    shipped = shipped_config_dir()
    path = shipped / "newsdrift.toml"
    text, data = _parse(path)
    if config_dir is not None:
        if not config_dir.is_dir():
            raise ConfigError("config directory does not exist", path=str(config_dir))
        user = config_dir / "newsdrift.toml"
        if user.exists():
            path = user
            text, user_data = _parse(user)
            data = _merge(data, user_data)
    known = {"fetch", "stories", "drift", "alerts", "daemon"}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{key}: unknown section (known: {', '.join(sorted(known))})",
                path=str(path),
                line=_line_of(text, key),
            )
    stories = _table(path, text, data, "stories")
    stories.unknown_keys({"window_days"})
    daemon = _table(path, text, data, "daemon")
    daemon.unknown_keys({"interval_minutes"})
    return Settings(
        config_dir=config_dir or shipped,
        fetch=_read_fetch(_table(path, text, data, "fetch")),
        stories=StoriesConfig(window_days=stories.positive("window_days", float, 4.0)),
        drift=_read_drift(_table(path, text, data, "drift")),
        alerts=_read_alerts(_table(path, text, data, "alerts")),
        daemon=DaemonConfig(interval_minutes=daemon.positive("interval_minutes", float, 15.0)),
    )


def feeds_path(config_dir: Path | None) -> Path:
    if config_dir is not None and (config_dir / "feeds.toml").exists():
        return config_dir / "feeds.toml"
    return shipped_config_dir() / "feeds.toml"


def load_feeds(path: Path, default_interval: int = 30) -> FeedsFile:
    """Outlets and their feeds from a feeds.toml."""
    text, data = _parse(path)
    for key in data:
        if key != "outlet":
            raise ConfigError(
                f"{key}: unknown key (expected [[outlet]] tables)",
                path=str(path),
                line=_line_of(text, key) or 1,
            )
    raw = data.get("outlet", [])
    if not isinstance(raw, list):
        raise ConfigError("outlet: expected [[outlet]] tables", path=str(path))
    outlets: list[Outlet] = []
    feeds: list[FeedConfig] = []
    seen_names: set[str] = set()
    seen_urls: set[str] = set()
    allowed = {"name", "lang", "homepage", "interval_minutes", "on_topic", "extra_terms", "feeds"}
    for i, item in enumerate(raw):
        r = _Reader(path, text, item, "outlet", i)
        r.unknown_keys(allowed)
        name = r.get("name", str, "").strip()
        if not name:
            raise r.fail("name", "missing or empty")
        if name in seen_names:
            raise r.fail("name", f"duplicate outlet name {name!r}")
        seen_names.add(name)
        lang = r.get("lang", str, "")
        if lang not in LANGS:
            raise r.fail("lang", f"expected one of {', '.join(LANGS)}, got {lang!r}")
        interval = r.positive("interval_minutes", int, default_interval)
        on_topic = r.get("on_topic", bool, False)
        extra = r.get("extra_terms", list, [])
        if not all(isinstance(t, str) for t in extra):
            raise r.fail("extra_terms", "expected a list of strings")
        urls = r.get("feeds", list, [])
        if not urls:
            raise r.fail("feeds", "an outlet needs at least one feed URL")
        for url in urls:
            if not isinstance(url, str) or not is_http_url(url):
                raise r.fail("feeds", f"not an http(s) URL: {url!r}")
            if url in seen_urls:
                raise r.fail("feeds", f"feed listed twice: {url}")
            seen_urls.add(url)
            feeds.append(FeedConfig(url, name, lang, interval, on_topic, tuple(extra)))
        outlets.append(Outlet(name=name, lang=lang, homepage=r.get("homepage", str, None)))
    return FeedsFile(outlets=tuple(outlets), feeds=tuple(feeds))
