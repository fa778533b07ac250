"""The ``memstream`` command."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from streams.common.exceptions import MemstreamError, ValidationError
from streams.common.settings import Settings, load_settings
from streams.ops.admin_cli import acls_app, migrate_deletions_command

app = typer.Typer(
    help="memstream: durable memory for AI assistants, on a Kafka-compatible log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(
    help="The local stack: Kafka (KRaft) + Apicurio Registry.", no_args_is_help=True
)
schemas_app = typer.Typer(help="Versioned Avro schemas.", no_args_is_help=True)
topics_app = typer.Typer(help="memstream's topics.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(schemas_app, name="schemas")
models_app = typer.Typer(help="The embedding and speech models.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(acls_app, name="acls")
app.command("migrate-deletions")(migrate_deletions_command)
app.add_typer(models_app, name="models")


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _settings() -> Settings:
    return load_settings()


# -- dev ------------------------------------------------------------------------------------
@dev_app.command("up")
def dev_up(
    no_provision: Annotated[
        bool, typer.Option("--no-provision", help="only start; skip topics and schemas")
    ] = False,
    auth: Annotated[
        bool, typer.Option("--auth", help="SASL/SCRAM and ACLs on (use a state dir and ports "
                                          "of its own); the admin's password is in "
                                          "<state>/dev/kafka/admin.secret")
    ] = False,
) -> None:
    """Install (first run), start Kafka and the registry, create topics, register schemas."""
    from pydantic import SecretStr

    from streams.ops.devstack.stack import DevStack

    settings = _settings()
    stack = DevStack(settings, auth=auth)
    for component in stack.up(_say):
        typer.echo(component.describe())
    if auth:
        conf = stack.admin_client_config()
        settings = settings.model_copy(update={
            "security_protocol": conf["security.protocol"],
            "sasl_mechanism": conf["sasl.mechanism"], "sasl_username": conf["sasl.username"],
            "sasl_password": SecretStr(str(conf["sasl.password"]))})
        _say(f"kafka: SASL/SCRAM on; admin password in {stack.kafka_dir / 'admin.secret'}")
    if not no_provision and _provision(settings):
        raise typer.Exit(1)


@dev_app.command("down")
def dev_down() -> None:
    """Stop what ``dev up`` started (and only that)."""
    from streams.ops.devstack.stack import DevStack

    DevStack(_settings()).down(_say)


@dev_app.command("status")
def dev_status() -> None:
    """What runs, where, and which versions; exit 1 unless both answer."""
    from streams.ops.devstack.stack import DevStack

    components = DevStack(_settings()).status()
    for component in components:
        typer.echo(component.describe())
    if not all(c.answering for c in components):
        raise typer.Exit(1)


def _provision(settings: Settings) -> int:
    """Create topics and register schemas; return how many topic configs differ."""
    from streams.common.admin import ensure_topics
    from streams.common.registry import register_all

    report = ensure_topics(settings)
    for name in report.created:
        _say(f"topic {name}: created")
    if report.unchanged:
        _say(f"topics unchanged: {len(report.unchanged)}")
    for conflict in report.conflicts:
        _say(f"CONFLICT {conflict}")
    register_all(settings, progress=_say)
    return len(report.conflicts)


# -- topics ---------------------------------------------------------------------------------
@topics_app.command("create")
def topics_create() -> None:
    """Create missing topics; report (and exit 1 on) existing ones whose config differs."""
    from streams.common.admin import ensure_topics

    report = ensure_topics(_settings())
    for name in report.created:
        typer.echo(f"created   {name}")
    for name in report.unchanged:
        typer.echo(f"unchanged {name}")
    for conflict in report.conflicts:
        typer.echo(f"CONFLICT  {conflict}")
    if report.conflicts:
        raise typer.Exit(1)


@topics_app.command("list")
def topics_list() -> None:
    """The declared topics, with their keys and configs."""
    from streams.common.topics import TOPICS

    settings = _settings()
    for spec in TOPICS:
        config = ", ".join(f"{k}={v}" for k, v in spec.config().items())
        typer.echo(f"{settings.topic(spec.base):<24} key={spec.key_field:<15} {config}")


# -- schemas --------------------------------------------------------------------------------
@schemas_app.command("check")
def schemas_check(
    directory: Annotated[Path | None, typer.Option("--dir", help="schema folder")] = None,
) -> None:
    """Check each version against all earlier ones under its topic's policy (no registry)."""
    from streams.common.schemas import SCHEMA_DIR, check_all, load_schema_versions
    from streams.common.topics import TOPICS

    folder = directory or SCHEMA_DIR
    policies = {t.schema: t.compatibility for t in TOPICS}
    versions = load_schema_versions(folder)
    problems = check_all(folder, {k: v for k, v in policies.items() if k in versions})
    for problem in problems:
        typer.echo(f"INCOMPATIBLE {problem}")
    if problems:
        raise typer.Exit(1)
    total = sum(len(v) for v in versions.values())
    typer.echo(f"ok: {total} schema versions in {len(versions)} subjects are compatible")


@schemas_app.command("register")
def schemas_register() -> None:
    """Check locally, then register every version and set each subject's compatibility."""
    from streams.common.registry import register_all

    schemas_check(None)
    register_all(_settings(), progress=typer.echo)


# -- produce / consume -----------------------------------------------------------------------
@app.command("produce")
def produce(
    topic: Annotated[str, typer.Argument(help="topic, e.g. telemetry.v1")],
    source: Annotated[str, typer.Argument(help="JSON-lines file, or - for stdin")] = "-",
) -> None:
    """Send JSON lines through the SDK; a bad line is reported (line N: field: reason) and
    skipped; end with `sent X, rejected Y` (exit 1 if Y > 0)."""
    from streams.common.topics import topic_spec
    from streams.sdk.producer import MemstreamProducer

    settings = _settings()
    try:
        topic_spec(topic, settings.topic_prefix)
    except KeyError as exc:
        _say(f"topic: {exc.args[0]}")
        raise typer.Exit(2) from None
    sent = 0
    rejected = 0
    with MemstreamProducer(settings) as producer:
        for lineno, line in _lines(source):
            try:
                producer.send_async(_from_json(line), topic=topic)
                sent += 1
            except ValidationError as exc:  # the line's JSON, or the event in it
                rejected += 1
                _reject(rejected, f"line {lineno}: {exc.field}: {exc}")
    if rejected > MAX_REPORTED_LINES:
        _say(f"... and {rejected - MAX_REPORTED_LINES} more")
    typer.echo(f"sent {sent}, rejected {rejected}")
    if rejected:
        raise typer.Exit(1)


MAX_REPORTED_LINES = 100


def _reject(count: int, message: str) -> None:
    if count <= MAX_REPORTED_LINES:
        _say(message)


def _lines(source: str) -> Iterator[tuple[int, str]]:
    stream = sys.stdin if source == "-" else Path(source).open(encoding="utf-8")  # noqa: SIM115
    try:
        for lineno, line in enumerate(stream, 1):
            if line.strip():
                yield lineno, line
    finally:
        if stream is not sys.stdin:
            stream.close()


def _from_json(line: str) -> dict[str, Any]:
    """One JSON line as an event record. JSON has no bytes or datetimes: ``audio_b64`` (base64)
    becomes ``audio``, an ISO-8601 ``event_time`` string a datetime."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"not JSON: {exc.msg} at column {exc.colno}",
                              field="<line>") from None
    except RecursionError:
        raise ValidationError("not JSON: nested too deeply", field="<line>") from None
    if not isinstance(record, dict):
        raise ValidationError(f"must be a JSON object, got {type(record).__name__}", field="<line>")
    if "audio_b64" in record:
        encoded = record.pop("audio_b64")
        if not isinstance(encoded, str):
            raise ValidationError(f"must be a base64 string, got {type(encoded).__name__}",
                                  field="audio_b64")
        try:
            record["audio"] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationError(f"is not valid base64: {exc}", field="audio_b64") from None
    if isinstance(record.get("event_time"), str):
        text = record["event_time"]
        try:
            record["event_time"] = datetime.fromisoformat(text)
        except ValueError:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise ValidationError(f"is not an ISO-8601 time: {shown!r}",
                                  field="event_time") from None
    return record


@app.command("consume")
def consume(
    topic: Annotated[str, typer.Argument(help="topic, e.g. telemetry.v1")],
    max_records: Annotated[int | None, typer.Option("--max", help="stop after N")] = None,
) -> None:
    """Print a topic's committed records from the beginning, decoded, as JSON lines."""
    from streams.common.reader import read_topic

    for record in read_topic(_settings(), topic, max_records=max_records):
        typer.echo(
            json.dumps(
                {
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": record.key,
                    "value": record.value,
                },
                default=_json_default,
            )
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    raise TypeError(type(value).__name__)


# -- export -----------------------------------------------------------------------------------
class _ProgressBar:
    """tqdm on stderr; silent when stderr is not a terminal or with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet or not sys.stderr.isatty()
        self._bar: Any = None

    def start(self, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="rec", unit_scale=True, file=sys.stderr,
                         desc="memories", leave=False)

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _since_ms(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"--since {value!r}: not an ISO 8601 date or time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@app.command("export-dataset")
def export_dataset(
    out: Annotated[Path, typer.Option("--out", help="dataset file to write")],
    min_value: Annotated[
        float, typer.Option("--min-value", help="keep memories whose value is at least this")
    ] = 0.0,
    since: Annotated[
        str | None, typer.Option("--since", help="only memories changed since (ISO 8601, UTC)")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or parquet (default: from --out)")
    ] = None,
    include_unknown: Annotated[
        bool, typer.Option("--include-unknown", help="also memories with no value yet")
    ] = False,
    include_superseded: Annotated[
        bool, typer.Option("--include-superseded",
                           help="also older values of changed facts (superseded memories)")
    ] = False,
    to_offsets: Annotated[
        Path | None,
        typer.Option("--to-offsets", help="a previous manifest: export exactly its offsets"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Write a deduplicated training dataset of the memories, with FILE.manifest.json."""
    from streams.ops.export.dataset import RowFilter
    from streams.ops.export.run import export_dataset as run_export
    from streams.ops.export.run import offsets_from_manifest

    settings = _settings()
    chosen = fmt or ("parquet" if out.suffix == ".parquet" else "jsonl")
    pinned = (
        offsets_from_manifest(to_offsets, settings.topic("memories.v1")) if to_offsets else None
    )
    bar = _ProgressBar(quiet)
    try:
        manifest = run_export(
            settings, out, fmt=chosen, to_offsets=pinned, progress=bar,
            row_filter=RowFilter(min_value=min_value, since_ms=_since_ms(since),
                                 include_unknown=include_unknown,
                                 include_superseded=include_superseded),
        )
    finally:
        bar.close()
    typer.echo(f"{manifest['rows']} rows -> {out} (sha256 {manifest['sha256']})")


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
    run_worker(_settings(), names, on_ready=lambda: logging.getLogger("memstream").info("ready"))


@app.command("stats")
def stats() -> None:
    """Per-stage counts: ingested = memories + merged + deleted + dead-lettered + in flight."""
    from streams.ops.stats import pipeline_stats

    result = pipeline_stats(_settings())
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
    settings = _settings()
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

    settings = _settings()
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
        _say("error: `memstream mcp` needs the mcp extra: pip install 'memstream[mcp]'")
        raise typer.Exit(2) from None
    settings = _settings()
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

    settings = _settings()
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
    settings = _settings()
    plan = plan_replay(settings, request)
    for line in plan.describe():
        typer.echo(line)
    if dry_run:
        typer.echo("dry run: nothing changed")
        return
    run_replay(settings, plan, progress=_say)
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

    name = model or _settings().embedding_model
    manifest = export_onnx(resolve_model_path(name), canonical_model_id(name), out,
                           replace=replace)
    typer.echo(
        f"exported {manifest.source_model_id} to {out} (variants: "
        f"{', '.join(sorted(manifest.variants))}); run with MEMSTREAM_EMBEDDING_MODEL={out}"
    )


# -- demo ------------------------------------------------------------------------------------
@app.command("demo")
def demo() -> None:
    """End to end on the local stack: up, produce a session, run the worker, show its memories."""
    from streams.ops.demo import run_demo

    # The demo prints what it explains; the in-process worker's INFO lines (models loaded,
    # partitions assigned) are not part of it. Warnings and errors still show.
    logging.getLogger().setLevel(logging.WARNING)
    from streams.ops.devstack.stack import DevStack

    settings = _settings()
    for component in DevStack(settings).up(_say):
        typer.echo(component.describe())
    if _provision(settings):
        # Topic configs that differ on the default prefix (listed above) do not stop the
        # demo: it runs on a prefix of its own, created with the declared configs.
        _say("(the CONFLICT lines concern the default prefix's topics; the demo uses its own)")
    run_demo(_settings(), typer.echo)


def main() -> None:
    """Entry point: errors become one clear line and exit code 2, not a traceback."""
    from streams.common.logs import configure_logging

    configure_logging(json_lines=False)
    try:
        app()
    except MemstreamError as exc:
        from streams.common.redaction import redact

        _say(f"error: {redact(str(exc))}")  # a broker or registry URL may carry credentials
        sys.exit(2)


if __name__ == "__main__":
    main()
