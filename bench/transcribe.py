"""Transcription benchmark: the transcribe agent's speed as a share of faster-whisper's own.

Over the same espeak-ng clips, in one run: faster-whisper called directly (one
``WhisperModel``, ``model.transcribe(file)`` clip after clip, its own decoder) and
``TranscribeAgent.process()`` on one batch of the same clips as ``voice.v1`` records
(bounded decoding, silence check, pool of ``--concurrency`` threads, records built for
``transcripts.v1``). ``direct c=N`` is faster-whisper's own concurrency (N threads on a
model with N replicas), the like-for-like baseline of ``agent c=N``. ``--worker`` adds a
real worker. Speed is audio seconds per wall second (× real time); the real-time factor
(RTF) is its inverse; ``÷ direct`` is the median, over groups of ``--group`` clips run by
every path back to back, of the speed ratio to the plain sequential call (the worker: per
repeat, over all clips). ``audio s/CPU s`` uses the process's CPU time, which the other
load of a shared machine disturbs less than wall time. Prints a table, then one JSON line.

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

from agents.transcribe import TranscribeAgent
from bench.speech import SENTENCES, corpus_wer, reencode, synthesize
from streams.common.observability import WorkerMetrics
from streams.models.audio import decode_clip
from streams.models.transcriber import WhisperTranscriber, resolve_whisper_model
from streams.processing.api import InputRecord
from streams.processing.deadletter import DeadLetterReason

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
    from streams.common.admin import ensure_topics
    from streams.common.codec import AvroCodec
    from streams.common.registry import latest_schema, register_all, registry_client
    from streams.common.settings import load_settings
    from streams.sdk.producer import MemstreamProducer

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
    parser.add_argument("--group", type=int, default=4,
                        help="clips per back-to-back comparison (and per agent batch)")
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

    names = ["direct", *(f"direct c={c}" for c in pooled), *(f"agent c={c}" for c in agents)]

    def run_path(name: str, idx: list[int]) -> tuple[float, list[str]]:
        group = [clips[i] for i in idx]
        if name == "direct":
            return run_direct(model, group, args.beam_size)
        c = int(name.split("=")[1])
        if name.startswith("direct"):
            return run_direct_pool(pooled[c], group, args.beam_size, c)
        return run_agent(agents[c], [records[i] for i in idx])

    # The machine is shared and its load swings within seconds: every path runs on each
    # group of clips back to back (in rotating order), and the ratio to the plain call is
    # taken per group, so that load drift cancels out of it.
    groups = [list(range(i, min(i + args.group, len(clips))))
              for i in range(0, len(clips), args.group)]
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    pairs: dict[str, list[float]] = {n: [] for n in names}
    texts: dict[str, list[str]] = {n: [""] * len(clips) for n in names}
    worker_name = f"worker c={args.worker_concurrency}"
    if args.worker:
        walls[worker_name], cpus[worker_name], pairs[worker_name] = [], [], []
    for rep in range(args.repeats):
        total = dict.fromkeys(names, 0.0)
        cpu = dict.fromkeys(names, 0.0)
        for g, idx in enumerate(groups):
            shift = (rep + g) % len(names)
            took = {}
            for name in names[shift:] + names[:shift]:
                began_cpu = time.process_time()
                wall, out = run_path(name, idx)
                cpu[name] += time.process_time() - began_cpu
                total[name] += wall
                took[name] = wall
                for i, text in zip(idx, out, strict=True):
                    texts[name][i] = text
            for name in names:
                pairs[name].append(took["direct"] / took[name])
        for name in names:
            walls[name].append(total[name])
            cpus[name].append(cpu[name])
        summary = ", ".join(f"{n} {total[n]:.1f}s" for n in names)
        print(f"  run {rep + 1}: {summary}", flush=True)
        if args.worker:
            began_cpu = time.process_time()
            wall, texts[worker_name] = run_worker_path(clips, args.format, args)
            cpus[worker_name].append(time.process_time() - began_cpu)
            walls[worker_name].append(wall)
            pairs[worker_name].append(total["direct"] / wall)
            print(f"  run {rep + 1}: {worker_name} {wall:.1f}s", flush=True)

    rows = []
    print(f"\n{'path':<14} {'wall s (min/med/max)':>24} {'x real time':>12} {'RTF':>7} "
          f"{'÷ direct':>9} {'audio s/CPU s':>14} {'WER':>6}")
    for name, ws in walls.items():
        med = statistics.median(ws)
        speed = audio_s / med
        ratio = statistics.median(pairs[name])
        per_cpu = audio_s / statistics.median(cpus[name])
        wer = corpus_wer(list(zip(refs, texts[name], strict=True)))
        rows.append({"path": name, "walls": [round(w, 3) for w in ws], "speed": round(speed, 2),
                     "rtf": round(med / audio_s, 4), "ratio": round(ratio, 3),
                     "audio_per_cpu_s": round(per_cpu, 2), "wer": round(wer, 4)})
        spread = f"{min(ws):.2f} / {med:.2f} / {max(ws):.2f}"
        print(f"{name:<14} {spread:>24} {speed:>12.1f} {med / audio_s:>7.3f} {ratio:>9.2f} "
              f"{per_cpu:>14.1f} {wer:>6.3f}")
    best = max(r["ratio"] for r in rows if not r["path"].startswith("direct"))
    like = {}
    for c in pooled:
        per_group = [a / d for a, d in zip(pairs[f"agent c={c}"], pairs[f"direct c={c}"],
                                           strict=True)]
        like[f"agent c={c} ÷ direct c={c}"] = round(statistics.median(per_group), 3)
    print(f"\nbest agent ÷ direct (median over paired groups): {best:.2f} "
          f"(target ≥ {TARGET}: {'met' if best >= TARGET else 'NOT met'}); like for like: "
          f"{like}; total {time.perf_counter() - began:.0f} s")
    import ctranslate2
    import faster_whisper

    print(json.dumps({
        "clips": len(clips), "format": args.format, "audio_s": round(audio_s, 2),
        "model": args.model, "compute_type": args.compute_type, "beam_size": args.beam_size,
        "cpu_threads": args.cpu_threads, "group": args.group, "rows": rows,
        "best_ratio": round(best, 3), "like_for_like": like,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "faster_whisper": faster_whisper.__version__,
                    "ctranslate2": ctranslate2.__version__,
                    "load": os.getloadavg()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
