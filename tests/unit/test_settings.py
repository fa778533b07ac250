"""Settings come from MEMSTREAM_* and secrets also from *_FILE paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError as PydanticValidationError

from streams.common.settings import SettingsError, load_settings
from tests.deployment import REPO

SECRET_PARTS = ["Hx7Qz2Lm9Wp4", "Kd8Rt3Yv6Nb1", "Zq5Jc8Fs2Ug7", "Pw4Xe9Ta3Mr6", "Bn2Vc7Lq5Ke8"]
SECRETS = {
    "MEMSTREAM_SASL_PASSWORD": "Hx7Qz2Lm9Wp4",
    "MEMSTREAM_REGISTRY_BASIC_AUTH": "reader:Kd8Rt3Yv6Nb1",
    "MEMSTREAM_API_TOKENS": "Zq5Jc8Fs2Ug7=acme",
    "MEMSTREAM_SUMMARY_LLM_API_KEY": "sk-Pw4Xe9Ta3Mr6",
    "MEMSTREAM_SCHEMA_REGISTRY_URL": "http://reader:Bn2Vc7Lq5Ke8@registry:8081/apis",
}
BREAKERS: list[dict[str, str | None]] = [
    {"MEMSTREAM_PARTITIONS": "abc"},  # a field error beside the secrets
    # the model validator's error (its input is every other setting, secrets included)
    {"MEMSTREAM_API_TOKENS_FILE": "/nonexistent/tokens", "MEMSTREAM_API_TOKENS": None},
    {"MEMSTREAM_SERVE_PORT": "http://user:Bn2Vc7Lq5Ke8@x"},  # a URL with credentials as input
]


def _leaked(text: str) -> list[str]:
    """Every 4-character piece of a secret found in ``text`` (its start or end included)."""
    pieces = {part[i:i + 4] for part in SECRET_PARTS for i in range(len(part) - 3)}
    return sorted(p for p in pieces if p in text)


@pytest.mark.parametrize("breaker", BREAKERS)
def test_a_failed_settings_load_shows_no_part_of_any_secret(
    monkeypatch: pytest.MonkeyPatch, breaker: dict[str, str]
) -> None:
    for name, value in {**SECRETS, **breaker}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert next(iter(breaker)) in str(caught.value)
    assert _leaked(str(caught.value)) == [], str(caught.value)


@pytest.mark.parametrize("breaker", BREAKERS)
def test_the_cli_reports_bad_settings_in_one_line_without_secrets(
    breaker: dict[str, str]
) -> None:
    env = {k: v for k, v in {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **SECRETS,
                             **breaker}.items() if v is not None}
    done = subprocess.run([sys.executable, "-m", "streams", "stats"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: invalid settings")
    assert _leaked(done.stdout + done.stderr) == [], done.stderr


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSTREAM_BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("MEMSTREAM_TOPIC_PREFIX", "prod.")
    settings = load_settings()
    assert settings.bootstrap_servers == "broker:9092"
    assert settings.topic("telemetry.v1") == "prod.telemetry.v1"


def test_secret_read_from_file_and_never_printed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "sasl"
    secret.write_text("s3cret-value\n")
    monkeypatch.setenv("MEMSTREAM_SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("MEMSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MEMSTREAM_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("MEMSTREAM_SASL_USERNAME", "svc")
    settings = load_settings()
    conf = settings.kafka_client_config()
    assert conf["sasl.password"] == "s3cret-value"
    assert conf["security.protocol"] == "SASL_SSL"
    assert "s3cret-value" not in repr(settings)


def test_direct_secret_wins_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "p").write_text("from-file")
    monkeypatch.setenv("MEMSTREAM_SASL_PASSWORD_FILE", str(tmp_path / "p"))
    monkeypatch.setenv("MEMSTREAM_SASL_PASSWORD", "from-env")
    assert load_settings().kafka_client_config()["sasl.password"] == "from-env"


def test_unreadable_secret_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSTREAM_REGISTRY_BASIC_AUTH_FILE", "/nonexistent/secret")
    with pytest.raises(SettingsError, match="MEMSTREAM_REGISTRY_BASIC_AUTH_FILE"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(PydanticValidationError):
        settings.bootstrap_servers = "x"  # type: ignore[misc]


def test_no_secret_in_repository() -> None:
    repo = Path(__file__).resolve().parents[2]
    # What git would commit (tracked, or new and not ignored): not .venv's CA bundles.
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=repo, capture_output=True, text=True, check=True).stdout
    assert "pyproject.toml" in listed.split()
    offenders = [p for p in listed.split() if Path(p).suffix in {".env", ".pem", ".key"}]
    assert offenders == []


def test_summary_llm_key_from_file_and_window_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "llm").write_text("sk-local\n")
    monkeypatch.setenv("MEMSTREAM_SUMMARY_LLM_API_KEY_FILE", str(tmp_path / "llm"))
    monkeypatch.setenv("MEMSTREAM_SUMMARY_WINDOW_S", "600")
    monkeypatch.setenv("MEMSTREAM_SUMMARY_GRACE_S", "0")
    settings = load_settings()
    assert settings.summary_llm_api_key is not None
    assert settings.summary_llm_api_key.get_secret_value() == "sk-local"
    assert "sk-local" not in repr(settings)
    assert (settings.summary_window_s, settings.summary_grace_s) == (600, 0)
    assert settings.summary_llm_url is None  # extractive only unless an endpoint is set


def test_worker_and_sdk_compress_each_with_their_own_codec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams.processing.clients import producer_config

    settings = load_settings()
    assert producer_config(settings)["compression.type"] == "lz4"
    assert settings.compression == "zstd"
    monkeypatch.setenv("MEMSTREAM_WORKER_COMPRESSION", "zstd")
    assert producer_config(load_settings())["compression.type"] == "zstd"


@pytest.mark.parametrize("value", ["brotli", "", "LZ4 ", "zstd;rm -rf /"])
def test_unknown_compression_codec_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MEMSTREAM_WORKER_COMPRESSION", value)
    with pytest.raises(SettingsError, match="MEMSTREAM_WORKER_COMPRESSION.*'lz4'"):
        load_settings()
