"""Bearer tokens, each mapped to one tenant, kept only as sha256 digests.

``MEMSTREAM_API_TOKENS`` (or the file ``MEMSTREAM_API_TOKENS_FILE`` names) holds
``token=tenant`` entries separated by commas or newlines; ``#`` starts a comment. A token
may be written as ``sha256:<hex digest>`` (what ``memstream hash-token`` prints), so the
file at rest holds nothing a client could present. Plain tokens are hashed on load and
the plain text is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from streams.exceptions import MemstreamError

_HEX = re.compile(r"^[0-9a-f]{64}$")


class TokenConfigError(MemstreamError):
    """The API token setting is malformed."""


def token_digest(token: str) -> str:
    """The sha256 hex digest a token is stored as."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenTable:
    """Digest -> tenant."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._tenant_of = dict(entries)

    def __len__(self) -> int:
        return len(self._tenant_of)

    @classmethod
    def parse(cls, text: str | None) -> TokenTable:
        """Read ``token=tenant`` / ``sha256:<hex>=tenant`` entries."""
        entries: dict[str, str] = {}
        for n, raw in enumerate(re.split(r"[,\n]", text or ""), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            token, sep, tenant = line.rpartition("=")
            token, tenant = token.strip(), tenant.strip()
            if not sep or not token or not tenant:
                raise TokenConfigError(
                    f"API tokens, entry {n}: expected token=tenant, got {len(line)} characters "
                    "without '=' or with an empty side"
                )
            if token.startswith("sha256:"):
                digest = token.removeprefix("sha256:").lower()
                if not _HEX.match(digest):
                    raise TokenConfigError(
                        f"API tokens, entry {n}: sha256: must be followed by 64 hex digits"
                    )
            else:
                digest = token_digest(token)
            if entries.get(digest, tenant) != tenant:
                raise TokenConfigError(f"API tokens, entry {n}: one token maps to two tenants")
            entries[digest] = tenant
        return cls(entries)

    def tenant(self, token: str) -> str | None:
        """The tenant of a presented token, or None."""
        digest = token_digest(token)
        for known, tenant in self._tenant_of.items():
            # Constant-time over all entries: no timing hint about which digest is close.
            if hmac.compare_digest(known, digest):
                return tenant
        return None
