"""One rooted exception tree for newsdrift.

Expected failures of one feed or one article are raised as one of these,
caught at the edge of the stage that handles that item, and recorded as a
value (the feed's health, the run report). Anything else is a bug.
"""

from __future__ import annotations


class NewsdriftError(Exception):
    """Root of every error newsdrift raises on purpose."""


class ConfigError(NewsdriftError):
    """A configuration file or value is wrong; the message says where."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = path or ""
        if path and line:
            where = f"{path}:{line}"
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.line = line


class StorageError(NewsdriftError):
    """The database cannot be opened, migrated or written."""


class LeaseHeld(StorageError):
    """Another run holds the database lease."""


class FetchError(NewsdriftError):
    """Fetching one URL failed. ``kind`` classifies it for backoff."""

    kind = "hard"

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.reason = message


class HardFetchError(FetchError):
    """Will not get better by retrying soon: DNS, 404, TLS, refused address."""

    kind = "hard"


class SoftFetchError(FetchError):
    """May get better soon: 5xx, timeout, connection reset."""

    kind = "soft"


class RateLimited(SoftFetchError):
    """429 or 503 with Retry-After; ``retry_after`` is seconds from now."""

    kind = "rate_limited"

    def __init__(self, url: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(url, message)
        self.retry_after = retry_after


class Gone(HardFetchError):
    """410 Gone: the feed is marked gone and rechecked rarely."""

    kind = "gone"


class BlockedByPolicy(HardFetchError):
    """robots.txt or the address policy forbids the request."""

    kind = "blocked"


class ParseError(NewsdriftError):
    """A feed or page could not be parsed."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.reason = message


class ExtractionError(ParseError):
    """No usable article text could be extracted from a page."""


class InputError(NewsdriftError):
    """A line of user-supplied input (JSONL, OPML) is invalid; the message says where."""
