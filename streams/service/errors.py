"""Error answers that stay small and always encodable, whatever the request held.

A 422 names each failing field and its problem, and shows at most a short, printable
prefix of the value: never the whole input (a 1 MB query must not come back as a 1 MB
error), never a value JSON cannot carry (NaN, a lone surrogate)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_ERRORS = 10
MAX_SHOWN_CHARS = 80


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> Any:
    """A short, JSON-safe stand-in for ``value``: strings cut to ``limit`` characters with
    unpaired surrogates escaped, non-finite numbers as text, containers by their size."""
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 10**18 else str(value)[:limit]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str | bytes):
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
        return safe if len(safe) <= limit else f"{safe[:limit]}... ({len(text)} characters)"
    if isinstance(value, dict):
        return f"<object with {len(value)} fields>"
    if isinstance(value, Sequence):
        return f"<array of {len(value)} items>"
    return f"<{type(value).__name__}>"


def _error(err: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "loc": [shown(part, 40) for part in err.get("loc", ())],
        "msg": shown(str(err.get("msg", "")), 200),
        "type": shown(str(err.get("type", "")), 60),
    }
    if "input" in err:
        out["input"] = shown(err["input"])
    return out


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 with at most ``MAX_ERRORS`` errors, each with a truncated input."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    body = {"detail": [_error(e) for e in errors[:MAX_ERRORS]], "errors": len(errors)}
    return JSONResponse(body, status_code=422)
