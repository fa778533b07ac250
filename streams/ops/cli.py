"""The ``memstream`` command: the entry point, and the commands that run memstream's parts.

Worker, read service, MCP server, replay and models are here; the other commands register
from ``cli_stack`` and ``cli_data`` (imported below), on the apps of ``cli_app``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from streams.common.exceptions import MemstreamError
from streams.ops import cli_data, cli_stack  # noqa: F401 - importing them registers their commands
from streams.ops.cli_app import app, current_settings, models_app, say

__all__ = ["app", "main"]


# -- worker ------------------------------------------------------------------------------------
@app.command("worker")
def worker(
    agents: Annotated[
        str | None,
        typer.Option("--agents", help="comma-separated subset of the agents (default: all)"),
    ] = None,
    plain_logs: Annotated[bool, typer.Option("--plain-logs", help="text logs, not JSON")] = False,
) -> None:
    """Run the agents with exactly-once transactions until SIGTERM/SIGINT."""
    from agents.worker import AGENT_NAMES, run_worker
    from streams.common.logs import configure_logging

    configure_logging(json_lines=not plain_logs)
    names = [a.strip() for a in agents.split(",") if a.strip()] if agents else list(AGENT_NAMES)
    ready = logging.getLogger("memstream").info
    try:
        run_worker(current_settings(), names, on_ready=lambda: ready("ready"))
    except MemstreamError as exc:
        if not exc.retriable:
            raise  # a configuration or data error: main() prints it, exit code 2
        # A restore that stalled, a store used after its partition left: crash-only, like a
        # fatal Kafka error; the supervisor's restart resumes (exit code 1, not 2).
        logging.getLogger("memstream").critical("exiting for a restart: %s", exc)
        raise typer.Exit(1) from exc


@app.command("stats")
def stats() -> None:
    """Per-stage counts: ingested = memories + merged + deleted + dead-lettered + in flight."""
    from streams.ops.stats import pipeline_stats

    result = pipeline_stats(current_settings())
    typer.echo(f"{'topic':<16} {'records':>9} {'unprocessed':>12}")
    for topic, count in result.records.items():
        lag = result.lag.get(topic)
        typer.echo(f"{topic:<16} {count:>9} {'' if lag is None else lag:>12}")
    typer.echo(
        f"\ningested {result.ingested} = memories {result.memories} + merged {result.merged}"
        f" + in deleted memories {result.deleted_events}"
        f" + dead-lettered {result.dead_lettered} + in flight {result.in_flight}"
    )
    for (agent, source, reason), count in sorted(result.dead_letter_detail.items()):
        typer.echo(f"  dead letters from {agent} on {source}: {count} {reason}")


# -- read service -------------------------------------------------------------------------------
@app.command("serve")
def serve(
    port: Annotated[
        int | None, typer.Option("--port", help="overrides MEMSTREAM_SERVE_PORT")
    ] = None,
    plain_logs: Annotated[bool, typer.Option("--plain-logs", help="text logs, not JSON")] = False,
) -> None:
    """The read service: materialize memories.v1 and summaries.v1, serve recall over HTTP."""
    from streams.common.logs import configure_logging
    from streams.service.run import serve as run_serve

    configure_logging(json_lines=not plain_logs)
    settings = current_settings()
    if port is not None:
        settings = settings.model_copy(update={"serve_port": port})
    run_serve(settings)


@app.command("context")
def context(
    session: Annotated[str, typer.Option("--session", help="the session to build context for")],
    budget: Annotated[
        int, typer.Option("--budget", min=16, max=100_000, help="tokens the pack may use")
    ] = 1024,
    query: Annotated[
        str | None, typer.Option("--query", help="what the session is about now")
    ] = None,
) -> None:
    """Print a session's context pack as text (for an assistant's compaction/start hook)."""
    from streams.sdk.client import MemoryClient, pack_text

    settings = current_settings()
    if settings.serve_token is None:
        raise typer.BadParameter("set MEMSTREAM_SERVE_TOKEN (or MEMSTREAM_SERVE_TOKEN_FILE): a "
                                 "bearer token of the read service")
    with MemoryClient(settings.read_service_url, settings.serve_token.get_secret_value()) as client:
        pack = client.context(session, query or None, token_budget=budget)
    typer.echo(pack_text(pack, session), nl=False)


@app.command("mcp")
def mcp(
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (launched by the assistant) or http")
    ] = "stdio",
    port: Annotated[
        int | None, typer.Option("--port", help="http: overrides MEMSTREAM_MCP_PORT")
    ] = None,
) -> None:
    """The MCP server: tools remember, recall, context, forget; session summaries as resources."""
    if transport not in ("stdio", "http"):
        raise typer.BadParameter(f"--transport {transport!r}: stdio or http")
    try:
        from streams.mcp.server import run as run_mcp
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("mcp"):
            raise
        say("error: `memstream mcp` needs the mcp extra: pip install 'memstream[mcp]'")
        raise typer.Exit(2) from None
    settings = current_settings()
    if port is not None:
        settings = settings.model_copy(update={"mcp_port": port})
    run_mcp(settings, "stdio" if transport == "stdio" else "http")


@app.command("rebuild-index")
def rebuild_index(
    jobs: Annotated[
        int, typer.Option(help="processes, each over a share of the partitions; 0: one per CPU")
    ] = 0,
) -> None:
    """Rebuild the read service's snapshot from memories.v1 (no re-embedding)."""
    from streams.service.rebuild import rebuild_index as run_rebuild

    settings = current_settings()
    with typer.progressbar(length=1, label="memories.v1 + summaries.v1", file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        report = run_rebuild(settings, progress, jobs or None)
    typer.echo(
        f"rebuilt {report.snapshot}: {report.memories} memories from {report.records} records "
        f"in {report.seconds:.1f}s ({report.rate:,.0f} records/s, {report.jobs} processes)"
    )


@app.command("hash-token")
def hash_token(
    tenant: Annotated[str, typer.Argument(help="the tenant the token maps to")],
) -> None:
    """Print a MEMSTREAM_API_TOKENS_FILE line that stores a token as its sha256 digest.

    The token is read from stdin (one line), or asked for without echo on a terminal: never
    from the command line, where `ps` and shell history would show it."""
    import getpass

    from streams.common.tokens import token_line

    if sys.stdin.isatty():
        token = getpass.getpass("token (not echoed): ")
    else:
        token = sys.stdin.readline().rstrip("\r\n")
    typer.echo(token_line(token, tenant))


@app.command("replay")
def replay(
    topics: Annotated[
        list[str] | None, typer.Option("--topic", help="input topic to reset (repeatable); "
                                       "default: every input topic of the app")
    ] = None,
    from_offset: Annotated[
        list[str] | None, typer.Option("--from-offset", help="P:O, repeatable (needs one --topic)")
    ] = None,
    from_timestamp: Annotated[
        str | None, typer.Option("--from-timestamp", help="ISO 8601 time, e.g. 2026-11-25T10:00Z")
    ] = None,
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="from the beginning")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest", help="skip to the end")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be reset")] = False,
) -> None:
    """Reset the app to reprocess from a point: offsets, local state, changelog topics."""
    from streams.ops.replay import ReplayRequest, plan_replay, run_replay

    request = ReplayRequest.from_cli(
        topics=topics or [], from_offsets=from_offset or [], from_timestamp=from_timestamp,
        to_earliest=to_earliest, to_latest=to_latest,
    )
    settings = current_settings()
    plan = plan_replay(settings, request)
    for line in plan.describe():
        typer.echo(line)
    if dry_run:
        typer.echo("dry run: nothing changed")
        return
    run_replay(settings, plan, progress=say)
    typer.echo("reset done: the next `memstream worker` reprocesses from there")


# -- models ----------------------------------------------------------------------------------
@models_app.command("export-onnx")
def models_export_onnx(
    out: Annotated[Path, typer.Option("--out", help="folder to write (new or empty)")],
    model: Annotated[
        str | None, typer.Option("--model", help="sentence-transformers model name or path; "
                                 "default: MEMSTREAM_EMBEDDING_MODEL")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="replace an export in --out")] = False,
) -> None:
    """Export the embedding model to ONNX (fp32 + int8) ahead of time (needs the torch extra);
    point MEMSTREAM_EMBEDDING_MODEL at the folder and loading needs no torch."""
    from streams.models.embedder import canonical_model_id, resolve_model_path
    from streams.models.onnx_export import export_onnx

    name = model or current_settings().embedding_model
    manifest = export_onnx(resolve_model_path(name), canonical_model_id(name), out,
                           replace=replace)
    typer.echo(
        f"exported {manifest.source_model_id} to {out} (variants: "
        f"{', '.join(sorted(manifest.variants))}); run with MEMSTREAM_EMBEDDING_MODEL={out}"
    )


def main() -> None:
    """Entry point: errors become one clear line and exit code 2, not a traceback."""
    from streams.common.logs import configure_logging

    configure_logging(json_lines=False)
    try:
        app()
    except MemstreamError as exc:
        from streams.common.redaction import redact

        say(f"error: {redact(str(exc))}")  # a broker or registry URL may carry credentials
        sys.exit(2)


if __name__ == "__main__":
    main()
