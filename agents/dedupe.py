"""Content identity for de-duplication: normalized text, its hash, and deterministic memory ids.

Replaying the log must re-produce the same memory ids (idempotent upserts into the
compacted ``memories.v1``), so an id derives only from the tenant and normalized content.
"""

from __future__ import annotations

import hashlib
import unicodedata
import uuid

from streams.exceptions import ValidationError

# Fixed forever: changing it would give every existing memory a new id.
MEMORY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "memstream:memory")


def normalize_text(text: str) -> str:
    """Return ``text`` as compared for duplicates: NFKC, casefolded, whitespace collapsed.

    Surrounding punctuation and whitespace are stripped ("Hello!" == "hello"); inner
    punctuation is kept, since it can carry meaning ("3.5" vs "35", "don't").
    """
    # NFKC again after casefolding: casefold can produce sequences NFKC would rewrite,
    # and a second pass keeps the function idempotent.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    collapsed = " ".join(folded.split())
    start, end = 0, len(collapsed)
    while start < end and _is_edge_noise(collapsed[start]):
        start += 1
    while end > start and _is_edge_noise(collapsed[end - 1]):
        end -= 1
    return collapsed[start:end]


def content_hash(text: str) -> str:
    """Return the sha256 hex digest of the normalized text (``content_hash`` in scored.v1)."""
    return _digest(normalize_text(text))


def memory_id(tenant: str, text: str) -> str:
    """Return the memory id of ``text`` for ``tenant``: same tenant + normalized content, same id.

    A uuid5 in a per-tenant namespace, so two tenants never share an id for equal content.
    """
    if not tenant:
        raise ValidationError("in step 'memorize', tenant: must not be empty", field="tenant")
    normalized = normalize_text(text)
    if not normalized:
        raise ValidationError(
            "in step 'memorize', text: is empty after normalization; nothing to remember",
            field="text",
        )
    return memory_id_of_hash(tenant, _digest(normalized))


def memory_id_of_hash(tenant: str, digest: str) -> str:
    """The memory id of content whose ``content_hash`` is ``digest`` (what ``memory_id``
    gives for its text): lets a consumer of scored.v1 name the memory without the text."""
    return str(uuid.uuid5(uuid.uuid5(MEMORY_NAMESPACE, tenant), digest))


def _digest(normalized: str) -> str:
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def _is_edge_noise(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")
