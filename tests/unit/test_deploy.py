"""docker-compose.yml, the Dockerfile and the env example, checked statically (no Docker
here): services, profiles, limits, health checks, ports, and every MEMSTREAM_* name against
the real settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.common.settings import ENV_PREFIX, SECRET_FIELDS, Settings
from streams.common.topics import TOPICS_BY_BASE
from tests.deployment import (
    READ_SERVICE_SETTINGS,
    REPO,
    cli_commands,
    read_service_merged,
)

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / "deploy" / "memstream.env.example"
MEMSTREAM_SERVICES = {"init", "worker", "worker-1", "serve"}
DEFAULT_SERVICES = {"redpanda", "init", "worker", "serve"}
PROFILES = {
    "console": {"console"},
    "monitoring": {"prometheus", "grafana"},
    "scale": {"worker-1"},
    "cluster": {"redpanda-1", "redpanda-2"},
}
PORT = re.compile(r"^127\.0\.0\.1:\$\{(MS_[A-Z0-9_]+):-(\d+)\}:(\d+)$")
INTERPOLATION = re.compile(r"\$\{([A-Za-z0-9_]+)(?::?-[^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _setting_names() -> set[str]:
    return set(Settings.model_fields)


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


# scripts/install.sh's own variables (where the venv goes, which extras), not settings.
INSTALL_VARIABLES = {"MEMSTREAM_VENV", "MEMSTREAM_EXTRAS"}


def _is_known_variable(name: str) -> bool:
    """Whether ``MEMSTREAM_<X>`` is a setting (or a setting's ``_FILE`` secret form)."""
    if name in INSTALL_VARIABLES:
        return True
    field = name.removeprefix(ENV_PREFIX).lower()
    if field in _setting_names():
        return True
    if field.endswith("_file") and field.removesuffix("_file") in SECRET_FIELDS:
        return True
    return field in READ_SERVICE_SETTINGS and not read_service_merged()


def test_default_starts_only_what_memstream_needs(services: dict[str, Any]) -> None:
    default = {name for name, s in services.items() if not s.get("profiles")}
    assert default == DEFAULT_SERVICES
    for profile, members in PROFILES.items():
        assert {n for n, s in services.items() if profile in s.get("profiles", [])} == members
    assert set(services) == DEFAULT_SERVICES | set().union(*PROFILES.values())


def test_every_service_has_an_image_or_build_and_a_memory_limit(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        limit = service["deploy"]["resources"]["limits"]["memory"]
        assert re.fullmatch(r"\$\{MS_[A-Z0-9_]+_MEMORY:-\d+[MG]\}", limit), (name, limit)
        if name in MEMSTREAM_SERVICES:
            assert service["build"]["context"] == "."
            assert (REPO / "Dockerfile").exists()


def test_every_long_running_service_has_a_health_check(services: dict[str, Any]) -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    for name, service in services.items():
        if name == "init":
            assert service["healthcheck"] == {"disable": True}
            assert service["restart"] == "no"
        elif name == "serve":
            # The image's HEALTHCHECK: GET /healthz on MEMSTREAM_SERVE_PORT.
            assert "healthcheck" not in service
            check = re.search(r"^HEALTHCHECK .*\n(.*)$", dockerfile, re.M)
            assert check and "/healthz" in check.group(1)
            assert "MEMSTREAM_SERVE_PORT" in check.group(1)
        else:
            assert service["healthcheck"]["test"], name
    for name in ("worker", "worker-1"):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert "/healthz" in probe and "MEMSTREAM_METRICS_PORT" in probe


def test_workers_are_restarted_when_they_exit(services: dict[str, Any]) -> None:
    """A fenced or stuck worker exits non-zero (crash-only): its supervisor must restart it.
    (worker-1 inherits the worker's keys through the YAML merge.)"""
    for name in ("worker", "worker-1"):
        assert services[name]["restart"] in {"always", "unless-stopped"}, name
        grace = int(str(services[name]["stop_grace_period"]).removesuffix("s"))
        assert grace > Settings.model_fields["stop_grace_s"].default, (
            f"{name}: compose must wait longer than the worker's own stop grace")


def test_ports_bind_to_localhost_each_with_its_own_variable(services: dict[str, Any]) -> None:
    variables: dict[str, str] = {}
    defaults: dict[str, str] = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            match = PORT.match(mapping)
            assert match, f"{name}: {mapping!r} must be 127.0.0.1:${{MS_..._PORT:-N}}:N"
            variable, default, _container = match.groups()
            assert variables.setdefault(variable, name) == name, f"{variable} used twice"
            assert defaults.setdefault(default, name) == name, (
                f"host port {default}: default of {name} and {defaults[default]}"
            )
    # The defaults of the Kafka and registry ports are the local stack's defaults (README),
    # whatever MEMSTREAM_DEV_*_PORT this machine's stack happens to run on.
    fields = Settings.model_fields
    assert variables["MS_KAFKA_PORT"] == "redpanda"
    ports = {m.group(1): m.group(2) for s in services.values() for p in s.get("ports", [])
             if (m := PORT.match(p))}
    assert ports["MS_KAFKA_PORT"] == str(fields["dev_kafka_port"].default)
    assert ports["MS_REGISTRY_PORT"] == str(fields["dev_registry_port"].default)


def test_container_ports_agree_with_settings_and_prometheus(services: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text("utf-8"))
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in prometheus["scrape_configs"]}
    worker = services["worker"]
    metrics_port = _env(worker)["MEMSTREAM_METRICS_PORT"]
    assert _env(worker)["MEMSTREAM_METRICS_HOST"] == "0.0.0.0"
    assert PORT.match(worker["ports"][0]).group(3) == metrics_port  # type: ignore[union-attr]
    assert f"worker:{metrics_port}" in targets["memstream-worker"]
    serve = services["serve"]
    serve_port = _env(serve)["MEMSTREAM_SERVE_PORT"]
    assert _env(serve)["MEMSTREAM_SERVE_HOST"] == "0.0.0.0"
    assert PORT.match(serve["ports"][0]).group(3) == serve_port  # type: ignore[union-attr]
    assert targets["memstream-serve"] == [f"serve:{serve_port}"]
    assert "EXPOSE 8080 9464" in DOCKERFILE.read_text(encoding="utf-8")


def test_memstream_services_reach_the_broker_and_registry_redpanda_advertises(
    services: dict[str, Any],
) -> None:
    command = " ".join(services["redpanda"]["command"])
    kafka = re.search(r"--advertise-kafka-addr internal://([\w.-]+:\d+)", command)
    registry = re.search(r"--schema-registry-addr internal://0\.0\.0\.0:(\d+)", command)
    assert kafka and registry
    for name in MEMSTREAM_SERVICES:
        env = _env(services[name])
        assert env["MEMSTREAM_BOOTSTRAP_SERVERS"] == kafka.group(1), name
        assert env["MEMSTREAM_SCHEMA_REGISTRY_URL"] == f"http://redpanda:{registry.group(1)}"
    console = yaml.safe_load((REPO / "deploy/console/config.yml").read_text("utf-8"))
    assert console["kafka"]["brokers"] == [kafka.group(1)]
    assert console["schemaRegistry"] == {
        "enabled": True, "urls": [f"http://redpanda:{registry.group(1)}"]
    }


def test_init_creates_topics_and_registers_schemas_with_real_commands(
    services: dict[str, Any],
) -> None:
    init = services["init"]
    script = " ".join(init["command"])
    used = re.findall(r"memstream ([a-z-]+ [a-z-]+)", script)
    assert used == ["topics create", "schemas register"]
    assert set(used) <= cli_commands()
    for name in ("worker", "worker-1", "serve"):
        assert services[name]["depends_on"] == {
            "init": {"condition": "service_completed_successfully"}
        }
    assert services["init"]["depends_on"] == {"redpanda": {"condition": "service_healthy"}}


def test_worker_ids_are_distinct_and_stable(services: dict[str, Any]) -> None:
    ids = [_env(services[n])["MEMSTREAM_WORKER_ID"] for n in ("worker", "worker-1")]
    assert len(set(ids)) == 2
    volumes = [services[n]["volumes"][0].split(":")[0] for n in ("worker", "worker-1")]
    assert len(set(volumes)) == 2


def test_every_memstream_variable_is_a_real_setting() -> None:
    for path in (COMPOSE, ENV_EXAMPLE, DOCKERFILE, REPO / "docs" / "operations.md",
                 REPO / "deploy" / "prometheus" / "alerts.yml"):
        text = path.read_text(encoding="utf-8")
        names = set(re.findall(r"\bMEMSTREAM_[A-Z0-9_]*[A-Z0-9]\b", text))
        assert names, path
        unknown = sorted(n for n in names if not _is_known_variable(n))
        assert not unknown, f"{path.name}: not fields of streams/common/settings.py: {unknown}"


def test_compose_variables_are_settings_or_compose_knobs() -> None:
    for variable in INTERPOLATION.findall(COMPOSE.read_text(encoding="utf-8")):
        assert variable.startswith("MS_"), f"${{{variable}}}: compose knobs are MS_*"


def test_topic_names_in_deployment_files_are_declared() -> None:
    files = [REPO / "docs" / "operations.md", REPO / "docs" / "metrics.md",
             REPO / "deploy/prometheus/alerts.yml", REPO / "deploy/prometheus/alerts.test.yml"]
    for path in files:
        for topic in re.findall(r"\b([a-z]+\.v\d+)\b", path.read_text(encoding="utf-8")):
            assert topic in TOPICS_BY_BASE or topic.endswith(".v2"), f"{path.name}: {topic}"


def _git_ignored(path: str) -> bool:
    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
    return result.returncode == 0


def test_secrets_and_env_files_stay_out_of_git(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for entry in service.get("env_file", []):
            assert entry["required"] is False, name
            assert _git_ignored(entry["path"]), f"{name}: {entry['path']} is not git-ignored"
    for secret in compose["secrets"].values():
        default = re.search(r":-([^}]+)\}", secret["file"])
        assert default and _git_ignored(default.group(1)), secret
    assert services["serve"]["secrets"] == ["api_tokens"]
    assert _env(services["serve"])["MEMSTREAM_API_TOKENS_FILE"] == "/run/secrets/api_tokens"
    assert not _git_ignored("deploy/memstream.env.example")


def test_env_example_holds_no_secret_values() -> None:
    assignments = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    secrets = {f"{ENV_PREFIX}{name.upper()}" for name in SECRET_FIELDS}
    assert not (set(assignments) & secrets), "a secret has a value in the example"
    for name, value in assignments.items():
        assert "password" not in value.lower() and "token" not in value.lower(), name
    Settings(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in assignments.items()})


def test_dockerfile_is_slim_non_root_and_takes_models_by_build_arg() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in {"root", "0"}
    assert "ARG EMBEDDING_MODEL=" in text and "ARG WHISPER_MODELS" in text
    # torch is in the build stage only: the runtime stage installs no torch extra, and
    # its build fails if torch, triton or CUDA wheels got in anyway.
    build, runtime = text.split("\nFROM ${PYTHON_IMAGE}\n")
    assert "--extra torch" in build and "--extra torch" not in runtime
    assert "find_spec(m) for m in ('torch', 'nvidia', 'triton')" in runtime
    assert 'ENTRYPOINT ["memstream"]' in text
    # The image runs the source tree (schemas/ is read from beside streams/).
    for folder in ("streams", "agents", "schemas"):
        assert f"COPY {folder} ./{folder}" in text
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert "*.env" in ignored and "deploy/secrets" in ignored


def test_mounted_deploy_files_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} is missing"
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/memstream.yml").read_text("utf-8")
    )
    mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert provider["providers"][0]["options"]["path"] in mounts


def test_operations_guide_documents_the_compose_commands() -> None:
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    for command in ("docker compose up -d", "docker compose --profile monitoring up -d",
                    "docker compose --profile console up -d", "docker compose build"):
        assert command in guide, command
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    for service in services.values():
        for mapping in service.get("ports", []):
            variable = PORT.match(mapping).group(1)  # type: ignore[union-attr]
            assert variable in guide, f"docs/operations.md does not mention {variable}"


def test_compose_file_mentions_no_path_outside_the_repository() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for source in re.findall(r"^\s*- (\.{1,2}/[^:\s]+)", text, re.M):
        assert (REPO / source).resolve().is_relative_to(REPO), source
    assert Path(REPO / "deploy").is_dir()


def _deploy_check() -> str | None:
    """deploy/check built once into the memstream cache (needs Go and its module proxy)."""
    from streams.common.settings import load_settings

    binary = load_settings().cache_dir / "bin" / "memstream-deploy-check"
    source = REPO / "deploy" / "check"
    newest = max(p.stat().st_mtime for p in source.iterdir())
    if binary.exists() and binary.stat().st_mtime >= newest:
        return str(binary)
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists()
                                else None)
    if go is None:
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    built = subprocess.run([go, "build", "-o", str(binary), "."], cwd=source,
                           capture_output=True, text=True, timeout=600, check=False)
    return str(binary) if built.returncode == 0 else None


def _run_check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    checker = _deploy_check()
    if checker is None:
        pytest.skip("Go is missing or deploy/check did not build (no module proxy?)")
    return subprocess.run([checker, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env={"PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("profiles", [(), *[(p,) for p in PROFILES], tuple(PROFILES)],
                         ids=lambda p: "+".join(p) or "default")
def test_compose_go_loads_each_profile(profiles: tuple[str, ...], tmp_path: Path) -> None:
    """The loader Docker Compose itself uses (schema, interpolation, profiles) accepts the
    file, and what it resolves binds to 127.0.0.1 with a memory limit everywhere."""
    result = _run_check("compose", str(COMPOSE), ",".join(profiles), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = {s["name"]: s for s in json.loads(result.stdout)}
    assert set(loaded) == DEFAULT_SERVICES.union(*(PROFILES[p] for p in profiles))
    for name, service in loaded.items():
        assert service["memory_bytes"] > 0, name
        assert all(p.startswith("127.0.0.1:") for p in service["ports"]), service
        assert service["healthcheck"] == (name not in {"init", "serve"}), name


def test_buildkit_parses_the_dockerfile_without_warnings(tmp_path: Path) -> None:
    result = _run_check("dockerfile", str(DOCKERFILE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    names = [i["name"].lower() for i in json.loads(result.stdout)]
    assert names.count("from") == 2  # the ONNX export stage, then the runtime
    assert names[-4:] == ["expose", "healthcheck", "entrypoint", "cmd"]
    assert "user" in names and names.index("user") > max(
        i for i, n in enumerate(names) if n == "run"
    )
