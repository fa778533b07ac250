"""Content identity for de-duplication: normalized text, its hash, and deterministic memory ids.

Replaying the log must re-produce the same memory ids (idempotent upserts into the
compacted ``memories.v1``), so an id derives only from the tenant and normalized content.
"""

from __future__ import annotations

import hashlib
import uuid

from streams.common.content import normalize_text
from streams.common.exceptions import ValidationError

__all__ = ["content_hash", "memory_id", "memory_id_of_hash", "restatement_id"]

# Fixed forever: changing it would give every existing memory a new id.
MEMORY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "memstream:memory")


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


def restatement_id(tenant: str, text: str, event_id: str) -> str:
    """Return the id of a memory whose content already has a memory that was superseded
    ("Friday", then "Tuesday", then "Friday" again): the content id cannot be reused, so the
    event that restated it joins the derivation. Still a function of the log only."""
    base = memory_id(tenant, text)
    return str(uuid.uuid5(uuid.UUID(base), f"restated:{event_id}"))


def _digest(normalized: str) -> str:
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()
