"""The root of memstream's errors; each concept adds one-line subclasses."""

from __future__ import annotations


class MemstreamError(Exception):
    """Root of every memstream error; ``retriable`` says retry (True) or dead-letter (False)."""

    retriable = False


class SchemaError(MemstreamError):
    """A schema file is malformed, or a version breaks its subject's compatibility policy."""


class ValidationError(MemstreamError):
    """An event does not match its schema or exceeds a limit; the message names the field."""

    def __init__(
        self, message: str, *, field: str, limit: object | None = None, code: str = "invalid"
    ) -> None:
        super().__init__(message)
        self.field = field
        self.limit = limit
        # What kind of refusal: "invalid", "empty" or "oversize" (a dead letter's reason).
        self.code = code


class CorruptStateError(MemstreamError):
    """Stored state is damaged or contradicts itself (a store entry names a memory another
    store lacks; a snapshot file holds something else): a bug or a damaged disk, never the
    input's fault. Not retriable: an agent's record is dead-lettered with this message, so
    its partition goes on."""


class UnavailableError(MemstreamError):
    """The broker or the schema registry did not answer within the bounded wait."""

    retriable = True


class DeliveryError(MemstreamError):
    """The broker refused or could not confirm an event; the event was not stored."""

    retriable = True
