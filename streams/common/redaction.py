"""Credentials out of anything shown: one helper for logs, health answers and errors.

A URL may carry ``user:password@``; a librdkafka or httpx error message repeats the URL it
failed on. ``redact`` masks the userinfo of every URL in a text, and the query values whose
names say they are secret, so what reaches a log line or an HTTP answer never holds them.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s?#]+)@")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)=)"
    r"(?P<value>[^&;#\s]+)",
    re.IGNORECASE,
)
MASK = "***"


def redact(text: str) -> str:
    """``text`` with URL credentials and secret-named query values replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)
