"""The HTTP edge, before any handler runs: auth, body size and time, bounded metric labels.

A pure ASGI middleware, so that nothing reads a body before the caller is known:

- ``/v1`` requests without a valid bearer token get 401 before one byte of their body is
  read (an unauthenticated client cannot make the service buffer anything);
- a body over ``serve_max_body_bytes`` gets 413, from its ``Content-Length`` at once or as
  soon as a chunked body passes the limit; a body not complete ``serve_body_timeout_s``
  after the headers gets 408. Either way the connection is closed;
- the latency histogram's labels are bounded: the route *template* (or ``unmatched``),
  the method from a fixed set (or ``other``), the status code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from starlette.routing import BaseRoute, Match

from streams.common.exceptions import MemstreamError
from streams.service.core import ReadService

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class BodyTooLargeError(MemstreamError):
    """The body passed the limit while being read (answered 413, never raised past the guard)."""


def method_label(method: str) -> str:
    """The method as a metric label: one of ``METHODS`` or ``other``."""
    return method if method in METHODS else "other"


class RequestGuard:
    """Auth before body, bounded bodies, bounded labels (see the module docstring)."""

    def __init__(self, app: ASGIApp, service: ReadService, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self.service = service
        self.max_body = service.settings.serve_max_body_bytes
        self.body_timeout = service.settings.serve_body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, observed)
        finally:
            self.service.metrics.latency.labels(
                self._route(scope), method_label(scope["method"]), str(status["code"])
            ).observe(time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope["headers"]}
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        if scope["path"].startswith("/v1/") and self._tenant(headers) is None:
            # A body that is never read: close rather than let the client keep sending it.
            await _answer(send, 401, "missing or unknown bearer token",
                          [(b"www-authenticate", b"Bearer")], close=has_body)
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _answer(send, 413, self._too_large(), close=True)
            return
        try:
            with anyio.fail_after(self.body_timeout):
                body, more = await self._read_body(receive)
        except BodyTooLargeError:
            await _answer(send, 413, self._too_large(), close=True)
            return
        except TimeoutError:
            await _answer(send, 408, f"the request body did not arrive within "
                                     f"{self.body_timeout:g}s (MEMSTREAM_SERVE_BODY_TIMEOUT_S)",
                          close=True)
            return
        if more is not None:  # the client went away while sending
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> tuple[bytes, Message | None]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", message
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLargeError
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    def _tenant(self, headers: dict[bytes, bytes]) -> str | None:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.service.tokens.tenant(token.strip())

    def _too_large(self) -> str:
        return (f"request body over the limit of {self.max_body} bytes "
                "(MEMSTREAM_SERVE_MAX_BODY_BYTES)")

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")  # set by the router when it matched one
        if route is not None:
            return str(getattr(route, "path", "unmatched"))
        for candidate in self.routes:
            match, _ = candidate.matches(scope)
            if match != Match.NONE:
                return str(getattr(candidate, "path", "unmatched"))
        return "unmatched"


async def _answer(send: Send, status: int, detail: str,
                  headers: list[tuple[bytes, bytes]] | None = None, *, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    extra = list(headers or []) + ([(b"connection", b"close")] if close else [])
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *extra]})
    await send({"type": "http.response.body", "body": body})
