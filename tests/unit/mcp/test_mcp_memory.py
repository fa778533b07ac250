"""The MCP server's memory operations with fakes, for the branches the real stack does not
reach on demand: a read service that is down, lags, or disagrees about a token's tenant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.common.exceptions import UnavailableError
from streams.common.settings import load_settings
from streams.mcp.exceptions import TenantMismatchError, ToolInputError
from streams.mcp.memory import AssistantMemory, Caller
from streams.sdk.client import NotCaughtUpError, NotFoundError, ServiceError, pack_text
from streams.sdk.producer import DeliveryResult

REPO = Path(__file__).resolve().parents[3]


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, event: Any) -> DeliveryResult:
        self.sent.append(event)
        return DeliveryResult("telemetry.v1", 1, 40 + len(self.sent), event.event_id)

    def close(self) -> None:
        pass


class FakeClient:
    """The read service as MemoryClient sees it; ``tenant`` None = unreachable."""

    def __init__(self, tenant: str | None, lagging: bool = False) -> None:
        self.tenant, self.lagging = tenant, lagging
        self.tokens_seen: list[str | None] = []

    def whoami(self) -> str:
        if self.tenant is None:
            raise UnavailableError("read service http://x: connection refused")
        if self.tenant == "401":
            raise ServiceError(401, "missing or unknown bearer token")
        return self.tenant

    def recall(self, query: str, **kw: Any) -> list[dict[str, Any]]:
        self.tokens_seen.append(kw["consistency_token"])
        if self.tenant is None:
            raise UnavailableError("read service http://x: connection refused")
        if self.lagging and kw["consistency_token"]:
            raise NotCaughtUpError(503, {"stage": "worker", "lag": 3})
        return [{"memory_id": "m1", "text": "t", "similarity": 0.5, "value": None,
                 "kind": "NOTE", "session_id": "s", "occurrence_count": 1,
                 "event_time": 0}]

    def delete(self, memory_id: str) -> dict[str, Any]:
        if memory_id != "m1":
            raise NotFoundError(404, "no memory")
        return {"applied": False, "consistency_token": "memories.v1:1:7"}

    def close(self) -> None:
        pass


def memory(client: FakeClient) -> tuple[AssistantMemory, FakeProducer]:
    producer = FakeProducer()
    return AssistantMemory(load_settings(), producer_factory=lambda _s: producer,
                           client_factory=lambda _u, _t: client), producer  # type: ignore[arg-type,return-value]


def test_recall_waits_for_every_earlier_write_of_the_tenant() -> None:
    client = FakeClient("acme")
    mem, _producer = memory(client)
    caller = Caller("tok", None)
    mem.recall(caller, "q")
    mem.remember(caller, "one", "s")
    mem.remember(caller, "two", "s")
    mem.forget(caller, "m1")
    assert mem.recall(caller, "q")["caught_up"]
    assert client.tokens_seen == [None, "memories.v1:1:7,telemetry.v1:1:42"]
    assert mem.latest_write("globex") is None
    assert mem.recall(caller, "q", consistency_token="telemetry.v1:1:1")["caught_up"]
    assert client.tokens_seen[-1] == "telemetry.v1:1:1"


def test_an_implicit_wait_that_runs_out_answers_flagged_not_caught_up() -> None:
    client = FakeClient("acme", lagging=True)
    mem, _producer = memory(client)
    caller = Caller("tok", None)
    mem.remember(caller, "one", "s")
    found = mem.recall(caller, "q")
    assert not found["caught_up"] and found["hits"][0]["memory_id"] == "m1"
    assert client.tokens_seen == ["telemetry.v1:1:41", None]
    with pytest.raises(NotCaughtUpError):  # a token the caller named is not waived
        mem.recall(caller, "q", consistency_token="telemetry.v1:1:41")


def test_a_write_never_lands_in_a_tenant_the_read_service_disagrees_with() -> None:
    mem, producer = memory(FakeClient("globex"))
    with pytest.raises(TenantMismatchError, match="another"):
        mem.remember(Caller("tok", "acme"), "secret", "s")
    mem401, producer401 = memory(FakeClient("401"))
    with pytest.raises(TenantMismatchError, match="401"):
        mem401.remember(Caller("tok", "acme"), "secret", "s")
    assert producer.sent == [] and producer401.sent == []


def test_writes_go_on_while_the_read_service_is_down_reads_do_not() -> None:
    client = FakeClient(None)
    mem, producer = memory(client)
    mem.remember(Caller("tok", "acme"), "kept", "s")
    assert [e.tenant for e in producer.sent] == ["acme"]
    with pytest.raises(UnavailableError):
        mem.recall(Caller("tok", "acme"), "q")
    with pytest.raises(UnavailableError):  # no tenant of its own: nothing to write as
        mem.remember(Caller("tok", None), "kept", "s")
    client.tenant = "globex"  # back up, and it disagrees: now refused
    with pytest.raises(TenantMismatchError):
        mem.remember(Caller("tok", "acme"), "kept", "s")


def test_remember_refuses_what_the_schema_lets_through() -> None:
    mem, producer = memory(FakeClient("acme"))
    caller = Caller("tok", None)
    for text, session, kind, metadata, field in [
        (" \n", "s", "NOTE", None, "text"), ("x", "  ", "NOTE", None, "session"),
        ("x", "s", "SECRET", None, "kind"),
        ("x", "s", "NOTE", {f"k{n}": "v" for n in range(33)}, "33 entries"),
        ("x", "s", "NOTE", {"k": "v" * 513}, "512"), ("x", "s", "NOTE", {"": "v"}, "key"),
    ]:
        with pytest.raises(ToolInputError, match=field):
            mem.remember(caller, text, session, kind, metadata)
    assert producer.sent == []
    mem.remember(caller, "x", "s", "OUTCOME", {"via": "other", "project": "p"})
    assert producer.sent[0].attributes == {"via": "other", "project": "p"}
    with pytest.raises(ToolInputError, match="no memory"):
        mem.forget(caller, "m2")


def test_pack_text_puts_summaries_before_memories() -> None:
    assert pack_text({"pieces": [], "tokens_used": 0, "token_budget": 9}, "s") == ""
    text = pack_text({"tokens_used": 7, "token_budget": 64, "pieces": [
        {"type": "memory", "id": "m1", "text": "a\nfact", "tokens": 2},
        {"type": "summary", "id": "x", "text": "the summary", "tokens": 5}]}, "s1")
    assert text.index("the summary") < text.index("- a fact [memory m1]")
    assert "session s1 (7 of 64 tokens)" in text


def test_the_cli_works_without_the_mcp_extra() -> None:
    code = ("import sys; sys.modules['mcp'] = None\n"
            "from typer.testing import CliRunner\n"
            "from streams.ops.cli import app\n"
            "r = CliRunner().invoke(app, ['mcp'])\n"
            "print(r.exit_code, r.output)\n"
            "print(CliRunner().invoke(app, ['hash-token', 'acme'],\n"
            "                         input='a-token-of-enough-length\\n').exit_code)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                     "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    first, last = run.stdout.strip().splitlines()[0], run.stdout.strip().splitlines()[-1]
    assert first.startswith("2 ") and "memstream[mcp]" in run.stdout and last == "0"
