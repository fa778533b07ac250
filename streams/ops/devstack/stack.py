"""Start, stop and report the local Kafka broker (KRaft) and Apicurio Registry.

Each process memstream starts is recorded in a pid file under the state directory;
``down`` stops only those, and a second ``up`` reuses what already answers.

(About 400 lines: both processes share one lifecycle — install check, start, wait until it
answers, pid files, stop, status — and reading it in one place is how it stays consistent.)
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient

from streams.common.settings import Settings
from streams.ops.devstack import auth, install, versions
from streams.ops.devstack.exceptions import DevStackError

logger = logging.getLogger(__name__)

KAFKA_START_TIMEOUT_S = 90.0
REGISTRY_START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0

_LOG4J2 = """Configuration:
  Appenders:
    RollingFile:
      name: File
      fileName: "${sys:kafka.logs.dir}/server.log"
      filePattern: "${sys:kafka.logs.dir}/server.log.%i"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
      SizeBasedTriggeringPolicy:
        size: 50MB
      DefaultRolloverStrategy:
        max: 3
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: File
"""


@dataclass(frozen=True)
class ComponentStatus:
    """What one component of the stack is doing right now."""

    name: str
    version: str
    address: str
    pid: int | None
    answering: bool
    ours: bool
    log: Path

    def describe(self) -> str:
        """One line for ``memstream dev status``."""
        if self.answering and self.ours:
            state = f"running (pid {self.pid})"
        elif self.answering:
            state = "answering, but not started by memstream"
        elif self.pid:
            state = f"starting or unhealthy (pid {self.pid})"
        else:
            state = "stopped"
        return f"{self.name:<9} {self.version:<8} {self.address:<42} {state}  log: {self.log}"


class DevStack:
    """The two processes of the local stack and the files they keep."""

    def __init__(self, settings: Settings, *, auth: bool = False) -> None:
        self.settings = settings
        self.home = settings.state_dir / "dev"
        self.kafka_dir = self.home / "kafka"
        self.registry_dir = self.home / "registry"
        # SASL/SCRAM and ACLs on (streams/ops/devstack/auth.py): use a state dir of its own; a
        # state dir formatted that way stays so (status and down need no flag).
        self.auth = auth or (self.kafka_dir / "admin.secret").exists()

    def admin_client_config(self) -> dict[str, str]:
        """What a client needs besides the bootstrap address: the admin's SASL settings
        when authentication is on, nothing otherwise."""
        return auth.client_config(auth.admin_password(self.kafka_dir)) if self.auth else {}

    # -- addresses ------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.dev_kafka_port}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.dev_registry_port}/apis/ccompat/v7"

    # -- public ---------------------------------------------------------------------
    def up(self, progress: Callable[[str], None] = logger.info,
           *, registry: bool = True) -> list[ComponentStatus]:
        """Install if needed, start what is not running, and wait until both answer
        (``registry=False``: Kafka only)."""
        java = install.find_java(self.settings.java_home)
        progress(f"Kafka and the registry: {self.settings.cache_dir} (downloaded on the first run)")
        installation = install.install(self.settings.cache_dir)
        self._start_kafka(java, installation.kafka_libs, progress)
        if registry:
            self._start_registry(java, installation.registry_jar, progress)
        return self.status()

    def down(self, progress: Callable[[str], None] = logger.info) -> None:
        """Stop the processes memstream started (registry first), nothing else."""
        for name, pidfile, marker in (
            ("registry", self.registry_dir / "registry.pid", "apicurio-registry"),
            ("kafka", self.kafka_dir / "kafka.pid", "kafka.Kafka"),
        ):
            pid = _our_pid(pidfile, marker)
            if pid is None:
                progress(f"{name}: not running (nothing started by memstream)")
                pidfile.unlink(missing_ok=True)
                continue
            progress(f"{name}: stopping pid {pid}")
            _stop(pid)
            pidfile.unlink(missing_ok=True)

    def status(self) -> list[ComponentStatus]:
        """The state of both components."""
        kafka_pid = _our_pid(self.kafka_dir / "kafka.pid", "kafka.Kafka")
        reg_pid = _our_pid(self.registry_dir / "registry.pid", "apicurio-registry")
        kafka_up = _kafka_answers(self.bootstrap, 3.0, self.admin_client_config())
        reg_up = _registry_answers(self.registry_url)
        return [
            ComponentStatus(
                "kafka",
                versions.KAFKA_VERSION,
                f"{self.bootstrap} (KRaft, transactions on)",
                kafka_pid,
                kafka_up,
                kafka_pid is not None,
                self.kafka_dir / "logs" / "server.log",
            ),
            ComponentStatus(
                "registry",
                versions.APICURIO_VERSION,
                self.registry_url,
                reg_pid,
                reg_up,
                reg_pid is not None,
                self.registry_dir / "registry.log",
            ),
        ]

    # -- kafka ----------------------------------------------------------------------
    def _start_kafka(self, java: Path, libs: Path, progress: Callable[[str], None]) -> None:
        pidfile = self.kafka_dir / "kafka.pid"
        if _our_pid(pidfile, "kafka.Kafka") is not None:
            if _wait(self._kafka_up, KAFKA_START_TIMEOUT_S):
                progress(f"kafka: already running at {self.bootstrap}")
                return
            raise DevStackError(f"kafka (pid in {pidfile}) runs but does not answer; see logs")
        for port in (self.settings.dev_kafka_port, self.settings.dev_controller_port):
            _require_free_port(port, "Kafka")
        data = self.kafka_dir / "data"
        logs = self.kafka_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        props = self.kafka_dir / "server.properties"
        props.write_text(self._server_properties(data), encoding="utf-8")
        log_conf = self.kafka_dir / "log4j2.yaml"
        log_conf.write_text(_LOG4J2, encoding="utf-8")
        classpath = f"{libs}/*"
        if not (data / "meta.properties").exists():
            cluster_id = _run_java(java, classpath, ["kafka.tools.StorageTool", "random-uuid"])
            scram = auth.format_args(auth.admin_password(self.kafka_dir)) if self.auth else []
            _run_java(
                java,
                classpath,
                ["kafka.tools.StorageTool", "format", "-t", cluster_id.strip(), "-c", str(props),
                 *scram],
                jvm=[f"-Dlog4j2.configurationFile={log_conf}", f"-Dkafka.logs.dir={logs}"],
            )
        progress(f"kafka: starting {versions.KAFKA_VERSION} on {self.bootstrap}")
        pid = _spawn(
            [
                str(java),
                "-Xms256m",
                "-Xmx1g",
                f"-Dlog4j2.configurationFile={log_conf}",
                f"-Dkafka.logs.dir={logs}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            logs / "stdout.log",
            cwd=self.kafka_dir,
        )
        pidfile.write_text(str(pid), encoding="utf-8")
        if not _wait(self._kafka_up, KAFKA_START_TIMEOUT_S, pid):
            raise DevStackError(
                f"kafka did not answer on {self.bootstrap} within {KAFKA_START_TIMEOUT_S:.0f}s; "
                f"last log lines:\n{_tail(logs / 'server.log')}{_tail(logs / 'stdout.log')}"
            )
        progress("kafka: up")

    def _kafka_up(self) -> bool:
        return _kafka_answers(self.bootstrap, 2.0, self.admin_client_config())

    def _server_properties(self, data: Path) -> str:
        s = self.settings
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{s.dev_controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{s.dev_kafka_port},"
                f"CONTROLLER://127.0.0.1:{s.dev_controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{s.dev_kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            # One node: internal topics (offsets, transactions, share state) get RF 1.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "transaction.max.timeout.ms": "900000",
        }
        if self.auth:
            lines.update(auth.broker_properties(s.dev_kafka_port, s.dev_controller_port,
                                                auth.admin_password(self.kafka_dir)))
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    # -- registry ----------------------------------------------------------------------
    def _start_registry(self, java: Path, jar: Path, progress: Callable[[str], None]) -> None:
        pidfile = self.registry_dir / "registry.pid"
        if _our_pid(pidfile, "apicurio-registry") is not None:
            if _wait(lambda: _registry_answers(self.registry_url), REGISTRY_START_TIMEOUT_S):
                progress(f"registry: already running at {self.registry_url}")
                return
            raise DevStackError("registry runs but does not answer; see its log")
        _require_free_port(self.settings.dev_registry_port, "the schema registry")
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self.registry_dir)),
            # Schemas live in a Kafka topic (kafkasql), so they survive a registry restart.
            "APICURIO_STORAGE_KIND": "kafkasql",
            "APICURIO_KAFKASQL_BOOTSTRAP_SERVERS": self.bootstrap,
            "QUARKUS_HTTP_HOST": "127.0.0.1",
            "QUARKUS_HTTP_PORT": str(self.settings.dev_registry_port),
            "QUARKUS_MANAGEMENT_ENABLED": "false",
            "QUARKUS_LOG_CONSOLE_JSON": "false",
        }
        if self.auth:  # its Kafka client has no credentials: schemas stay in memory
            del env["APICURIO_STORAGE_KIND"], env["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"]
        log = self.registry_dir / "registry.log"
        progress(f"registry: starting Apicurio {versions.APICURIO_VERSION} on {self.registry_url}")
        pid = _spawn(
            [str(java), "-Xms128m", "-Xmx512m", "-jar", str(jar)],
            log,
            cwd=self.registry_dir,
            env=env,
        )
        pidfile.write_text(str(pid), encoding="utf-8")
        progress("registry: waiting until it answers and has loaded its stored schemas")
        if not _wait(lambda: _registry_answers(self.registry_url), REGISTRY_START_TIMEOUT_S, pid):
            raise DevStackError(
                f"the registry did not answer at {self.registry_url} with its stored schemas "
                f"loaded within {REGISTRY_START_TIMEOUT_S:.0f}s; last log lines:\n{_tail(log)}"
            )
        progress("registry: up")


# -- process helpers -----------------------------------------------------------------------
def _spawn(cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no user data
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI and is not hit by its Ctrl-C
        )
    return proc.pid


def _run_java(java: Path, classpath: str, args: list[str], jvm: list[str] | None = None) -> str:
    proc = subprocess.run(
        [str(java), *(jvm or []), "-cp", classpath, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise DevStackError(f"{' '.join(args[:2])} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _our_pid(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` if that process is alive and is the one we started."""
    try:
        pid = int(pidfile.read_text(encoding="utf-8").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if marker.encode() in cmdline else None


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.2)
    logger.warning("pid %s did not stop in %.0fs; killing it", pid, STOP_TIMEOUT_S)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        return ") Z" in Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)


def _wait(check: Callable[[], bool], timeout: float, pid: int | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if pid is not None and not _alive(pid):
            return False
        time.sleep(0.5)
    return False


def _require_free_port(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise DevStackError(
                f"port 127.0.0.1:{port} for {what} is already taken by a process memstream "
                "did not start; stop it, or choose other ports with MEMSTREAM_DEV_KAFKA_PORT, "
                "MEMSTREAM_DEV_CONTROLLER_PORT, MEMSTREAM_DEV_REGISTRY_PORT"
            ) from None


def _kafka_answers(bootstrap: str, timeout: float, extra: dict[str, str] | None = None) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000), "log_level": 0,
         **(extra or {})}
    )
    try:
        admin.list_topics(timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure means "not answering yet"
        return False
    return True


def _registry_answers(url: str) -> bool:
    """The registry serves its API and has loaded what it stores.

    Apicurio with kafkasql storage answers HTTP before it has replayed its journal topic;
    until then a lookup misses a schema it holds, and registering that schema again is
    refused as a duplicate. Its readiness check (``/health/ready``: 503 until the journal
    is loaded) says when it is done; a registry without that endpoint (404) counts as
    ready once it answers.
    """
    root = url.split("/apis/", 1)[0]
    try:
        if httpx.get(f"{url}/subjects", timeout=2.0).status_code != 200:
            return False
        return httpx.get(f"{root}/health/ready", timeout=2.0).status_code in (200, 404)
    except httpx.HTTPError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not written)"


