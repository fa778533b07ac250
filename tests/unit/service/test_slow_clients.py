"""Slow and numerous clients against a real uvicorn server (``memstream serve``'s config) on
127.0.0.1: trickled headers or bodies get the connection closed, connections are capped."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from streams.service.http import create_app
from streams.service.server import server_config
from tests.integration.service_harness import free_port


@pytest.fixture
def server(service_factory: Any) -> Iterator[tuple[str, int]]:
    port = free_port()
    service = service_factory(serve_port=port, serve_header_timeout_s=1.0,
                              serve_body_timeout_s=1.0, serve_max_connections=40)
    config = server_config(create_app(service), service.settings)
    config.lifespan = "off"
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    running.should_exit = True
    thread.join(10)


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (what it sent before closing is read and dropped)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def _trickle(socks: list[socket.socket], seconds: float, piece: bytes) -> list[socket.socket]:
    """Send ``piece`` on every open socket every 0.2 s for ``seconds``; the ones still open."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sock in socks:
            try:
                sock.sendall(piece)
            except OSError:
                pass
        time.sleep(0.2)
    return [s for s in socks if not _closed(s)]


def test_connections_trickling_headers_are_closed(server: tuple[str, int]) -> None:
    socks = [socket.create_connection(server) for _ in range(30)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    still_open = _trickle(socks, 3.0, b"X-Slow: 1\r\n")
    assert still_open == [], f"{len(still_open)} of 30 trickling connections still held"
    # A normal client is served meanwhile and afterwards.
    with socket.create_connection(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_a_connection_that_sends_nothing_is_closed(server: tuple[str, int]) -> None:
    sock = socket.create_connection(server)
    time.sleep(2.0)
    assert _closed(sock)


def test_connections_trickling_a_body_are_closed(server: tuple[str, int]) -> None:
    head = (b"POST /v1/recall HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-acme\r\n"
            b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n")
    socks = [socket.create_connection(server) for _ in range(10)]
    for sock in socks:
        sock.sendall(head)
    still_open = _trickle(socks, 3.0, b" ")
    assert still_open == [], f"{len(still_open)} of 10 trickling bodies still held"


def test_connections_past_the_cap_are_closed_at_once(server: tuple[str, int]) -> None:
    socks = [socket.create_connection(server) for _ in range(60)]
    time.sleep(0.3)
    closed = sum(_closed(s) for s in socks)
    assert closed >= 20, f"only {closed} of 60 connections closed with a cap of 40"
    for sock in socks:
        sock.close()


@pytest.mark.parametrize(("auth", "status"), [(b"", b"401"),
                                              (b"Authorization: Bearer tok-acme\r\n", b"413")])
def test_a_refused_body_is_answered_at_once_and_the_connection_closed(
        server: tuple[str, int], auth: bytes, status: bytes) -> None:
    with socket.create_connection(server) as sock:
        sock.sendall(b"POST /v1/recall HTTP/1.1\r\nHost: x\r\n" + auth
                     + b"Content-Length: 104857600\r\n\r\n" + b"x" * 65536)
        sock.settimeout(5)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
        assert b"connection: close" in answer.lower()
        time.sleep(0.3)
        assert _closed(sock), "the server kept reading a body it refused"
