"""Bearer tokens, each mapped to one tenant, kept only as sha256 digests (the read service
and the MCP server check the same list).

``MEMSTREAM_API_TOKENS`` (or the file ``MEMSTREAM_API_TOKENS_FILE`` names) holds
``token=tenant`` entries separated by commas or newlines; a line starting with ``#`` is a
comment. A token
may be written as ``sha256:<hex digest>`` (what ``memstream hash-token`` prints), so the
file at rest holds nothing a client could present. Plain tokens are hashed on load and
the plain text is dropped. Tenant names follow the one tenant rule
(``streams.common.validation.TENANT_RULE``): a name that could not round-trip through an entry
(``#``, ``=``, ``,``, spaces) is refused with the entry's number, never read as another.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from streams.common.exceptions import MemstreamError
from streams.common.validation import tenant_problem

_HEX = re.compile(r"^[0-9a-f]{64}$")


class TokenConfigError(MemstreamError):
    """The API token setting is malformed."""


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a bearer token, or None: a client presents it in an
    ``Authorization`` header, so it is printable ASCII without spaces, 16-4096 characters."""
    if not 16 <= len(token) <= 4096:
        return f"is {len(token)} characters; a bearer token has 16 to 4096"
    if not all("!" <= ch <= "~" for ch in token):
        return "holds spaces, control or non-ASCII characters; a bearer token has none"
    return None


def token_line(token: str, tenant: str) -> str:
    """The token-file line storing ``token`` (as its sha256) for ``tenant``; raises
    TokenConfigError for a tenant or token that would not round-trip exactly."""
    problem = tenant_problem(tenant)
    if problem is not None:
        raise TokenConfigError(f"hash-token: tenant {problem}")
    problem = token_problem(token)
    if problem is not None:
        raise TokenConfigError(f"hash-token: the token {problem}")
    return f"sha256:{token_digest(token)}={tenant}"


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
            line = raw.strip()
            if not line or line.startswith("#"):  # a comment is a whole line
                continue
            token, sep, tenant = line.rpartition("=")
            token, tenant = token.strip(), tenant.strip()
            if not sep or not token or not tenant:
                raise TokenConfigError(
                    f"API tokens, entry {n}: expected token=tenant, got {len(line)} characters "
                    "without '=' or with an empty side"
                )
            problem = tenant_problem(tenant)
            if problem is not None:
                raise TokenConfigError(f"API tokens, entry {n}: tenant {problem}")
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
