"""The versions of the local stack, pinned in this one place."""

from __future__ import annotations

KAFKA_VERSION = "4.1.1"
KAFKA_SCALA = "2.13"
# Kafka 4.x logs through SLF4J 1.7 (slf4j-api 1.7.36 ships with it); without a binding
# for that API the broker's logs go nowhere, so the log4j2 binding for SLF4J 1.x comes too.
LOG4J_VERSION = "2.25.3"
# Apicurio 3.0.x runs on Java 17 (the JDK Debian 12 ships); 3.1+ needs Java 21.
APICURIO_VERSION = "3.0.9"
MIN_JAVA = 17

KAFKA_ARTIFACTS = (
    f"org.apache.kafka:kafka_{KAFKA_SCALA}:{KAFKA_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
)
APICURIO_ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
