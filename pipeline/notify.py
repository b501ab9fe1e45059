"""Deliver alerts: the console, a log file, and any apprise URL.

Channels raise ``NotifyError`` on failure; the run cycle records it on the
delivery and retries later. Secrets come from ``${ENV_VAR}`` references in
config and are never logged.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from pipeline.errors import ConfigError, NewsdriftError

log = logging.getLogger(__name__)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class NotifyError(NewsdriftError):
    """A channel could not deliver a message."""


ALL_KINDS: tuple[str, ...] = ("disagreement", "revision", "feed_health")


class Channel(Protocol):
    name: str
    kinds: tuple[str, ...]

    def send(self, title: str, body: str) -> None: ...


@dataclass
class StreamChannel:
    """Writes alerts to a text stream (the terminal)."""

    stream: TextIO
    name: str = "console"
    kinds: tuple[str, ...] = ALL_KINDS

    def send(self, title: str, body: str) -> None:
        self.stream.write(f"\n=== ALERT: {title}\n{body}\n")
        self.stream.flush()


@dataclass
class FileChannel:
    """Appends alerts to a log file, one block per alert."""

    path: Path
    name: str = "logfile"
    kinds: tuple[str, ...] = ALL_KINDS

    def send(self, title: str, body: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(f"[{stamp}] {title}\n{body}\n\n")
        except OSError as e:
            raise NotifyError(f"{self.name}: cannot write {self.path}: {e.strerror}") from e


def expand_env(url: str, where: str) -> str:
    """Replace ``${VAR}`` with the environment's value; a missing one is a config error."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            raise ConfigError(f"{where}: environment variable {m.group(1)} is not set")
        return value

    return _ENV.sub(sub, url)


@dataclass
class AppriseChannel:
    """Any apprise URL: mailto, slack, discord, ntfy, json webhooks …"""

    name: str
    url_template: str
    kinds: tuple[str, ...] = ALL_KINDS

    def send(self, title: str, body: str) -> None:
        import apprise

        url = expand_env(self.url_template, f"alerts channel {self.name!r}")
        app = apprise.Apprise()
        if not app.add(url):
            raise NotifyError(f"{self.name}: apprise does not understand this channel URL")
        if not app.notify(title=title, body=body):
            raise NotifyError(f"{self.name}: delivery failed (see the apprise log)")
