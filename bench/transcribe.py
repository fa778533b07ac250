"""Transcription benchmark: the transcribe agent's speed as a share of faster-whisper's own.

Over the same espeak-ng clips, in one run: faster-whisper called directly (one
``WhisperModel``, ``model.transcribe(file)`` clip after clip, its own decoder) and
``TranscribeAgent.process()`` on one batch of the same clips as ``voice.v1`` records
(bounded decoding, silence check, pool of ``--concurrency`` threads, records built for
``transcripts.v1``). ``direct c=N`` is faster-whisper's own concurrency (N threads on a
model with N replicas), the like-for-like baseline of ``agent c=N``. ``--worker`` adds a
real worker. Speed is audio seconds per wall second (× real time); the real-time factor
(RTF) is its inverse; ``÷ direct`` is the median over repeats of each repeat's speed ratio
to the plain sequential call. Prints a table and, last, one JSON line.

    PYTHONPATH=. python -m bench.transcribe --clips 24 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from agents.deadletter import DeadLetterReason
from agents.models.audio import decode_clip
from agents.models.transcriber import WhisperTranscriber, resolve_whisper_model
from agents.transcribe import TranscribeAgent
from bench.speech import SENTENCES, corpus_wer, reencode, synthesize
from streams.observability import WorkerMetrics
from streams.processing.runtime import InputRecord

TARGET = 0.9  # agent speed ÷ direct faster-whisper speed


class CollectingContext:
    """Stands in for the batch context: keeps what the agent sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.letters: list[tuple[int, DeadLetterReason, str]] = []

    def send(self, topic: str, record: dict[str, Any], *, key: str) -> None:
        self.sent.append(record)

    def dead_letter(self, record: InputRecord, reason: DeadLetterReason, detail: str, *,
                    tenant: str | None = None) -> None:
        self.letters.append((record.offset, reason, detail))


def make_clips(n: int, fmt: str) -> list[tuple[str, bytes]]:
    """``n`` clips of one to three sentences each (about 4-12 s), encoded as ``fmt``."""
    clips = []
    for i in range(n):
        count = 1 + i % 3
        text = " ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(count))
        wav = synthesize(text)
        clips.append((text, wav if fmt == "wav" else reencode(wav, fmt)))
    return clips


def run_direct(model: Any, clips: list[tuple[str, bytes]], beam: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    texts = []
    for _text, audio in clips:
        segments, _info = model.transcribe(io.BytesIO(audio), beam_size=beam)
        texts.append(" ".join(s.text.strip() for s in segments))
    return time.perf_counter() - started, texts


def run_direct_pool(model: Any, clips: list[tuple[str, bytes]], beam: int,
                    workers: int) -> tuple[float, list[str]]:
    """faster-whisper's own concurrency: ``workers`` threads on a model with as many replicas."""
    from concurrent.futures import ThreadPoolExecutor

    def one(audio: bytes) -> str:
        segments, _info = model.transcribe(io.BytesIO(audio), beam_size=beam)
        return " ".join(s.text.strip() for s in segments)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        texts = list(pool.map(one, [a for _t, a in clips]))
    return time.perf_counter() - started, texts


def run_agent(agent: TranscribeAgent, records: list[InputRecord]) -> tuple[float, list[str]]:
    ctx = CollectingContext()
    started = time.perf_counter()
    agent.process(records, ctx)  # type: ignore[arg-type]
    wall = time.perf_counter() - started
    if ctx.letters or len(ctx.sent) != len(records):
        raise RuntimeError(f"agent dead-lettered clips: {ctx.letters}")
    return wall, [r["text"] for r in ctx.sent]


def run_worker_path(
    clips: list[tuple[str, bytes]], fmt: str, args: argparse.Namespace
) -> tuple[float, list[str]]:
    """``memstream worker`` (transcribe only, in a thread) over the clips sent as voice notes
    through the SDK on a fresh topic prefix: seconds from ready until the last transcript is
    committed (group join included), and the texts in input order."""
    import tempfile
    import uuid

    from confluent_kafka import Consumer

    from bench.pipeline import WorkerThread, delete_prefixed_topics
    from streams.admin import ensure_topics
    from streams.codec import AvroCodec
    from streams.producer import MemstreamProducer
    from streams.registry import latest_schema, register_all, registry_client
    from streams.settings import load_settings

    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            topic_prefix=f"bench.transcribe.{run}.", app_id=f"bench-transcribe-{run}",
            data_dir=tmp, metrics_port=0, whisper_beam_size=args.beam_size,
            whisper_compute_type=args.compute_type, whisper_model=args.model,
            whisper_concurrency=args.worker_concurrency, voice_max_seconds=3600,
        )
        ensure_topics(settings)
        register_all(settings, progress=lambda _m: None)
        try:
            ids = []
            with MemstreamProducer(settings) as producer:
                for i, (_text, audio) in enumerate(clips):
                    result = producer.voice_note(audio, codec=fmt, tenant=f"t{i % 3}",
                                                 session_id=f"s{i}")
                    ids.append(result.event_id)
            consumer = Consumer({**settings.kafka_client_config(), "group.id": f"b-{run}",
                                 "isolation.level": "read_committed",
                                 "auto.offset.reset": "earliest", "log_level": 3})
            consumer.subscribe([settings.topic("transcripts.v1")])
            codec = AvroCodec(registry_client(settings))
            schema = latest_schema("transcript")
            worker = WorkerThread(settings, ("transcribe",))
            worker.start(time.perf_counter() + 120)
            texts: dict[str, str] = {}
            deadline = time.perf_counter() + 1800
            while len(texts) < len(ids) and time.perf_counter() < deadline:
                worker.check()
                for msg in consumer.consume(100, timeout=0.2):
                    if msg.error() is None and msg.value() is not None:
                        value = codec.decode(msg.value(), schema)
                        texts[value["event_id"]] = value["text"]
            wall = time.perf_counter() - worker.ready_at
            worker.close()
            consumer.close()
            return wall, [texts.get(i, "") for i in ids]
        finally:
            delete_prefixed_topics(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--format", default="ogg", choices=["wav", "flac", "ogg", "mp3"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2],
                        help="agent pool sizes to try (threads per replica = cpu-threads ÷ it)")
    parser.add_argument("--worker", action="store_true",
                        help="also time a real worker (needs the local stack), once per repeat")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args(argv)

    began = time.perf_counter()
    clips = make_clips(args.clips, args.format)
    audio_s = sum(decode_clip(a, max_seconds=3600).seconds for _t, a in clips)
    refs = [t for t, _a in clips]
    print(f"{len(clips)} {args.format} clips, {audio_s:.1f} s of audio, "
          f"{sum(len(a) for _t, a in clips) / 1e6:.2f} MB", flush=True)

    from faster_whisper import WhisperModel

    model = WhisperModel(resolve_whisper_model(args.model), device="cpu",
                         compute_type=args.compute_type, cpu_threads=args.cpu_threads)
    pooled = {c: WhisperModel(resolve_whisper_model(args.model), device="cpu",
                              compute_type=args.compute_type,
                              cpu_threads=max(1, args.cpu_threads // c), num_workers=c)
              for c in args.concurrency if c > 1}
    agents = {}
    for conc in args.concurrency:
        threads = max(1, args.cpu_threads // conc)
        transcriber = WhisperTranscriber(args.model, compute_type=args.compute_type,
                                         beam_size=args.beam_size, cpu_threads=threads,
                                         workers=conc)
        agents[conc] = TranscribeAgent(transcriber, concurrency=conc, max_seconds=3600,
                                       silence_dbfs=-50, metrics=WorkerMetrics())
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    records = [
        InputRecord("voice.v1", 0, i, b"s", None, {
            "tenant": "bench", "event_id": f"v{i}", "event_time": t0, "session_id": "s",
            "interaction_id": None, "codec": args.format, "sample_rate": None,
            "audio": audio, "duration_ms": None})
        for i, (_t, audio) in enumerate(clips)
    ]
    # Warm-up: one clip each, untimed.
    run_direct(model, clips[:1], args.beam_size)
    for agent in agents.values():
        run_agent(agent, records[:1])

    walls: dict[str, list[float]] = {"direct": [], **{f"direct c={c}": [] for c in pooled},
                                     **{f"agent c={c}": [] for c in agents}}
    if args.worker:
        walls[f"worker c={args.worker_concurrency}"] = []
    texts: dict[str, list[str]] = {}
    for rep in range(args.repeats):
        # Alternate the order so that drift on a shared machine hits both sides.
        order = list(walls) if rep % 2 == 0 else list(reversed(walls))
        for name in order:
            if name == "direct":
                wall, out = run_direct(model, clips, args.beam_size)
            elif name.startswith("direct c="):
                c = int(name.split("=")[1])
                wall, out = run_direct_pool(pooled[c], clips, args.beam_size, c)
            elif name.startswith("worker"):
                wall, out = run_worker_path(clips, args.format, args)
            else:
                wall, out = run_agent(agents[int(name.split("=")[1])], records)
            walls[name].append(wall)
            texts[name] = out
            print(f"  run {rep + 1} {name}: {wall:.2f} s ({audio_s / wall:.1f}x real time)",
                  flush=True)

    # On a shared machine, load drifts between passes: the ratio of each repeat's two
    # back-to-back passes (paired) is steadier than a ratio of medians.
    rows = []
    print(f"\n{'path':<14} {'wall s (min/med/max)':>24} {'x real time':>12} {'RTF':>7} "
          f"{'÷ direct':>9} {'WER':>6}")
    for name, ws in walls.items():
        med = statistics.median(ws)
        speed = audio_s / med
        ratio = statistics.median(d / w for d, w in zip(walls["direct"], ws, strict=True))
        wer = corpus_wer(list(zip(refs, texts[name], strict=True)))
        rows.append({"path": name, "walls": [round(w, 3) for w in ws], "speed": round(speed, 2),
                     "rtf": round(med / audio_s, 4), "ratio": round(ratio, 3),
                     "wer": round(wer, 4)})
        spread = f"{min(ws):.2f} / {med:.2f} / {max(ws):.2f}"
        print(f"{name:<14} {spread:>24} {speed:>12.1f} {med / audio_s:>7.3f} {ratio:>9.2f} "
              f"{wer:>6.3f}")
    best = max(r["ratio"] for r in rows if not r["path"].startswith("direct"))
    print(f"\nbest agent ÷ direct (median of paired repeats): {best:.2f} (target ≥ {TARGET}) "
          f"{'met' if best >= TARGET else 'NOT met'}; total {time.perf_counter() - began:.0f} s")
    import ctranslate2
    import faster_whisper

    print(json.dumps({
        "clips": len(clips), "format": args.format, "audio_s": round(audio_s, 2),
        "model": args.model, "compute_type": args.compute_type, "beam_size": args.beam_size,
        "cpu_threads": args.cpu_threads, "rows": rows, "best_ratio": round(best, 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "faster_whisper": faster_whisper.__version__,
                    "ctranslate2": ctranslate2.__version__,
                    "load": os.getloadavg()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
