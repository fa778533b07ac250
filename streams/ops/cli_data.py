"""``memstream produce``, ``consume`` and ``export-dataset``: records in and out, as files."""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from streams.common.exceptions import ValidationError
from streams.ops.cli_app import app, current_settings, say


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

    settings = current_settings()
    try:
        topic_spec(topic, settings.topic_prefix)
    except KeyError as exc:
        say(f"topic: {exc.args[0]}")
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
        say(f"... and {rejected - MAX_REPORTED_LINES} more")
    typer.echo(f"sent {sent}, rejected {rejected}")
    if rejected:
        raise typer.Exit(1)


MAX_REPORTED_LINES = 100


def _reject(count: int, message: str) -> None:
    if count <= MAX_REPORTED_LINES:
        say(message)


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

    for record in read_topic(current_settings(), topic, max_records=max_records):
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

    settings = current_settings()
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
