"""Principals and ACLs against a real broker with authentication on: a KRaft Kafka of its
own (SASL/SCRAM-SHA-512, StandardAuthorizer; free ports unless
MEMSTREAM_TEST_AUTH_KAFKA_PORT / _CONTROLLER_PORT say otherwise) next to the shared
registry. Each role is refused what it must not do, and the whole pipeline (SDK → worker →
read service, delete included) runs with exactly the ACLs `memstream acls apply` grants."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from agents.dedupe import memory_id
from streams.common.admin import ensure_topics
from streams.common.registry import register_all
from streams.common.settings import Settings, load_settings
from streams.ops.acls import Role, upsert_user
from streams.ops.devstack.stack import DevStack
from streams.sdk.client import MemoryClient
from streams.sdk.events import TelemetryEvent
from streams.sdk.producer import MemstreamProducer
from tests.integration.harness import (
    REPO,
    free_port,
    memstream_env,
    start_worker,
    stop_worker,
    wait_ready,
)
from tests.integration.service_harness import Service

USERS = {Role.PRODUCER: "memstream-sdk", Role.WORKER: "memstream-worker",
         Role.SERVE: "memstream-serve"}
REFUSED = KafkaError.TOPIC_AUTHORIZATION_FAILED


@pytest.fixture(scope="module")
def auth_stack() -> Iterator[DevStack]:
    """The broker with authentication on, in a state dir of its own; stopped afterwards."""
    settings = load_settings(
        state_dir=Path(tempfile.gettempdir()) / "memstream-acl-stack",
        # Free ports: fixed ones inside the ephemeral range (32768-60999 on Linux) were once
        # held by a client connection's local end, and the stack refused to start.
        dev_kafka_port=int(os.environ.get("MEMSTREAM_TEST_AUTH_KAFKA_PORT") or free_port()),
        dev_controller_port=int(os.environ.get("MEMSTREAM_TEST_AUTH_CONTROLLER_PORT")
                                or free_port()))
    stack = DevStack(settings, auth=True)
    stack.up(print, registry=False)
    yield stack
    stack.down(print)


def sasl(settings: Settings, user: str, password: str) -> Settings:
    return settings.model_copy(update={
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": user, "sasl_password": SecretStr(password)})


def sasl_env(settings: Settings) -> dict[str, str]:
    assert settings.sasl_username and settings.sasl_password
    return {"MEMSTREAM_SECURITY_PROTOCOL": settings.security_protocol,
            "MEMSTREAM_SASL_MECHANISM": str(settings.sasl_mechanism),
            "MEMSTREAM_SASL_USERNAME": settings.sasl_username,
            "MEMSTREAM_SASL_PASSWORD": settings.sasl_password.get_secret_value()}


@pytest.fixture(scope="module")
def roles(auth_stack: DevStack, dev_stack: DevStack) -> dict[Role, Settings]:
    """Settings per role on a fresh prefix whose topics, schemas, users and ACLs exist."""
    conf = auth_stack.admin_client_config()
    base = load_settings(bootstrap_servers=auth_stack.bootstrap,
                         schema_registry_url=dev_stack.registry_url,  # the shared registry
                         topic_prefix=f"pytest.acl.{uuid.uuid4().hex[:8]}.", partitions=2,
                         request_timeout_s=10.0, app_id=f"pytest-acl-{uuid.uuid4().hex[:6]}")
    admin = sasl(base, str(conf["sasl.username"]), str(conf["sasl.password"]))
    ensure_topics(admin)
    register_all(admin, progress=lambda _m: None)
    out = {Role.ADMIN: admin}
    for role, user in USERS.items():
        password = secrets.token_urlsafe(18)
        upsert_user(admin, user, password)
        out[role] = sasl(base, user, password)
    env = {**memstream_env(admin), **sasl_env(admin)}
    applied = subprocess.run(
        [sys.executable, "-m", "streams", "acls", "apply", *(
            arg for role, user in USERS.items() for arg in (f"--{role.value}", f"User:{user}"))],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr
    assert "granted User:memstream-sdk: WRITE on topic" in applied.stdout
    return out


def produce(settings: Settings, base: str) -> int | None:
    """Produce one record; None when delivered, else the error code."""
    producer = Producer({**settings.kafka_client_config(), "message.timeout.ms": 15_000,
                         "log_level": 0})
    result: dict[str, KafkaError | None] = {}
    producer.produce(settings.topic(base), value=b"forged", key=b"acme:m", partition=0,
                     on_delivery=lambda err, _msg: result.update(err=err))
    producer.flush(20)
    err = result.get("err", KafkaError(KafkaError._MSG_TIMED_OUT))
    return None if err is None else int(err.code())


def read(settings: Settings, base: str, group: str | None = None) -> int | None:
    """Fetch partition 0 from its start; None when the broker served it, else the error."""
    consumer = Consumer({**settings.kafka_client_config(), "log_level": 0,
                         "group.id": group or f"memstream-serve-{uuid.uuid4()}",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(settings.topic(base), 0, 0)])
        for _ in range(40):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is None or err.code() == KafkaError._PARTITION_EOF:
                return None
            return int(err.code())
        return KafkaError._TIMED_OUT
    finally:
        consumer.close()


def test_each_principal_is_refused_what_it_must_not_do(roles: dict[Role, Settings]) -> None:
    sdk, worker, serve = roles[Role.PRODUCER], roles[Role.WORKER], roles[Role.SERVE]
    # The SDK writes the inputs, and cannot forge or delete a memory, nor read anything.
    assert produce(sdk, "telemetry.v1") is None
    for topic in ("memories.v1", "commands.v1", "summaries.v1", "scored.v1"):
        assert produce(sdk, topic) == REFUSED, topic
    for topic in ("telemetry.v1", "memories.v1"):  # it has no consumer group either
        assert read(sdk, topic) in (REFUSED, KafkaError.GROUP_AUTHORIZATION_FAILED), topic
    # The read service writes only commands, reads only derived topics.
    assert produce(serve, "commands.v1") is None
    for topic in ("memories.v1", "summaries.v1", "telemetry.v1"):
        assert produce(serve, topic) == REFUSED, topic
    assert read(serve, "memories.v1") is None and read(serve, "summaries.v1") is None
    for topic in ("telemetry.v1", "commands.v1"):
        assert read(serve, topic) == REFUSED, topic
    # Only the worker writes derived topics; it writes no inputs and no commands.
    assert produce(worker, "memories.v1") is None
    for topic in ("telemetry.v1", "commands.v1"):
        assert produce(worker, topic) == REFUSED, topic
    assert read(worker, "telemetry.v1", worker.app_id) is None
    assert read(worker, "commands.v1", worker.app_id) is None
    assert read(worker, "memories.v1", worker.app_id) == REFUSED, "not its own output"
    # A wrong password gets nowhere.
    stranger = sasl(sdk, "memstream-sdk", "not-the-password")
    with pytest.raises(KafkaException):
        AdminClient({**stranger.kafka_client_config(), "log_level": 0}).list_topics(timeout=5)


def test_the_pipeline_runs_with_exactly_these_acls(roles: dict[Role, Settings],
                                                   tmp_path: Path) -> None:
    sdk, serve = roles[Role.PRODUCER], roles[Role.SERVE]
    worker = roles[Role.WORKER].model_copy(update={"data_dir": tmp_path / "state",
                                                   "metrics_port": 0})
    log = tmp_path / "worker.log"
    proc = start_worker(worker, log, extra_env=sasl_env(worker))
    service = Service(serve, tmp_path, env=sasl_env(serve))
    try:
        wait_ready(log, 0)
        service.start()
        text = "Rotate the signing keys of the payment cluster every quarter."
        with MemstreamProducer(sdk) as producer:
            sent = producer.send(TelemetryEvent(tenant="acme", session_id="s1",
                                                interaction_id="i-1", kind="QUERY", text=text))
        mid = memory_id("acme", text)
        with MemoryClient(service.url, "tok-acme", timeout_s=60) as acme:
            hits = acme.recall(text, consistency_token=sent.consistency_token)
            assert hits and hits[0]["memory_id"] == mid
            assert acme.delete(mid)["applied"]
            assert mid not in {h["memory_id"] for h in acme.recall(text, k=5)}
        assert "TOPIC_AUTHORIZATION_FAILED" not in log.read_text()
    finally:
        service.stop()
        assert stop_worker(proc) == 0, log.read_text()[-3000:]
