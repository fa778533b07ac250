"""The local broker with authentication and authorization on (``memstream dev up --auth``).

Clients connect with SASL/SCRAM-SHA-512 on the Kafka port; the broker runs KRaft's
``StandardAuthorizer`` with no access unless an ACL grants it. The principal ``admin`` is
the one super user: its SCRAM credential is written into the metadata when the storage is
formatted (``--add-scram``) and its password is kept in ``<state>/dev/kafka/admin.secret``
(mode 0600, never printed). The other principals (``memstream acls users``) and their ACLs
(``memstream acls apply``) are created through the admin API, as on a real cluster.

The controller listener stays PLAINTEXT on 127.0.0.1 (KRaft cannot check SCRAM there: the
credentials live in the metadata it serves), so its anonymous principal is a super user
too; it answers only controller requests. A dev stack, not a production setup.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def admin_password(kafka_dir: Path) -> str:
    """The admin's password: generated on first use, kept in a 0600 file."""
    path = kafka_dir / "admin.secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    kafka_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password)
    return password


def client_config(password: str, username: str = ADMIN) -> dict[str, str]:
    """librdkafka settings of a SASL/SCRAM client."""
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": MECHANISM,
            "sasl.username": username, "sasl.password": password}


def format_args(password: str) -> list[str]:
    """``kafka-storage format`` arguments that create the admin's SCRAM credential."""
    return ["--add-scram", f"{MECHANISM}=[name={ADMIN},password={password}]"]


def broker_properties(kafka_port: int, controller_port: int, password: str) -> dict[str, str]:
    """server.properties entries for a SASL/SCRAM listener with ACLs enforced."""
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="{ADMIN}" password="{password}";')
    return {
        "listeners": (f"SASL_PLAINTEXT://127.0.0.1:{kafka_port},"
                      f"CONTROLLER://127.0.0.1:{controller_port}"),
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{kafka_port}",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN};User:ANONYMOUS",
    }
