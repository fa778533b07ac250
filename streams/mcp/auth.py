"""Bearer tokens for the MCP server over HTTP: ``memstream serve``'s own token list."""

from __future__ import annotations

from mcp.server.auth.provider import AccessToken

from streams.common.tokens import TokenTable, token_digest


class TenantTokenVerifier:
    """An MCP SDK ``TokenVerifier``: a token of the list is valid and names its tenant."""

    def __init__(self, table: TokenTable) -> None:
        self._table = table

    async def verify_token(self, token: str) -> AccessToken | None:
        """The tenant as the client id; the token's digest as the subject, so the SDK binds
        each MCP session to the token that opened it."""
        tenant = self._table.tenant(token)
        if tenant is None:
            return None
        return AccessToken(token=token, client_id=tenant, scopes=[],
                           subject=token_digest(token)[:32])
