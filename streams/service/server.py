"""uvicorn, bounded against slow and numerous clients.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past
``limit_concurrency``, but a connection that trickles its headers (or its body) a byte at a
time is held for ever, and connections are accepted without limit. ``BoundedH11Protocol``
adds what is missing: the request's headers must arrive within ``serve_header_timeout_s``
of the connection (or of the previous response), its body within ``serve_body_timeout_s``
of the headers, else the connection is closed; past ``serve_max_connections`` open
connections a new one is closed at once. h11's incomplete-event limit caps the header size.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from streams.common.settings import Settings

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024


class BoundedH11Protocol(H11Protocol):
    """H11Protocol with header and body read deadlines and a connection cap."""

    header_timeout_s = 10.0
    body_timeout_s = 15.0
    max_connections = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._reading = "headers"

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning("connection limit (%d) reached: closing a new connection",
                           self.max_connections)
            self.transport.close()
            return
        self._arm("headers", self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY and self._reading == "headers":
            self._arm("body", self.body_timeout_s)
        elif state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm("headers", self.header_timeout_s)  # the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, reading: str, seconds: float) -> None:
        self._disarm()
        self._reading = reading
        self._read_deadline = self.loop.call_later(seconds, self._read_too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None
        self._reading = "headers"

    def _read_too_slow(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        logger.info("closing a connection that did not send its request %s in time",
                    self._reading)
        self.transport.close()


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of ``memstream serve``."""
    protocol = type("ServeProtocol", (BoundedH11Protocol,), {
        "header_timeout_s": settings.serve_header_timeout_s,
        "body_timeout_s": settings.serve_body_timeout_s,
        "max_connections": settings.serve_max_connections,
    })
    return uvicorn.Config(
        app, host=settings.serve_host, port=settings.serve_port, log_config=None,
        access_log=False, http=protocol, timeout_keep_alive=settings.serve_keep_alive_s,
        limit_concurrency=settings.serve_max_connections,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
