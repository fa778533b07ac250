"""Content identity: normalization, content hashes and deterministic, tenant-scoped memory ids."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from agents.dedupe import content_hash, memory_id
from streams.common import content
from streams.common.content import normalize_text
from streams.common.exceptions import ValidationError


def test_normalized_duplicates_share_memory_id() -> None:
    variants = [
        "Use a compacted topic, keyed by tenant.",
        "  use a COMPACTED topic,\n\tkeyed by tenant  ",
        "«Use a compacted topic, keyed by tenant!»",
        "Ｕｓｅ\u00a0a compacted topic, keyed by tenant",
    ]
    assert len({memory_id("acme", text) for text in variants}) == 1
    assert len({content_hash(text) for text in variants}) == 1


def test_tenants_never_share_memory_ids() -> None:
    text = "Deploy with the staging profile first."
    assert memory_id("acme", text) != memory_id("globex", text)
    # No tenant/content split can collide by concatenation.
    assert memory_id("ab", "c d") != memory_id("a", "bc d")


def test_different_content_gets_different_memory_ids() -> None:
    assert memory_id("acme", "version 3.5") != memory_id("acme", "version 35")


def test_memory_id_is_a_stable_uuid_across_runs() -> None:
    # Pinned: replaying the log must reproduce existing ids, in any process, forever.
    assert memory_id("acme", "Hello, world!") == "9213d8ac-ef00-5369-8e40-0e24a64ba698"
    assert uuid.UUID(memory_id("acme", "Hello, world!")).version == 5


def test_normalize_folds_compatibility_forms_case_and_whitespace() -> None:
    assert normalize_text("ＨＥＬＬＯ\u3000 Straße\n\nﬁle") == "hello strasse file"


def test_normalize_strips_surrounding_punctuation_but_keeps_inner() -> None:
    assert normalize_text('  "...Don\'t use v3.5, use v4!"?  ') == "don't use v3.5, use v4"
    assert normalize_text("¿(hola)?") == "hola"


def test_normalize_is_idempotent() -> None:
    for text in ["  Ǆemal — “quoted” ", "ﬃ İstanbul ẞ", "!!  a . b  !!"]:
        once = normalize_text(text)
        assert normalize_text(once) == once


def test_content_hash_is_sha256_hex_of_normalized_text() -> None:
    expected = hashlib.sha256(b"hello, world").hexdigest()
    assert content_hash("  Hello, World! ") == expected


@pytest.mark.parametrize(
    ("tenant", "text", "field"), [("", "text", "tenant"), ("acme", " ?! ", "text")]
)
def test_memory_id_rejects_empty_tenant_or_content(tenant: str, text: str, field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        memory_id(tenant, text)
    assert raised.value.field == field


def test_the_normalization_cache_answers_as_the_function_does_and_holds_short_ascii_only(
) -> None:
    texts = ["Hello!", "  x  ", "\x1c a \x1f", "A" * 512, "A" * 513, "ÉCOLE", "\ufdfa" * 3,
             "", "...", "Don't\tuse\nv3.5", "ＨＥＬＬＯ"]
    content._normalize_cached.cache_clear()
    for text in texts:
        assert normalize_text(text) == content._normalize(text)
        assert normalize_text(text) == content._normalize(text)  # the second from the cache
    # Cached: the ASCII texts up to 512 characters; never a longer or a non-ASCII one.
    assert content._normalize_cached.cache_info().currsize == 7
    assert content._normalize_cached.cache_info().hits == 7
