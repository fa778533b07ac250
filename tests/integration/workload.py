"""A known input stream for pipeline tests: tenants, sessions, exact and near duplicates,
late feedback and poison records, generated deterministically from a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from streams.sdk.events import Feedback, TelemetryEvent, VoiceNote

SUBJECTS = ["the billing service", "the search index", "the login page", "the nightly backup",
            "the payment webhook", "the mobile app", "the data export", "the audit log",
            "the rate limiter", "the cache cluster", "the email queue", "the report builder"]
ACTIONS = ["restart", "rotate the keys of", "scale up", "debug a timeout in", "migrate",
           "roll back", "profile", "monitor", "secure", "document", "load test", "upgrade"]
DETAILS = ["after the last deploy", "during peak traffic", "without downtime", "for tenant admins",
           "on the staging cluster", "before the quarterly audit", "with the new config",
           "when memory usage spikes", "in the eu region", "using the cli"]
TAILS = ["quickly", "safely", "today", "step by step", "again", "for the first time"]


@dataclass
class Workload:
    """What was produced, and what a correct pipeline must make of it."""

    telemetry: list[TelemetryEvent] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    poison_empty: list[TelemetryEvent] = field(default_factory=list)
    garbage: list[bytes] = field(default_factory=list)
    voice: list[VoiceNote] = field(default_factory=list)

    @property
    def valid_event_ids(self) -> set[str]:
        return {e.event_id for e in self.telemetry} | {v.event_id for v in self.voice}

    @property
    def ingested(self) -> int:
        """What ``memstream stats`` counts as ingested once every voice note is transcribed."""
        return len(self.telemetry) + len(self.voice)


def add_voice_notes(work: Workload, n_notes: int, seed: int = 7) -> None:
    """``n_notes`` spoken voice notes (espeak-ng), spread over the workload's tenants."""
    from bench.speech import SENTENCES, synthesize

    rng = random.Random(seed)
    tenants = sorted({e.tenant for e in work.telemetry}) or ["tenant-0"]
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    for i in range(n_notes):
        tenant = rng.choice(tenants)
        work.voice.append(VoiceNote(
            tenant=tenant, session_id=f"{tenant}-voice", codec="wav",
            audio=synthesize(SENTENCES[i % len(SENTENCES)]),
            event_id=f"voice-{seed}-{i:04d}", event_time=start + timedelta(seconds=i)))


def generate(n_events: int, tenants: int = 3, seed: int = 7) -> Workload:
    """``n_events`` telemetry events (~15% exact, ~10% near duplicates), feedback for about a
    third of the interactions (half of it late), 0.5% empty texts and a few garbage records."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    work = Workload()
    tenant_names = [f"tenant-{i}" for i in range(tenants)]
    texts: dict[str, list[str]] = {t: [] for t in tenant_names}
    interactions: list[tuple[TelemetryEvent, int]] = []
    for i in range(n_events):
        tenant = rng.choice(tenant_names)
        session = f"{tenant}-s{rng.randrange(max(1, n_events // 40))}"
        interaction = f"{session}-i{i}"
        roll = rng.random()
        if roll < 0.15 and texts[tenant]:
            text = rng.choice(texts[tenant])  # exact duplicate
        elif roll < 0.25 and texts[tenant]:
            text = rng.choice(texts[tenant]).rstrip("?.") + " " + rng.choice(TAILS) + "?"
        else:
            text = (f"How do I {rng.choice(ACTIONS)} {rng.choice(SUBJECTS)} "
                    f"{rng.choice(DETAILS)} (case {i})?")
            texts[tenant].append(text)
        event = TelemetryEvent(
            tenant=tenant, session_id=session, interaction_id=interaction,
            kind=rng.choice(["QUERY", "RESPONSE", "TOOL_CALL", "OUTCOME"]), text=text,
            outcome=rng.choice([None, "SUCCESS", "FAILURE", "PARTIAL"]),
            event_time=start + timedelta(seconds=i),
            event_id=f"ev-{seed}-{i:06d}",
        )
        work.telemetry.append(event)
        if rng.random() < 0.33:
            interactions.append((event, i))
        if rng.random() < 0.005:
            work.poison_empty.append(TelemetryEvent(
                tenant=tenant, session_id=session, interaction_id=interaction, kind="NOTE",
                text=" ", event_id=f"empty-{seed}-{i:06d}",
                event_time=start + timedelta(seconds=i)))
    for n, (event, i) in enumerate(interactions):
        late = n % 2 == 0
        work.feedback.append(Feedback(
            tenant=event.tenant, session_id=event.session_id,
            interaction_id=event.interaction_id, rating=round(rng.random(), 2),
            event_id=f"fb-{seed}-{i:06d}",
            event_time=event.event_time + timedelta(seconds=600 if late else 5)))
    work.garbage = [b"\x00\x00\x00\x00", b"not avro at all", b"\x07garbage"]
    return work
