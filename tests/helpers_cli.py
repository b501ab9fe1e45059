"""Helpers for the tests that drive ``newsdrift`` as a user would: as a subprocess.

- ``make_corpus`` copies the bundled demo outlets and adds *mirror* outlets whose
  articles repeat the originals with every money amount shifted, so that stories
  span more outlets and the outlets disagree (alerts are queued).
- ``serve_outlets`` serves such a corpus on 127.0.0.1 with an optional delay before
  each response (so that a run lasts long enough to be killed mid-way), and can hold
  every reply until the test lets go (``Site.held()``), to keep a process mid-cycle.
- ``write_config`` writes a config dir (newsdrift.toml + feeds.toml) for the site.
- ``newsdrift`` / ``start_newsdrift`` run the installed console script.
- ``snapshot`` reads what a run left in a SQLite database, for comparisons.

Nothing here leaves loopback: the config dir lists only the local site's feeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from pipeline.demo_server import (
    DEMO_DATA_DIR,
    HOST,
    MANIFEST_NAME,
    Resource,
    build_resources,
    send_resource,
)

# Money amounts followed by a scale word: the mirrors shift their integer part by one.
_AMOUNT = re.compile(
    r"(?<![\d.,])(\d+)((?:[.,]\d+)?\s*(?:Milliarden|Millionen|Mrd\.|Mio\.|billion|million|bn)\b)"
)
# How long a CLI call may take before a test gives up on it.
CLI_TIMEOUT_S = 120.0
# The longest a held reply waits (a safety net: tests open the gate themselves).
GATE_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class OutletSpec:
    """One outlet of a corpus: its name, language and feed paths (below the base URL)."""

    name: str
    lang: str
    feed_paths: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    root: Path
    outlets: tuple[OutletSpec, ...]


def shift_amounts(text: str) -> str:
    """Every money amount with a scale word gets its integer part increased by one."""
    return _AMOUNT.sub(lambda m: f"{int(m.group(1)) + 1}{m.group(2)}", text)


def make_corpus(dest: Path, *, mirrors: int = 1, source: Path = DEMO_DATA_DIR) -> Corpus:
    """The demo outlets plus ``mirrors`` shifted copies of each, under ``dest``."""
    shutil.copytree(source, dest)
    manifest = tomllib.loads((source / MANIFEST_NAME).read_text(encoding="utf-8"))
    outlets: list[OutletSpec] = []
    for table in manifest["outlet"]:
        feeds = tuple(str(f) for f in table["feeds"])
        outlets.append(OutletSpec(str(table["name"]), str(table["lang"]), feeds))
        home = "/" + str(table["homepage"]).strip("/") + "/"
        for n in range(1, mirrors + 1):
            mirror_home = home.rstrip("/") + f"-m{n}/"
            copy = dest / mirror_home.strip("/")
            shutil.copytree(dest / home.strip("/"), copy)
            for file in copy.rglob("*"):
                if not file.is_file() or file.suffix not in (".html", ".xml", ".atom", ".rss"):
                    continue
                text = file.read_text(encoding="utf-8")
                text = text.replace("{base}" + home, "{base}" + mirror_home)
                file.write_text(shift_amounts(text), encoding="utf-8")
            outlets.append(
                OutletSpec(
                    f"{table['name']} mirror {n}",
                    str(table["lang"]),
                    tuple(f.replace(home, mirror_home, 1) for f in feeds),
                )
            )
    return Corpus(dest, tuple(outlets))


# --------------------------------------------------------------------------- the server


@dataclass
class Site:
    base_url: str
    outlets: tuple[OutletSpec, ...]
    server: _SlowServer = field(repr=False)

    def feed_urls(self, outlet: OutletSpec) -> list[str]:
        return [self.base_url + p for p in outlet.feed_paths]

    @contextmanager
    def held(self) -> Iterator[None]:
        """Inside the block, every reply waits until the block ends (or GATE_TIMEOUT_S).

        A process that has made its first request is then certainly mid-cycle, however
        slowly the machine runs, for as long as the block lasts.
        """
        self.server.gate.clear()
        try:
            yield
        finally:
            self.server.gate.set()

    def set_delay(self, delay_s: float) -> None:
        """Change the delay before each reply from now on (requests in flight keep theirs)."""
        self.server.delay_s = delay_s

    @property
    def requests(self) -> int:
        return self.server.count

    @property
    def first_request_at(self) -> float | None:
        return self.server.first_at


class _SlowServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay_s: float) -> None:
        super().__init__((HOST, 0), _SlowHandler)
        self.delay_s = delay_s
        self.resources: Mapping[str, Resource] = {}
        self.lock = threading.Lock()
        self.count = 0
        self.first_at: float | None = None
        self.gate = threading.Event()
        self.gate.set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request is expected here; stay quiet."""


class _SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        server = cast(_SlowServer, self.server)
        with server.lock:
            server.count += 1
            if server.first_at is None:
                server.first_at = time.monotonic()
        server.gate.wait(timeout=GATE_TIMEOUT_S)
        delay = server.delay_s
        if delay:
            time.sleep(delay)  # a slow network, so runs can be killed mid-way
        resource = server.resources.get(unquote(urlsplit(self.path).path) or "/")
        if resource is None:
            self.send_response(HTTPStatus.NOT_FOUND)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        send_resource(self, resource)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_outlets(corpus: Corpus, *, delay_s: float = 0.0) -> Iterator[Site]:
    """Serve ``corpus`` on 127.0.0.1 (random port), waiting ``delay_s`` before each reply."""
    server = _SlowServer(delay_s)
    host, port = server.server_address[:2]
    base_url = f"http://{host!s}:{port}"
    server.resources = build_resources(corpus.root, base_url)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield Site(base_url, corpus.outlets, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- config and CLI


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_config(
    config_dir: Path,
    site: Site,
    *,
    alerts_log: Path,
    extra: str = "",
) -> Path:
    """A config dir for ``site``: loopback allowed, no politeness gap, alerts to a file."""
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "newsdrift.toml").write_text(
        "[fetch]\n"
        "allow_private = true\n"
        "per_domain_min_gap_s = 0.0\n"
        "per_domain_concurrency = 4\n"
        "[alerts]\n"
        "console = false\n"
        f"log_file = {_toml_str(str(alerts_log))}\n" + extra,
        encoding="utf-8",
    )
    blocks = []
    for outlet in site.outlets:
        feeds = ", ".join(_toml_str(u) for u in site.feed_urls(outlet))
        blocks.append(
            f"[[outlet]]\nname = {_toml_str(outlet.name)}\nlang = {_toml_str(outlet.lang)}\n"
            f"feeds = [{feeds}]\n"
        )
    (config_dir / "feeds.toml").write_text("\n".join(blocks), encoding="utf-8")
    return config_dir


def newsdrift_executable() -> str:
    """The installed ``newsdrift`` console script next to this interpreter."""
    candidate = Path(sys.executable).parent / "newsdrift"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("newsdrift")
    if found is None:
        raise RuntimeError("the newsdrift console script is not installed")
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NEWSDRIFT_DB", None)
    env.pop("NEWSDRIFT_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli_args(db_url: str, config_dir: Path | None, *args: str) -> list[str]:
    base = [newsdrift_executable(), "--db", db_url]
    if config_dir is not None:
        base += ["--config", str(config_dir)]
    return base + list(args)


def newsdrift(
    db_url: str, config_dir: Path | None, *args: str, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run one newsdrift command to its end."""
    return subprocess.run(
        cli_args(db_url, config_dir, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        check=False,
    )


def start_newsdrift(
    db_url: str, config_dir: Path | None, *args: str, stderr_file: Path | None = None
) -> subprocess.Popen[str]:
    """Start a newsdrift command in the background (its own session).

    With ``stderr_file`` its log goes to that file, to be read while it runs.
    """
    with contextlib.ExitStack() as stack:
        stderr: Any = subprocess.PIPE
        if stderr_file is not None:
            stderr = stack.enter_context(stderr_file.open("w", encoding="utf-8"))
        return subprocess.Popen(
            cli_args(db_url, config_dir, *args),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=_env(),
            start_new_session=True,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def kill_hard(proc: subprocess.Popen[str]) -> str:
    """SIGKILL ``proc`` (only it: the pid we started), reap it, and return what it had
    written to its piped stderr (its log), for the failure message."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    _out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
    return err or ""


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# --------------------------------------------------------------------------- reading a database


def integrity_check(db_path: Path) -> str:
    """SQLite's ``PRAGMA integrity_check`` of ``db_path`` (``"ok"`` when sound).

    Read-only first; a process SIGKILLed mid-write can leave a WAL that must be
    recovered, which a read-only connection cannot do ("attempt to write a readonly
    database"): then read-write, as the next run would open it."""
    try:
        return _integrity(f"file:{db_path}?mode=ro")
    except sqlite3.OperationalError as e:
        if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_READONLY:  # extended codes too
            raise
        return _integrity(f"file:{db_path}")


def _integrity(uri: str) -> str:
    con = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()
    return "\n".join(str(r[0]) for r in rows)


@dataclass(frozen=True)
class Snapshot:
    """What a database holds, in terms that do not depend on row ids or timing."""

    article_keys: tuple[str, ...]  # sorted, with repeats if any
    versions: tuple[tuple[str, str], ...]  # (article key, content hash), sorted
    figures: tuple[tuple[str, str, int, int, str], ...]  # (key, hash, start, end, unit)
    alert_keys: tuple[str, ...]  # sorted, with repeats if any
    deliveries: tuple[tuple[str, str], ...]  # (alert key, channel), sorted
    stories: frozenset[frozenset[str]]  # live stories as sets of article keys
    unprocessed_versions: int

    def duplicates(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for name in ("article_keys", "versions", "figures", "alert_keys", "deliveries"):
            items: Sequence[Any] = getattr(self, name)
            dups = sorted({x for x in items if items.count(x) > 1}, key=repr)
            if dups:
                found[name] = dups
        return found


def snapshot(db_path: Path) -> Snapshot:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        articles = sorted(r[0] for r in con.execute("SELECT key FROM articles"))
        versions = sorted(
            con.execute(
                "SELECT a.key, v.content_hash FROM article_versions v "
                "JOIN articles a ON a.id = v.article_id"
            ).fetchall()
        )
        figures = sorted(
            con.execute(
                'SELECT a.key, v.content_hash, f.start, f."end", f.unit FROM figures f '
                "JOIN article_versions v ON v.id = f.version_id "
                "JOIN articles a ON a.id = v.article_id"
            ).fetchall()
        )
        alerts = sorted(r[0] for r in con.execute("SELECT key FROM alerts"))
        deliveries = sorted(
            con.execute(
                "SELECT a.key, d.channel FROM deliveries d JOIN alerts a ON a.id = d.alert_id"
            ).fetchall()
        )
        groups: dict[int, set[str]] = {}
        for key, story in con.execute(
            "SELECT a.key, a.story_id FROM articles a JOIN stories s ON s.id = a.story_id "
            "WHERE s.merged_into IS NULL"
        ):
            groups.setdefault(story, set()).add(key)
        unprocessed = con.execute(
            "SELECT count(*) FROM article_versions v JOIN articles a ON a.id = v.article_id "
            "WHERE v.processed_at IS NULL AND a.status != 'skipped'"
        ).fetchone()[0]
    finally:
        con.close()
    return Snapshot(
        article_keys=tuple(articles),
        versions=tuple(tuple(v) for v in versions),
        figures=tuple(tuple(f) for f in figures),
        alert_keys=tuple(alerts),
        deliveries=tuple(tuple(d) for d in deliveries),
        stories=frozenset(frozenset(g) for g in groups.values()),
        unprocessed_versions=int(unprocessed),
    )


def compare(reference: Snapshot, other: Snapshot) -> list[str]:
    """How ``other`` differs from ``reference`` (empty: the same)."""
    problems = [f"duplicates: {other.duplicates()}"] if other.duplicates() else []
    for name in ("article_keys", "versions", "figures", "alert_keys", "deliveries", "stories"):
        want, got = getattr(reference, name), getattr(other, name)
        if set(want) != set(got):
            missing = sorted(set(want) - set(got), key=repr)[:5]
            extra = sorted(set(got) - set(want), key=repr)[:5]
            problems.append(f"{name}: missing {missing} extra {extra}")
    if other.unprocessed_versions:
        problems.append(f"{other.unprocessed_versions} version(s) never analysed")
    return problems
