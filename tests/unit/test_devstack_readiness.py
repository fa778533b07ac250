"""The dev stack counts the registry as up only once it has loaded what it stores.

Apicurio with kafkasql storage serves HTTP while it still replays its journal topic; a
lookup then misses a stored schema and registering it again is refused as a duplicate
(the failure a CI machine with a large, kept journal met). The real registry reaches that
window only when its consumer is slow to join (a broker loading thousands of groups), so
this test serves the two answers from a small HTTP server of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.ops.devstack.stack import _registry_answers


class _Registry(BaseHTTPRequestHandler):
    subjects = 200
    ready = 503

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        if self.path == "/apis/ccompat/v7/subjects":
            self._send(self.subjects, b"[]")
        elif self.path == "/health/ready":
            self._send(self.ready, b'{"status": "DOWN"}' if self.ready == 503 else b"{}")
        else:
            self._send(404, b"{}")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def registry() -> Iterator[tuple[str, type[_Registry]]]:
    handler = type("Handler", (_Registry,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/apis/ccompat/v7", handler
    finally:
        server.shutdown()
        server.server_close()


def test_answering_but_loading_is_not_up(registry: tuple[str, type[_Registry]]) -> None:
    url, handler = registry
    assert not _registry_answers(url)
    handler.ready = 200
    assert _registry_answers(url)


def test_registry_without_readiness_endpoint_is_up_once_it_answers(
    registry: tuple[str, type[_Registry]],
) -> None:
    url, handler = registry
    handler.ready = 404
    assert _registry_answers(url)
    handler.subjects = 500
    assert not _registry_answers(url)


def test_nothing_listening_is_not_up() -> None:
    assert not _registry_answers("http://127.0.0.1:9/apis/ccompat/v7")
