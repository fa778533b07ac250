"""`memstream mcp` with the MCP SDK's own client, against the real stack: Kafka + registry,
a real worker, a real `memstream serve`, and the MCP server as its own process (streamable
HTTP, and stdio launched by the client)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from streams.common.admin import ensure_topics
from streams.common.registry import register_all
from streams.common.settings import Settings, load_settings
from tests.integration.harness import REPO, start_worker, stop_worker, wait_ready, worker_settings
from tests.integration.service_harness import Service, free_port, service_env

T = TypeVar("T")
TOOLS = {"remember", "recall", "context", "forget"}


class McpServer:
    """`memstream mcp --transport http` as a process, next to a running `memstream serve`."""

    def __init__(self, settings: Settings, service: Service, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log = tmp / f"mcp-{self.port}.log"
        env = mcp_env(settings, service)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "mcp", "--transport", "http", "--port",
             str(self.port)], env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.post(self.url, json={}, timeout=2).status_code == 401:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"mcp server not up: {self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)


def mcp_env(settings: Settings, service: Service, **extra: str) -> dict[str, str]:
    env = service_env(settings, service.data_dir, service.port, service.tokens_file)
    env.update({"MEMSTREAM_SERVE_URL": service.url, "MEMSTREAM_CONSISTENCY_TIMEOUT_S": "30",
                **extra})
    return env


@pytest.fixture(scope="module")
def live(dev_stack, tmp_path_factory) -> Iterator[tuple[Settings, Service, McpServer]]:  # type: ignore[no-untyped-def]
    """A provisioned prefix with a worker (2 s summary windows), a read service and the
    MCP server over HTTP."""
    tmp = tmp_path_factory.mktemp("mcp")
    base = load_settings(bootstrap_servers=dev_stack.bootstrap,
                         schema_registry_url=dev_stack.registry_url,
                         topic_prefix=f"pytest.mcp.{uuid.uuid4().hex[:8]}.", partitions=2,
                         request_timeout_s=10.0)
    settings = worker_settings(base, tmp, summary_window_s=2.0, summary_grace_s=0.0)
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    log = tmp / "worker.log"
    worker = start_worker(settings, log)
    service = Service(settings, tmp)
    mcp: McpServer | None = None
    try:
        wait_ready(log, 0)
        service.start()
        mcp = McpServer(settings, service, tmp)
        yield settings, service, mcp
    finally:
        if mcp is not None:
            mcp.stop()
        if service.proc is not None:
            service.stop()
        assert stop_worker(worker) == 0, log.read_text()[-3000:]


def over_http(server: McpServer, token: str | None, use: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``use`` with an SDK client connected over streamable HTTP with ``token``."""
    async def main() -> T:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(90)) as http:
            async with Client(streamable_http_client(server.url, http_client=http)) as client:
                return await use(client)
    return asyncio.run(main())


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return dict(result.structured_content)


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result: CallToolResult = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return " ".join(getattr(block, "text", "") for block in result.content)


def test_lists_tools_with_schemas_and_the_summary_resource(live: Any) -> None:
    _settings, _service, server = live

    async def use(client: Client) -> None:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description and tool.output_schema
            for name, prop in tool.input_schema["properties"].items():
                assert prop.get("description") or name == "consistency_token", (tool.name, name)
        assert "tenant" not in str([t.input_schema for t in tools.values()])
        assert tools["remember"].input_schema["required"] == ["text", "session"]
        assert tools["forget"].annotations.destructive_hint
        assert tools["recall"].annotations.read_only_hint
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["memstream://sessions/{session}/summary"]

    over_http(server, "tok-acme", use)


def test_remember_recall_context_forget_round_trip(live: Any) -> None:
    _settings, _service, server = live
    fact = "The staging cluster's TLS certificates are renewed by the cert-bot job at 03:00."
    session = f"ops-{uuid.uuid4().hex[:6]}"

    async def use(client: Client) -> None:
        written = await ok(client, "remember", text=fact, session=session,
                           metadata={"project": "ops"})
        assert written["consistency_token"].startswith(live[0].topic("telemetry.v1"))
        # No token passed: the server waits for its own latest write.
        hits = (await ok(client, "recall", query="when are the TLS certificates renewed?",
                         k=3))["hits"]
        assert hits and hits[0]["text"] == fact and hits[0]["session"] == session
        assert hits[0]["kind"] == "NOTE"
        explicit = await ok(client, "recall", query=fact, k=1,
                            consistency_token=written["consistency_token"])
        assert explicit["caught_up"] and explicit["hits"][0]["memory_id"] == hits[0]["memory_id"]
        for budget in (16, 64, 2000):
            pack = await ok(client, "context", session=session, token_budget=budget,
                            query="TLS certificates")
            assert pack["tokens_used"] <= budget
            assert sum(p["tokens"] for p in pack["pieces"]) == pack["tokens_used"]
        assert fact in pack["text"] and hits[0]["memory_id"] in pack["text"]
        gone = await ok(client, "forget", memory_id=hits[0]["memory_id"])
        assert gone["forgotten"] and gone["applied"]
        after = await ok(client, "recall", query=fact, k=10)
        assert hits[0]["memory_id"] not in {h["memory_id"] for h in after["hits"]}
        message = await refused(client, "forget", memory_id=hits[0]["memory_id"])
        assert "no memory" in message

    over_http(server, "tok-acme", use)


def test_session_summary_resource(live: Any) -> None:
    _settings, _service, server = live
    session = f"sum-{uuid.uuid4().hex[:6]}"
    uri = f"memstream://sessions/{session}/summary"

    async def use(client: Client) -> None:
        await ok(client, "remember", text="Deploys to production need two approvals.",
                 session=session)
        first = (await client.read_resource(uri)).contents[0].text
        assert first.startswith("No summary")
        await asyncio.sleep(2.5)  # past the 2 s window: the next event closes it
        await ok(client, "remember", text="The release train leaves every Tuesday.",
                 session=f"{session}-next")
        text = (await client.read_resource(uri)).contents[0].text
        assert "two approvals" in text, text

    over_http(server, "tok-acme", use)

    async def other(client: Client) -> None:  # another tenant's token: not its session
        text = (await client.read_resource(uri)).contents[0].text
        assert text.startswith("No summary"), text

    over_http(server, "tok-globex", other)


def test_another_tenants_token_sees_nothing(live: Any) -> None:
    _settings, _service, server = live
    fact = "The finance team's payroll export runs on the 25th of every month."
    session = f"fin-{uuid.uuid4().hex[:6]}"

    async def write(client: Client) -> str:
        # A tenant argument is not in the schema and is ignored: the token decides.
        await ok(client, "remember", text=fact, session=session, tenant="globex")
        return str((await ok(client, "recall", query=fact, k=1))["hits"][0]["memory_id"])

    acme_id = over_http(server, "tok-acme", write)

    async def snoop(client: Client) -> None:
        hits = (await ok(client, "recall", query=fact, k=50))["hits"]
        assert acme_id not in {h["memory_id"] for h in hits}
        assert all(h["text"] != fact for h in hits)
        pack = await ok(client, "context", session=session, token_budget=2000, query=fact)
        assert fact not in pack["text"] and acme_id not in pack["text"]
        assert "no memory" in await refused(client, "forget", memory_id=acme_id)

    over_http(server, "tok-globex", snoop)
    still = over_http(server, "tok-acme",
                      lambda c: ok(c, "recall", query=fact, k=1))  # globex's forget did nothing
    assert still["hits"][0]["memory_id"] == acme_id


def test_hostile_inputs_are_refused(live: Any) -> None:
    settings, _service, server = live

    async def use(client: Client) -> None:
        assert await refused(client, "remember", text="", session="s")
        assert "blank" in await refused(client, "remember", text=" \n\t ", session="s")
        assert await refused(client, "remember", text="x" * (settings.max_text_chars + 1),
                             session="s")
        assert await refused(client, "remember", text="fine", session="")
        assert await refused(client, "remember", text="fine", session="s", kind="SECRET")
        too_many = {f"k{n}": "v" for n in range(40)}
        assert "metadata" in await refused(client, "remember", text="fine", session="s",
                                           metadata=too_many)
        assert await refused(client, "forget", memory_id="../../healthz")
        assert await refused(client, "recall", query="")
        assert await refused(client, "recall", query="x", k=10_000)
        assert await refused(client, "context", session="s", token_budget=0)
        assert "consistency token" in await refused(client, "recall", query="x",
                                                    consistency_token="nonsense")

    over_http(server, "tok-acme", use)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "tok-acme"},
                    {"Authorization": "Basic dG9rLWFjbWU6"}):
        r = httpx.post(server.url, json=init, headers={**accept, **headers}, timeout=10)
        assert r.status_code == 401, (headers, r.status_code)
        assert "tok-acme" not in r.text
    with pytest.raises(Exception):  # noqa: B017 - the SDK client fails to connect, any way
        over_http(server, None, lambda c: c.list_tools())
    # An MCP session belongs to the token that opened it: another tenant's token cannot use it.
    opened = httpx.post(server.url, json=init, timeout=10,
                        headers={**accept, "Authorization": "Bearer tok-acme"})
    assert opened.status_code == 200 and opened.headers.get("mcp-session-id")
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    hijack = httpx.post(server.url, json=listing, timeout=10, headers={
        **accept, "Authorization": "Bearer tok-globex", "MCP-Protocol-Version": "2025-06-18",
        "mcp-session-id": opened.headers["mcp-session-id"]})
    assert hijack.status_code in (403, 404), hijack.status_code


def test_stdio_transport_and_its_tenant_check(live: Any) -> None:
    settings, service, _server = live
    fact = "The on-call handbook lives in the ops wiki under Runbooks."

    def stdio(**extra: str) -> StdioServerParameters:
        return StdioServerParameters(command=sys.executable, args=["-m", "streams", "mcp"],
                                     env=mcp_env(settings, service, **extra), cwd=str(REPO))

    async def round_trip() -> None:
        async with Client(stdio(MEMSTREAM_SERVE_TOKEN="tok-acme")) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            await ok(client, "remember", text=fact, session="handbook")
            hits = (await ok(client, "recall", query="where is the on-call handbook?"))["hits"]
            assert hits[0]["text"] == fact

    async def mismatch() -> None:
        params = stdio(MEMSTREAM_SERVE_TOKEN="tok-acme", MEMSTREAM_MCP_TENANT="globex")
        async with Client(params) as client:
            message = await refused(client, "remember", text="must not land", session="s")
            assert "another" in message and "tok-acme" not in message

    asyncio.run(round_trip())
    asyncio.run(mismatch())


def test_context_command_prints_the_pack_for_a_hook(live: Any) -> None:
    settings, service, server = live
    fact = "Customer Globo's SLA allows four hours of downtime per quarter."
    session = f"hook-{uuid.uuid4().hex[:6]}"
    over_http(server, "tok-acme", lambda c: ok(c, "remember", text=fact, session=session))
    over_http(server, "tok-acme", lambda c: ok(c, "recall", query=fact))  # written through
    env = mcp_env(settings, service, MEMSTREAM_SERVE_TOKEN="tok-acme")
    run = subprocess.run([sys.executable, "-m", "streams", "context", "--session", session,
                          "--budget", "200"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert fact in run.stdout and f"session {session}" in run.stdout
    used = int(run.stdout.split("(")[1].split(" of ")[0])
    assert 0 < used <= 200
    bad = subprocess.run([sys.executable, "-m", "streams", "context", "--session", session],
                         env={**env, "MEMSTREAM_SERVE_TOKEN": "wrong"}, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == "" and "401" in bad.stderr
