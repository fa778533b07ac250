"""The MCP server (official MCP Python SDK): tools remember / recall / context / forget and
the session summaries as resources, over stdio or streamable HTTP.

Over HTTP every request carries a bearer token of ``memstream serve``'s token list, which
names the tenant (``auth.TenantTokenVerifier``); over stdio the token and tenant come from
the settings. No tool takes a tenant argument, so none can reach another tenant.
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations at
# registration, and the text limit in them comes from the settings in create_server's scope.
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import anyio.to_thread
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import ToolAnnotations
from pydantic import AnyHttpUrl, BaseModel, Field

from streams.common.exceptions import MemstreamError
from streams.common.settings import Settings
from streams.common.tokens import TokenTable
from streams.mcp.auth import TenantTokenVerifier
from streams.mcp.exceptions import NotConfiguredError
from streams.mcp.memory import AssistantMemory, Caller

logger = logging.getLogger(__name__)

R = TypeVar("R")
Kind = Literal["NOTE", "QUERY", "RESPONSE", "TOOL_CALL", "OUTCOME"]
SESSION = Field(min_length=1, max_length=256,
                description="the conversation or project the memory belongs to, e.g. 'billing-api'")
MEMORY_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

INSTRUCTIONS = """memstream is this user's durable memory, shared across sessions and tools.
Call `remember` for facts, decisions and preferences worth keeping (one fact per call).
Call `recall` before answering questions that earlier work may have settled.
Call `context` at the start of a session, or after the context window was compacted, to
get the session's summary and relevant memories within a token budget.
Call `forget` with a memory id from `recall` when the user asks to delete something."""


REMEMBER = ("Store something in long-term memory (durable, survives this session). Repeats "
            "and near-repeats merge into one memory; a changed value for the same subject "
            "supersedes the old one. Content equal to a forgotten memory stays forgotten.")


class Remembered(BaseModel):
    """A write accepted by the log; the memory appears once the pipeline processed it."""

    event_id: str
    session: str
    kind: str
    consistency_token: str = Field(
        description="pass to recall/context to wait until this write is visible")


class Hit(BaseModel):
    """One recalled memory."""

    memory_id: str
    text: str
    similarity: float = Field(description="cosine similarity to the query, -1..1")
    value: float | None = Field(description="learned usefulness 0..1; null = no feedback yet")
    kind: str
    session: str
    occurrences: int = Field(description="how often this content (or a near duplicate) came up")
    event_time: str


class Recalled(BaseModel):
    """Memories, best first."""

    hits: list[Hit]
    caught_up: bool = Field(description="false: the latest writes were not yet visible")


class Piece(BaseModel):
    """A summary or a memory of a context pack."""

    type: str
    id: str
    text: str
    tokens: int
    source_ids: list[str]


class ContextPack(BaseModel):
    """A session's context: `text` is ready to read; `pieces` are its parts."""

    text: str
    tokens_used: int
    token_budget: int
    caught_up: bool
    pieces: list[Piece]


class Forgotten(BaseModel):
    """A delete written to the log; it reaches every replica, snapshot and export."""

    memory_id: str
    forgotten: bool
    applied: bool = Field(description="the read service already reflects it")
    consistency_token: str


def create_server(settings: Settings, *, transport: Literal["stdio", "http"],
                  memory: AssistantMemory | None = None) -> MCPServer[Any]:
    """The MCP server over a memory backend; ``transport`` decides where callers come from."""
    backend = memory or AssistantMemory(settings)
    caller = _stdio_caller(settings) if transport == "stdio" else _http_caller
    auth: dict[str, Any] = {}
    if transport == "http":
        table = TokenTable.parse(
            settings.api_tokens.get_secret_value() if settings.api_tokens else None)
        if not len(table):
            raise NotConfiguredError("memstream mcp --transport http: no bearer tokens: set "
                                     "MEMSTREAM_API_TOKENS or MEMSTREAM_API_TOKENS_FILE (the "
                                     "read service's list)")
        # No OAuth server: the SDK wants an issuer URL, but only advertises it with a
        # resource_server_url, which stays unset; the bearer tokens are checked locally.
        url = AnyHttpUrl(f"http://{settings.mcp_host}:{settings.mcp_port}")
        auth = {"token_verifier": TenantTokenVerifier(table),
                "auth": AuthSettings(issuer_url=url, resource_server_url=None)}

    @asynccontextmanager
    async def lifespan(_server: MCPServer[Any]) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(backend.close)

    server: MCPServer[Any] = MCPServer("memstream", instructions=INSTRUCTIONS,
                                       lifespan=lifespan, **auth)

    async def call(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        who = caller()
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, who, *args, **kwargs))
        except MemstreamError as exc:
            raise ToolError(str(exc)) from exc

    @server.tool(description=REMEMBER, annotations=ToolAnnotations(
        title="Remember", read_only_hint=False, destructive_hint=False, idempotent_hint=False))
    async def remember(
        text: Annotated[str, Field(min_length=1, max_length=settings.max_text_chars,
                                   description="the fact, decision or preference, self-contained "
                                   "(it is read later without this conversation)")],
        session: Annotated[str, SESSION],
        kind: Annotated[Kind, Field(description="NOTE for facts to keep; QUERY, RESPONSE, "
                                    "TOOL_CALL, OUTCOME record the steps of an interaction")]
        = "NOTE",
        metadata: Annotated[dict[str, str] | None, Field(
            description="optional string labels, e.g. {'project': 'billing'}")] = None,
    ) -> Remembered:
        """Store something in long-term memory."""
        done = await call(backend.remember, text, session, kind, metadata)
        return Remembered.model_validate(done)

    @server.tool(annotations=ToolAnnotations(title="Recall", read_only_hint=True,
                                             open_world_hint=False))
    async def recall(
        query: Annotated[str, Field(min_length=1, max_length=32_000,
                                    description="what to look for, in plain words")],
        k: Annotated[int, Field(ge=1, le=50, description="how many memories at most")] = 5,
        session: Annotated[str | None, Field(
            max_length=256, description="only this session's memories")] = None,
        kinds: Annotated[list[Kind] | None, Field(max_length=5,
                                                  description="only these kinds")] = None,
        min_value: Annotated[float | None, Field(
            ge=0, le=1, description="only memories at least this useful")] = None,
        since: Annotated[datetime | None, Field(description="only memories from this "
                                                "time on (ISO 8601)")] = None,
        until: Annotated[datetime | None, Field(description="only memories up to this "
                                                "time (ISO 8601)")] = None,
        consistency_token: Annotated[str | None, Field(
            max_length=4096, description="from remember: wait until that write is visible "
            "(writes through this server are waited for without it)")] = None,
    ) -> Recalled:
        """Search long-term memory by meaning; returns memories with their ids, best first."""
        found = await call(backend.recall, query, k=k, session_id=session,
                           kinds=list(kinds) if kinds else None, min_value=min_value,
                           time_from=since, time_to=until, consistency_token=consistency_token)
        return Recalled.model_validate(found)

    @server.tool(annotations=ToolAnnotations(title="Session context", read_only_hint=True,
                                             open_world_hint=False))
    async def context(
        session: Annotated[str, SESSION],
        token_budget: Annotated[int, Field(ge=16, le=100_000,
                                           description="tokens the pack may use at most")] = 1024,
        query: Annotated[str | None, Field(
            max_length=32_000, description="what the session is about now; without it, the "
            "session's newest memories")] = None,
        consistency_token: Annotated[str | None, Field(max_length=4096)] = None,
    ) -> ContextPack:
        """Get a session's summary and relevant memories as one text within a token budget."""
        pack = await call(backend.context, session, token_budget, query, consistency_token)
        return ContextPack.model_validate(pack)

    @server.tool(annotations=ToolAnnotations(title="Forget", read_only_hint=False,
                                             destructive_hint=True, idempotent_hint=True))
    async def forget(
        memory_id: Annotated[str, Field(pattern=MEMORY_ID,
                                        description="a memory_id that recall returned")],
    ) -> Forgotten:
        """Delete one memory for good (from every index, snapshot and export)."""
        return Forgotten.model_validate(await call(backend.forget, memory_id))

    @server.resource("memstream://sessions/{session}/summary", mime_type="text/markdown",
                     name="session-summary", title="Session summary",
                     description="the latest summaries of a session's time windows")
    async def session_summary(session: str) -> str:
        """A session's summaries, latest window first."""
        try:
            return await call(backend.summaries, session)
        except ToolError as exc:
            raise ResourceError(str(exc)) from exc

    return server


def _stdio_caller(settings: Settings) -> Callable[[], Caller]:
    if settings.serve_token is None:
        raise NotConfiguredError("memstream mcp over stdio: set MEMSTREAM_SERVE_TOKEN (or "
                                 "MEMSTREAM_SERVE_TOKEN_FILE), a bearer token of the read "
                                 "service; it decides the tenant")
    fixed = Caller(token=settings.serve_token.get_secret_value(), tenant=settings.mcp_tenant)
    return lambda: fixed


def _http_caller() -> Caller:
    access = get_access_token()
    if access is None:  # the SDK's auth middleware answers 401 before a tool runs
        raise ToolError("unauthenticated: send Authorization: Bearer <token>")
    return Caller(token=access.token, tenant=access.client_id)


def run(settings: Settings, transport: Literal["stdio", "http"]) -> None:
    """Serve until the client disconnects (stdio) or SIGINT/SIGTERM (http)."""
    server = create_server(settings, transport=transport)
    if transport == "stdio":
        server.run("stdio")
        return
    logger.info("memstream mcp on http://%s:%s/mcp, read service %s", settings.mcp_host,
                settings.mcp_port, settings.read_service_url)
    server.run("streamable-http", host=settings.mcp_host, port=settings.mcp_port)
