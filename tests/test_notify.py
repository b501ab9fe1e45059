"""Alert delivery through real channels on loopback: SMTP (aiosmtpd), a JSON webhook,
a log file; the outbox retries a channel that is down without losing the alert."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from pipeline.errors import ConfigError
from pipeline.models import Alert
from pipeline.notify import AppriseChannel, FileChannel, NotifyError, StreamChannel
from pipeline.run import RunReport, deliver
from storage.repository import Store
from tests.pg import DbFactory

T = datetime(2025, 6, 13, 8, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Mailbox]]:
    box = _Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, box
    controller.stop()


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    failures_left: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.failures_left[0] > 0:
            self.failures_left[0] -= 1
            self.send_response(503)
            self.end_headers()
            return
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]], list[int]]]:
    received: list[dict[str, Any]] = []
    failures = [0]
    handler = type("H", (_Receiver,), {"received": received, "failures_left": failures})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"json://127.0.0.1:{server.server_port}/hook", received, failures
    server.shutdown()
    server.server_close()


def test_mail_is_delivered_to_a_real_smtp_server(smtp: tuple[int, _Mailbox]) -> None:
    port, box = smtp
    url = f"mailto://127.0.0.1:{port}?from=nd@localhost.example&to=desk@localhost.example&mode=insecure"
    AppriseChannel("mail", url).send("outlets disagree", "14.8 vs 14.3")
    assert len(box.messages) == 1
    assert b"outlets disagree" in box.messages[0]


def test_secrets_come_from_the_environment(
    webhook: tuple[str, list[dict[str, Any]], list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received, _ = webhook
    host_path = url.removeprefix("json://")
    monkeypatch.setenv("ND_HOOK", host_path)
    AppriseChannel("hook", "json://${ND_HOOK}").send("t", "b")
    assert received[0]["title"] == "t" and received[0]["message"] == "b"
    monkeypatch.delenv("ND_HOOK")
    with pytest.raises(ConfigError, match="ND_HOOK is not set"):
        AppriseChannel("hook", "json://${ND_HOOK}").send("t", "b")


def test_unreachable_channel_raises_notify_error() -> None:
    with pytest.raises(NotifyError, match="delivery failed"):
        AppriseChannel("hook", f"json://127.0.0.1:{free_port()}/x").send("t", "b")


def test_file_and_stream_channels(tmp_path: Path) -> None:
    FileChannel(tmp_path / "a" / "alerts.log").send("title", "body")
    assert "title\nbody" in (tmp_path / "a" / "alerts.log").read_text()
    buf = io.StringIO()
    StreamChannel(buf).send("title", "body")
    assert "ALERT: title" in buf.getvalue()
    with pytest.raises(NotifyError, match="cannot write"):
        FileChannel(tmp_path / "a" / "alerts.log" / "x").send("t", "b")


def test_outbox_retries_a_channel_that_was_down(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]], list[int]], new_db: DbFactory
) -> None:
    url, received, failures = webhook
    failures[0] = 1  # the webhook refuses the first attempt
    store = Store.open(new_db())
    hook = AppriseChannel("hook", url)
    log = FileChannel(tmp_path / "alerts.log")
    with store.unit() as repo:
        repo.add_alert(
            Alert(key="k", kind="disagreement", title="t", body="b", created_at=T),
            ["hook", "logfile"],
        )
    now = [T]
    report = RunReport()
    deliver(store, [hook, log], lambda: now[0], report)
    assert (report.deliveries_sent, report.deliveries_failed) == (1, 1)
    assert received == []
    deliver(store, [hook, log], lambda: now[0], report)  # too early for the retry
    assert received == []
    now[0] = T + timedelta(hours=1)
    deliver(store, [hook, log], lambda: now[0], report)
    assert len(received) == 1
    deliver(store, [hook, log], lambda: now[0], report)  # nothing is sent twice
    assert len(received) == 1
    assert (tmp_path / "alerts.log").read_text().count("\nb\n") == 1
    with store.unit() as repo:
        [alert] = repo.alerts()
        assert alert.status == "sent"
    store.close()


def test_a_failing_channel_is_tried_once_a_cycle(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]], list[int]], new_db: DbFactory
) -> None:
    """A channel that fails keeps its other deliveries for the next cycle, no attempt
    counted: a webhook that hangs costs its timeout (4 s with apprise) once a cycle, not
    once for every pending alert. Other channels are not held up."""
    url, received, failures = webhook
    failures[0] = 10
    store = Store.open(new_db())
    hook = AppriseChannel("hook", url)
    log = FileChannel(tmp_path / "alerts.log")
    with store.unit() as repo:
        for k in "abc":
            repo.add_alert(
                Alert(key=k, kind="disagreement", title=k, body=k, created_at=T),
                ["hook", "logfile"],
            )
    report = RunReport()
    deliver(store, [hook, log], lambda: T, report)
    assert failures[0] == 9  # one request to the webhook
    assert (report.deliveries_sent, report.deliveries_failed) == (3, 1)
    with store.unit() as repo:
        hooks = [next(d for d in a.deliveries if d[0] == "hook") for a in repo.alerts()]
    assert [(status, attempts) for _, status, attempts, _ in hooks] == [
        ("pending", 1),
        ("pending", 0),
        ("pending", 0),
    ]
    failures[0] = 0
    deliver(store, [hook, log], lambda: T + timedelta(minutes=1), report)
    assert [r["title"] for r in received] == ["b", "c"]  # the first waits out its backoff
    store.close()


def test_a_stop_leaves_the_other_deliveries_pending(tmp_path: Path, new_db: DbFactory) -> None:
    stop = threading.Event()

    class StopsAfterOne(FileChannel):
        def send(self, title: str, body: str) -> None:
            super().send(title, body)
            stop.set()  # the signal arrives while the first message is sent

    store = Store.open(new_db())
    with store.unit() as repo:
        for k in "ab":
            repo.add_alert(Alert(key=k, kind="disagreement", title=k, body=k, created_at=T), ["f"])
    report = RunReport()
    deliver(store, [StopsAfterOne(tmp_path / "f.log", "f")], lambda: T, report, stop=stop)
    assert report.deliveries_sent == 1
    with store.unit() as repo:
        assert [a.status for a in repo.alerts()] == ["sent", "pending"]
    store.close()


def test_alerts_test_pings_every_channel_and_says_which_worked(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]], list[int]]
) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main

    url, received, _ = webhook
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "newsdrift.toml").write_text(
        f'[alerts]\nconsole = false\nlog_file = "{tmp_path / "a.log"}"\n'
        f'[[alerts.channel]]\nname = "hook"\nurl = "{url}"\n'
        f'[[alerts.channel]]\nname = "down"\nurl = "json://127.0.0.1:{free_port()}/x"\n'
    )
    result = CliRunner().invoke(
        main, ["--db", f"sqlite:///{tmp_path / 'nd.db'}", "--config", str(cfg), "alerts", "--test"]
    )
    assert result.exit_code == 1
    assert "logfile: ok" in result.output and "hook: ok" in result.output
    assert "down: FAILED" in result.output
    assert received and received[0]["title"] == "newsdrift test message"
