"""Token-file lines round-trip their tenant exactly or are refused; one tenant rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streams.common.exceptions import ValidationError
from streams.common.tokens import TokenConfigError, TokenTable, token_line
from streams.common.validation import check_tenant as validate_tenant
from streams.common.validation import tenant_problem
from tests.deployment import REPO

TOKEN = "tok-0123456789abcdef"


@pytest.mark.parametrize("tenant", ["acme", "tenant-3", "a.b_c-d", "A" * 64])
def test_a_hashed_line_round_trips_its_tenant_exactly(tenant: str) -> None:
    assert TokenTable.parse(token_line(TOKEN, tenant)).tenant(TOKEN) == tenant


@pytest.mark.parametrize("tenant", ["acme#staging", " acme", "acme ", "a=b", "a,b", "", "é",
                                    "a:b", "-acme", "A" * 65, "acme\n"])
def test_a_tenant_that_could_not_round_trip_is_refused_everywhere(tenant: str) -> None:
    assert tenant_problem(tenant) is not None
    with pytest.raises(TokenConfigError, match="is not a tenant name"):
        token_line(TOKEN, tenant)
    with pytest.raises(ValidationError, match="is not a tenant name|must not be empty") as caught:
        validate_tenant(tenant, where="telemetry.v1")
    assert caught.value.field == "tenant"


@pytest.mark.parametrize("text", ["tok=acme#staging", "tok=acme staging", "tok=é"])
def test_a_token_file_entry_with_a_bad_tenant_is_refused_not_truncated(text: str) -> None:
    # 'tok=acme#staging' used to load as tenant 'acme' ('#' starts a comment).
    with pytest.raises(TokenConfigError, match="entry 1: tenant"):
        TokenTable.parse(text)


@pytest.mark.parametrize("token", ["short", "has space in the middle", "tab\tseparated-token1",
                                   "ünïcode-token-0123"])
def test_hash_token_refuses_a_token_no_client_could_present(token: str) -> None:
    with pytest.raises(TokenConfigError, match="the token"):
        token_line(token, "acme")


def _hash_token(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", "hash-token", *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_hash_token_reads_the_token_from_stdin_not_argv() -> None:
    done = _hash_token("acme", stdin=f"{TOKEN}\n")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert TOKEN not in line and TokenTable.parse(line).tenant(TOKEN) == "acme"
    # The old form (token on the command line) is refused: it would show in `ps`.
    old = _hash_token(TOKEN, "acme", stdin="")
    assert old.returncode != 0


def test_hash_token_rejects_a_tenant_that_would_not_round_trip() -> None:
    done = _hash_token("acme#staging", stdin=f"{TOKEN}\n")
    assert done.returncode == 2 and done.stdout == ""
    assert "'acme#staging' is not a tenant name" in done.stderr
    assert TOKEN not in done.stderr
