"""The score+dedupe work written in Quix Streams, exactly-once with RocksDB state.

``bench.peers`` runs it as a process of its own in the quix venv (quixstreams 3.x needs an
older confluent-kafka than memstream locks). The same two stages as memstream's score and
memorize agents, peer-minimal (what a Quix user would write, no more):

- score: decode Avro telemetry (schema from the registry) → ``ValueScorer`` (memstream's
  own scorer and config) → a scored.v1 record, keyed by tenant;
- dedupe: decode scored → look the content hash up in state (Quix keys state by the message
  key: the tenant) → merge the memory record, vector included, as memorize merges an exact
  duplicate → produce memories.v1.

Content seen for the first time gets a deterministic stand-in vector (no model here): the
timed passes of the benchmark are exact duplicates only, as memstream's are. Quix state is
JSON, so the vector is kept in it as base64.

    MEMSTREAM_VENV=.venv-quix MEMSTREAM_EXTRAS=quix make install
    PYTHONPATH=. .venv-quix/bin/python -m bench.quix_peer --prefix P. --group G --state-dir D
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from quixstreams import Application, State
from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer
from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig

from agents.dedupe import content_hash, memory_id
from agents.scoring import ScoreInputs, ValueScorer, load_scorer_config
from streams.common.registry import latest_schema
from streams.common.settings import load_settings
from streams.common.topics import memory_key

logger = logging.getLogger(__name__)

MAX_SOURCES = 1000  # as agents.memorize
DIMENSION = 384  # all-MiniLM-L6-v2's, so records are as large as memstream's
MODEL_ID = "bench-stand-in"


def to_millis(value: Any) -> int:
    """Avro timestamp-millis as decoded (datetime) or given (int) → epoch milliseconds."""
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def stand_in_vector(text: str) -> str:
    """A deterministic 384 × float32 vector's bytes, base64 (Quix state is JSON)."""
    seed = hashlib.sha256(text.encode()).digest()
    return base64.b64encode((seed * (DIMENSION * 4 // len(seed)))[: DIMENSION * 4]).decode()


class Stages:
    """The two stages' functions, over memstream's scorer."""

    def __init__(self, scorer: ValueScorer) -> None:
        self.scorer = scorer

    def score(self, v: dict[str, Any]) -> dict[str, Any]:
        """One telemetry event → its scored.v1 record (no feedback, no memory signal)."""
        kind = v.get("kind") or "TRANSCRIPT"
        s = self.scorer.score(ScoreInputs(
            kind=kind, text=v["text"], outcome=v.get("outcome"), feedback_rating=None,
            occurrence_count=1, nearest_similarity=None))
        return {
            "tenant": v["tenant"], "event_id": v["event_id"],
            "event_time": to_millis(v["event_time"]), "session_id": v["session_id"],
            "interaction_id": v.get("interaction_id"), "kind": kind, "text": v["text"],
            "source_topic": "telemetry.v1", "value": s.value, "confidence": s.confidence,
            "needs_feedback": s.needs_feedback, "components": dict(s.components),
            "scorer_version": s.scorer_version, "revision": 0,
            "content_hash": content_hash(v["text"]),
        }

    @staticmethod
    def dedupe(v: dict[str, Any], state: State) -> dict[str, Any]:
        """Merge the event into the memory of its content (created on first sight)."""
        memory = state.get(v["content_hash"])
        event_time = to_millis(v["event_time"])
        if memory is None:
            memory = {
                "tenant": v["tenant"], "memory_id": memory_id(v["tenant"], v["text"]),
                "event_id": v["event_id"], "event_time": event_time,
                "session_id": v["session_id"], "kind": v["kind"], "text": v["text"],
                "content_hash": v["content_hash"], "embedding": stand_in_vector(v["text"]),
                "model_id": MODEL_ID, "dimension": DIMENSION, "value": v["value"],
                "confidence": v["confidence"], "occurrence_count": 1,
                "source_event_ids": [v["event_id"]], "merges": [], "deleted": False,
                "scorer_version": v["scorer_version"], "valid_from": event_time,
                "supersedes": None, "superseded_by": None, "superseded_at": None,
            }
        elif v["event_id"] not in memory["source_event_ids"]:
            memory["occurrence_count"] += 1
            memory["source_event_ids"] = (memory["source_event_ids"]
                                          + [v["event_id"]])[-MAX_SOURCES:]
            memory["merges"] = (memory["merges"] + [
                {"event_id": v["event_id"], "similarity": 1.0, "match": "exact"}])[-MAX_SOURCES:]
            memory["event_id"] = v["event_id"]
            memory["event_time"] = max(memory["event_time"], event_time)
            if v["value"] is not None:
                memory["value"], memory["confidence"] = v["value"], v["confidence"]
                memory["scorer_version"] = v["scorer_version"]
        state.set(v["content_hash"], memory)
        return {**memory, "embedding": base64.b64decode(memory["embedding"])}


def build_app(args: argparse.Namespace) -> Application:
    """The Quix application: both stages in one app, so one transaction carries both."""
    settings = load_settings(topic_prefix=args.prefix)
    registry = SchemaRegistryClientConfig(url=settings.schema_registry_url)
    app = Application(
        broker_address=settings.bootstrap_servers, consumer_group=args.group,
        auto_offset_reset="earliest", processing_guarantee="exactly-once",
        state_dir=args.state_dir, commit_interval=args.commit_interval,
        commit_every=args.commit_every, loglevel="WARNING",
        producer_extra_config={"compression.type": settings.worker_compression,
                               "linger.ms": 5},
    )
    telemetry = app.topic(settings.topic("telemetry.v1"), key_deserializer="str",
                          value_deserializer=AvroDeserializer(
                              schema_registry_client_config=registry))
    scored = app.topic(settings.topic("scored.v1"), key_serializer="str",
                       key_deserializer="str",
                       value_serializer=AvroSerializer(latest_schema("scored"),
                                                       schema_registry_client_config=registry),
                       value_deserializer=AvroDeserializer(
                           schema_registry_client_config=registry))
    memories = app.topic(settings.topic("memories.v1"), key_serializer="str",
                         value_serializer=AvroSerializer(latest_schema("memory"),
                                                         schema_registry_client_config=registry))
    stages = Stages(ValueScorer(load_scorer_config(settings.scorer_config)))
    app.dataframe(telemetry).apply(stages.score).to_topic(scored, key=lambda v: v["tenant"])
    app.dataframe(scored).apply(stages.dedupe, stateful=True).to_topic(
        memories, key=lambda m: memory_key(m["tenant"], m["memory_id"]))
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM (Quix stops after committing its checkpoint)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="memstream topic prefix of the run")
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--commit-every", type=int, default=256)
    parser.add_argument("--commit-interval", type=float, default=0.1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    build_app(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
