"""The kill -9 family, for the stack itself: the broker killed and the registry frozen mid-run.

These tests kill and freeze the broker and the registry, so they run on a stack of their own
(the ``fault_stack`` fixture), never on the shared local stack.

Chosen behaviour (docs/operations.md, "Failures"): the worker is crash-only. A broker crash
that breaks an open transaction, or a fatal client error (a static member fenced after the
group coordinator reloaded), ends the worker promptly with a non-zero exit; the supervisor
restarts it and the restart is exactly-once. A worker between batches rides the outage out.
The test plays the supervisor and checks the outcome against a fault-free reference run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from confluent_kafka import KafkaException, Producer

from streams.common.admin import ensure_topics
from streams.common.codec import AvroCodec
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import register_all, registry_client
from streams.common.schemas import load_schema_versions
from streams.common.settings import Settings
from streams.ops.devstack.stack import DevStack
from streams.sdk.events import TelemetryEvent, as_record
from tests.integration.harness import (
    changelog_state,
    committed_offsets,
    component_pid,
    drain_state,
    free_port,
    healthz,
    produce,
    raw_log,
    scored,
    start_worker,
    stop_or_kill,
    wait_drained,
    wait_ready,
    worker_settings,
)
from tests.integration.test_pipeline import check_exactly_once, final_summaries, run_clean
from tests.integration.workload import Workload, generate

BROKER_DOWN_S = float(os.environ.get("MEMSTREAM_FAULT_BROKER_DOWN_S", "26"))
REGISTRY_FROZEN_S = float(os.environ.get("MEMSTREAM_FAULT_REGISTRY_FROZEN_S", "30"))
# After the broker is back: time for the worker to resume or exit, restart and drain.
RECOVERY_S = 300
# The worker's watchdog ends a client call this long past its timeout (the test's setting).
CALL_GRACE_S = "10"
# Slack for a batch's own work on a loaded machine, on top of a call's timeout and grace.
STUCK_MARGIN_S = 20


def _provision(settings: Settings, work: Workload) -> None:
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    produce(settings, work)


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def _not_stuck(proc: subprocess.Popen[bytes], settings: Settings, log: Path) -> None:
    """A live worker's loop comes round: no client call blocks it much past its timeout
    (the worker's own watchdog ends it first). An exited or starting worker passes."""
    if proc.poll() is not None:
        return
    try:
        _status, body = healthz(settings.metrics_port)
    except httpx.TransportError:
        return  # not serving yet (loading models) or just exited
    limit = settings.request_timeout_s + float(CALL_GRACE_S) + STUCK_MARGIN_S
    assert body["loop_age_s"] <= limit, (
        f"the worker is alive but its loop has been stuck for {body['loop_age_s']}s: "
        f"{body}\n{_log_tail(log)}")


@pytest.mark.timeout(1200)
def test_broker_killed_mid_run_worker_resumes_exactly_once(
    fault_stack: DevStack, fault_settings: Settings, tmp_path: Path
) -> None:
    """kill -9 the broker mid-run, restart it ~26 s later: the worker either carries on or
    exits non-zero at once and resumes after a restart; never alive and idle. The output
    equals a fault-free reference run's."""
    work = generate(1_000, tenants=3, seed=17)
    runs: dict[str, Settings] = {}
    for name in ("reference", "crash"):
        base = fault_settings.model_copy(
            update={"topic_prefix": f"{fault_settings.topic_prefix}{name}.", "partitions": 3})
        runs[name] = worker_settings(base, tmp_path / name, summary_window_s=300,
                                     summary_grace_s=len(work.telemetry) + 3600)
        _provision(runs[name], work)
    run_clean(runs["reference"], work, tmp_path / "reference")

    settings = runs["crash"].model_copy(update={"metrics_port": free_port()})
    log = tmp_path / "crash" / "worker.log"
    expected = work.ingested + len(work.poison_empty) + len(work.garbage)
    env = {"MEMSTREAM_CLIENT_CALL_GRACE_S": CALL_GRACE_S, "MEMSTREAM_STOP_GRACE_S": "20"}
    proc = start_worker(settings, log, extra_env=env)
    wait_ready(log, 0)
    deadline = time.monotonic() + 120
    while len(scored(settings)) < 100:  # mid-run: some batches committed, most to come
        assert time.monotonic() < deadline, _log_tail(log)
        time.sleep(0.5)

    os.kill(component_pid(fault_stack, "kafka"), signal.SIGKILL)
    with log.open("a") as out:
        out.write(f"\n=== test: kafka killed (-9), restarting in {BROKER_DOWN_S:.0f}s ===\n")
    back = time.monotonic() + BROKER_DOWN_S
    while time.monotonic() < back:
        _not_stuck(proc, settings, log)
        time.sleep(1)
    fault_stack.up(print)
    with log.open("a") as out:
        out.write("\n=== test: kafka restarted ===\n")

    # The supervisor: restart the worker whenever it exits, until the pipeline drains.
    exits: list[int] = []
    deadline = time.monotonic() + RECOVERY_S
    try:
        while True:
            code = proc.poll()
            if code is not None:
                exits.append(code)
                assert code != 0, f"the worker stopped with 0 unasked:\n{_log_tail(log)}"
                since = log.stat().st_size
                proc = start_worker(settings, log, extra_env=env)
                wait_ready(log, since, timeout=180)
                continue
            _not_stuck(proc, settings, log)
            try:
                drained, stats = drain_state(settings, expected)
            except KafkaException as exc:  # the coordinator is still loading: ask again
                drained, stats = False, exc
            if drained:
                break
            assert time.monotonic() < deadline, (
                f"not drained {RECOVERY_S}s after the broker came back (exits {exits}): "
                f"{stats}\n{_log_tail(log)}"
            )
            time.sleep(2)
        status, body = healthz(settings.metrics_port)
        assert status == 200 and body["live"], body
    finally:
        code = stop_or_kill(proc)
    assert code == 0, _log_tail(log)
    print(f"broker crash: worker exit codes before resuming: {exits or 'none (rode it out)'}")

    reference = check_exactly_once(runs["reference"], work)
    assert check_exactly_once(settings, work) == reference, "memories differ from the reference"
    def dedupe_table(s: Settings) -> dict[str, str]:
        return {k: v["memory_id"] for k, v in changelog_state(s, "content").items()}

    assert dedupe_table(settings) == dedupe_table(runs["reference"])
    assert final_summaries(settings) == final_summaries(runs["reference"])


def _v1_telemetry(settings: Settings, events: list[TelemetryEvent]) -> list[tuple[int, bytes]]:
    """``events`` written with telemetry's first schema version (which the running worker has
    not seen, so decoding them needs the registry): (partition, bytes)."""
    v1 = load_schema_versions()["telemetry"][0].schema
    fields = {f["name"] for f in v1["fields"]}
    codec = AvroCodec(registry_client(settings))
    subject = f"{settings.topic('telemetry.v1')}-value"
    out = []
    for event in events:
        record = {k: v for k, v in as_record(event).items() if k in fields}
        out.append((partition_for_tenant(event.tenant, settings.partitions),
                    codec.encode(subject, v1, record)))
    return out


@pytest.mark.timeout(900)
def test_registry_frozen_mid_run_commits_nothing_and_catches_up(
    fault_stack: DevStack, fault_settings: Settings, tmp_path: Path
) -> None:
    """SIGSTOP the registry while records whose schema the worker must fetch arrive: nothing
    past them is committed, nothing is dead-lettered, /healthz says the loop is not making
    progress; after SIGCONT the worker catches up and every event is memorized once."""
    work = generate(300, tenants=3, seed=19)
    # Interactions of their own (the generator numbers them per run).
    later = [replace(e, interaction_id=f"later-{e.interaction_id}")
             for e in generate(60, tenants=3, seed=23).telemetry]
    settings = worker_settings(fault_settings, tmp_path, metrics_port=free_port())
    _provision(settings, work)
    encoded = _v1_telemetry(settings, later)  # the registry answers: ids resolved now
    log = tmp_path / "worker.log"
    env = {"MEMSTREAM_LIVENESS_TIMEOUT_S": "8"}
    proc = start_worker(settings, log, extra_env=env)
    try:
        wait_ready(log, 0)
        wait_drained(settings, work.ingested + len(work.poison_empty) + len(work.garbage))
        letters_before = len(raw_log(settings, "deadletter.v1"))

        registry = component_pid(fault_stack, "registry")
        os.kill(registry, signal.SIGSTOP)
        try:
            with log.open("a") as out:
                out.write(f"\n=== test: registry frozen for {REGISTRY_FROZEN_S:.0f}s ===\n")
            first: dict[int, int] = {}
            raw = Producer(settings.kafka_client_config())
            topic = settings.topic("telemetry.v1")

            def delivered(err: object, msg: object) -> None:
                assert err is None, err
                first.setdefault(msg.partition(), msg.offset())  # type: ignore[attr-defined]

            for partition, value in encoded:
                raw.produce(topic, value=value, key=b"v1", partition=partition,
                            on_delivery=delivered)
            assert raw.flush(30) == 0
            frozen_until = time.monotonic() + REGISTRY_FROZEN_S
            went_unhealthy = False
            while time.monotonic() < frozen_until:
                assert proc.poll() is None, f"the worker exited:\n{log.read_text()[-3000:]}"
                committed = committed_offsets(settings, "telemetry.v1")
                for partition, offset in first.items():
                    assert committed[partition] <= offset, (
                        f"telemetry.v1[{partition}] committed to {committed[partition]} past "
                        f"{offset}, a record whose schema the worker could not fetch")
                status, body = healthz(settings.metrics_port)
                went_unhealthy |= status == 503 and not body["live"]
                time.sleep(1)
            assert len(raw_log(settings, "deadletter.v1")) == letters_before, (
                "a record was dead-lettered because the registry did not answer")
            assert went_unhealthy, "/healthz stayed live while input waited and nothing committed"
        finally:
            os.kill(registry, signal.SIGCONT)
        with log.open("a") as out:
            out.write("\n=== test: registry thawed ===\n")

        total = Workload(telemetry=work.telemetry + later, feedback=work.feedback,
                         poison_empty=work.poison_empty, garbage=work.garbage)
        wait_drained(settings, total.ingested + len(total.poison_empty) + len(total.garbage),
                     timeout=300)
        deadline = time.monotonic() + 30
        while not healthz(settings.metrics_port)[1]["live"]:
            assert time.monotonic() < deadline, healthz(settings.metrics_port)
            time.sleep(1)
    finally:
        code = stop_or_kill(proc)
    assert code == 0, log.read_text()[-3000:]
    check_exactly_once(settings, total)




@pytest.mark.timeout(600)
def test_registry_restart_answers_only_with_its_stored_schemas(
    fault_stack: DevStack, fault_settings: Settings
) -> None:
    """A registry killed with -9 and started again replays its journal topic before it knows
    what it stores (its consumer first waits out the dead one's group membership); ``up``
    returns only once it has, so provisioning again finds every schema instead of
    registering it a second time (which Apicurio refuses: "artifact ... already exists")."""
    register_all(fault_settings, progress=lambda _m: None)
    os.kill(component_pid(fault_stack, "registry"), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(c.pid for c in fault_stack.status() if c.name == "registry"):
        assert time.monotonic() < deadline, "the registry outlived kill -9"
        time.sleep(0.2)

    fault_stack.up(lambda _m: None)

    again = register_all(fault_settings, progress=lambda _m: None)
    assert again and not [r for r in again if r.created], (
        "a schema stored before the restart was registered as new")
