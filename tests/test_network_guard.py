"""The guard in conftest.py must stop any connection beyond loopback."""

from __future__ import annotations

import socket

import pytest


def test_connect_beyond_loopback_is_refused() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s,
        pytest.raises(OSError, match="beyond loopback"),
    ):
        s.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed, never reached


def test_name_lookup_beyond_loopback_fails_like_dns() -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.org", 80)


def test_loopback_still_works() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
