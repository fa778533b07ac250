"""The demo's MCP step: `memstream mcp` over stdio, driven by the MCP SDK's own client the way
an assistant would drive it: list the tools, remember, recall (reading its own write), context."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from streams.common.exceptions import MemstreamError


class McpDemoError(MemstreamError):
    """A tool call of the demo's MCP step failed."""


async def mcp_round_trip(env: dict[str, str], session: str, say: Callable[[str], None]) -> None:
    """Launch `memstream mcp` over stdio with ``env`` and run one remember → recall → context."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "streams", "mcp"], env=env)
    with tempfile.TemporaryDirectory(prefix="memstream-demo-mcp-") as folder:
        log_path = Path(folder) / "mcp.log"
        with log_path.open("w") as log:
            try:
                async with Client(stdio_client(params, errlog=log)) as client:
                    await _calls(client, session, say)
            except McpDemoError:
                log.flush()
                say(f"  server log: {log_path.read_text()[-1500:]}")
                raise


async def _calls(client: Client, session: str, say: Callable[[str], None]) -> None:
    tools = (await client.list_tools()).tools
    say(f"  tools/list: {', '.join(t.name for t in tools)}")
    fact = "The team standup moved to 09:30 UTC on Mondays and Thursdays."
    done = await _call(client, "remember", text=fact, session=session)
    say(f"  remember {fact!r}\n    -> event {done['event_id'][:8]}, consistency token "
        f"{done['consistency_token']}")
    query = "What time is the standup now?"
    found = await _call(client, "recall", query=query, k=2)
    say(f"  recall {query!r} (no token passed: the server waits for its own last write)")
    for hit in found["hits"]:
        say(f"    {hit['similarity']:.3f}  {hit['memory_id'][:8]}  {hit['text']}")
    if not found["hits"] or found["hits"][0]["text"] != fact:
        raise McpDemoError(f"recall did not return the remembered fact first: {found}")
    pack = await _call(client, "context", session=session, token_budget=120,
                       query="standup time")
    say(f"  context session {session}, budget 120: {pack['tokens_used']} tokens, "
        f"{len(pack['pieces'])} pieces")


async def _call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise McpDemoError(f"MCP tool {tool} failed: {text}")
    return dict(result.structured_content)
