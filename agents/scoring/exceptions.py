"""Errors of the value scorer: a bad config file, or inputs no event could have produced."""

from __future__ import annotations

from pathlib import Path

from streams.common.exceptions import MemstreamError


class ScorerConfigError(MemstreamError):
    """The scorer config file is unreadable or invalid; the message names the file and key path."""

    def __init__(self, message: str, *, file: Path, key: str) -> None:
        super().__init__(f"scorer config {file}: {key}: {message}")
        self.file = file
        self.key = key


class ScoreInputError(MemstreamError):
    """An input to the scorer is out of range (e.g. a rating outside [0,1]); dead-letter it."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"in step 'score', {field}: {message}")
        self.field = field
