"""Bearer tokens hashed at rest, context packing, consistency token parsing."""

from __future__ import annotations

import pytest

from streams.common.tokens import TokenConfigError, TokenTable, token_digest
from streams.service.consistency import InvalidConsistencyTokenError, Position, parse_token
from streams.service.context import Piece, pack


def test_tokens_map_to_one_tenant_plain_or_hashed() -> None:
    table = TokenTable.parse(f"secret-a=acme\n# comment\nsha256:{token_digest('secret-b')}=globex")
    assert table.tenant("secret-a") == "acme"
    assert table.tenant("secret-b") == "globex"
    assert table.tenant(f"sha256:{token_digest('secret-b')}") is None, "a digest is no token"
    assert table.tenant("nope") is None
    assert "secret-a" not in repr(table._tenant_of)


@pytest.mark.parametrize("text", ["no-equals", "=acme", "sha256:xyz=acme", "t=a,t=b"])
def test_malformed_token_entries_are_refused(text: str) -> None:
    with pytest.raises(TokenConfigError):
        TokenTable.parse(text)


def test_pack_dedupes_and_respects_the_budget() -> None:
    pieces = [
        Piece("summary", "s1", "one two three", ("e1",)),
        Piece("memory", "m1", "One two three!", ("e2",)),  # same normalized text
        Piece("memory", "m2", "a b c d e f g h i j", ("e3",)),  # too long
        Piece("memory", "m3", "four five", ("e4",)),
        Piece("memory", "m3", "four five again", ("e4",)),  # same id
    ]
    packed, used = pack(pieces, 6, lambda t: len(t.split()))
    assert [p.id for p in packed] == ["s1", "m3"]
    assert used == 5 and [p.tokens for p in packed] == [3, 2]


def test_consistency_tokens_parse_with_a_prefix() -> None:
    assert parse_token("p.telemetry.v1:2:41,p.memories.v1:2:7", "p.") == [
        Position("telemetry.v1", 2, 41), Position("memories.v1", 2, 7)]
    # what DELETE answers: the command's position, which memorize applies
    assert parse_token("p.commands.v1:1:3", "p.") == [Position("commands.v1", 1, 3)]
    for bad in ("telemetry.v1:x:1", "nope.v1:0:1", "deadletter.v1:0:1", "junk"):
        with pytest.raises(InvalidConsistencyTokenError):
            parse_token(bad)
