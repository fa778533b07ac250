"""The end-to-end demo: telemetry and feedback through the SDK, read back decoded."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from streams.events import Feedback, TelemetryEvent
from streams.producer import MemstreamProducer
from streams.reader import read_topic
from streams.settings import Settings


def run_demo(settings: Settings, say: Callable[[str], None]) -> None:
    """Produce one short session's events and show them as the log holds them."""
    session = f"demo-{uuid.uuid4().hex[:8]}"
    interaction = f"{session}-i1"
    events = [
        TelemetryEvent(tenant="acme", session_id=session, interaction_id=interaction,
                       kind="QUERY", text="How do I rotate the API keys for the billing service?"),
        TelemetryEvent(tenant="acme", session_id=session, interaction_id=interaction,
                       kind="RESPONSE", text="Run `billing keys rotate`, then restart the workers.",
                       model="demo-model", token_count=14),
        TelemetryEvent(tenant="acme", session_id=session, interaction_id=interaction,
                       kind="OUTCOME", text="Keys rotated; workers healthy.", outcome="SUCCESS"),
        Feedback(tenant="acme", session_id=session, interaction_id=interaction, rating=1.0,
                 label="helpful"),
    ]
    with MemstreamProducer(settings) as producer:
        for event in events:
            result = producer.send(event)
            say(f"sent {type(event).__name__:<15} -> {result.topic}[{result.partition}]"
                f"@{result.offset}")
    for topic in ("telemetry.v1", "feedback.v1"):
        say(f"\n{topic}, read back (read_committed, decoded through the registry):")
        for record in read_topic(settings, topic):
            value = record.value or {}
            if value.get("session_id") != session:
                continue
            say(f"  [{record.partition}]@{record.offset} {value.get('kind', 'FEEDBACK'):<9} "
                f"{value.get('text') or value.get('rating')}")
