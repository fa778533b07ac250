"""Estimate how much an event is worth remembering, from signals already at hand.

Rules (ARCHITECTURE.md, Scoring):

- No explicit feedback means the value is *unknown*: ``value=None``, ``confidence=0.0``,
  ``needs_feedback=True`` — never a made-up 0.5. The components that can be computed are
  still reported, so a later re-score only needs the rating.
- With feedback, ``value`` is the weighted mean of the *known* components, the kind's
  weights renormalized over them. ``confidence`` is the share of the kind's total weight
  that was known: ``sum(weights of known components) / sum(all weights)``, so 1.0 when
  every weighted component was known and smaller the more had to be left out.
- Re-scoring is calling ``score`` again with the late rating; the scorer keeps no state.

Components, each in [0,1]:

- ``outcome_quality``: SUCCESS 1, PARTIAL 0.5, FAILURE 0; unknown without an outcome.
- ``explicit_feedback``: the user's rating itself.
- ``reusability``: ``(occurrences - 1) / (saturation_occurrences - 1)``, capped at 1;
  content seen once scores 0.
- ``complexity``: word-ish token count / ``saturation_tokens``, capped at 1.
- ``novelty``: ``1 - nearest_similarity``, stretched so similarities at or below
  ``similarity_floor`` count as fully novel, clipped to [0,1]; unknown without a similarity.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from agents.scoring.config import ScorerConfig
from agents.scoring.exceptions import ScoreInputError

# What each outcome says about the interaction's quality: the definition of the
# component, not a tunable weight (those are in the config file).
_OUTCOME_QUALITY = {"SUCCESS": 1.0, "PARTIAL": 0.5, "FAILURE": 0.0}
# Words and single punctuation marks, roughly what a subword tokenizer counts.
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class ScoreInputs:
    """What the score step knows about one event when it scores (or re-scores) it."""

    kind: str
    text: str
    outcome: str | None = None
    feedback_rating: float | None = None
    occurrence_count: int = 1
    nearest_similarity: float | None = None


@dataclass(frozen=True)
class Score:
    """An event's estimated value; ``value`` is None (unknown) until feedback arrives."""

    value: float | None
    confidence: float
    needs_feedback: bool
    components: dict[str, float]
    scorer_version: str


class ValueScorer:
    """Score events with the weights of one versioned config; pure and stateless."""

    def __init__(self, config: ScorerConfig) -> None:
        self._config = config

    @property
    def version(self) -> str:
        """The config version stamped on every score (``scorer_version``)."""
        return self._config.version

    def score(self, inputs: ScoreInputs) -> Score:
        """Return the score of ``inputs``; call again with a late rating to re-score."""
        components = self.components(inputs)
        if inputs.feedback_rating is None:
            return Score(None, 0.0, True, components, self._config.version)
        weights = self._config.weights_for(inputs.kind)
        total = sum(weights.values())
        known = sum(weights[name] for name in components)
        weighted = sum(weights[name] * value for name, value in components.items())
        # known > 0: the config guarantees explicit_feedback has a positive weight.
        value = _clip(weighted / known)
        return Score(value, _clip(known / total), False, components, self._config.version)

    def components(self, inputs: ScoreInputs) -> dict[str, float]:
        """Return each component that can be computed from ``inputs``, in [0,1]."""
        out: dict[str, float] = {}
        if inputs.outcome is not None:
            out["outcome_quality"] = _outcome_quality(inputs.outcome)
        if inputs.feedback_rating is not None:
            out["explicit_feedback"] = _rating(inputs.feedback_rating)
        out["reusability"] = self._reusability(inputs.occurrence_count)
        out["complexity"] = min(
            1.0, len(_TOKEN.findall(inputs.text)) / self._config.saturation_tokens
        )
        if inputs.nearest_similarity is not None:
            out["novelty"] = self._novelty(inputs.nearest_similarity)
        return out

    def _reusability(self, occurrences: int) -> float:
        if isinstance(occurrences, bool) or not isinstance(occurrences, int) or occurrences < 1:
            raise ScoreInputError(
                f"must be an integer >= 1, got {occurrences!r}", field="occurrence_count"
            )
        return min(1.0, (occurrences - 1) / (self._config.saturation_occurrences - 1))

    def _novelty(self, similarity: float) -> float:
        if not math.isfinite(similarity):
            raise ScoreInputError(
                f"must be a finite number, got {similarity!r}", field="nearest_similarity"
            )
        floor = self._config.similarity_floor
        return _clip((1.0 - similarity) / (1.0 - floor))


def _outcome_quality(outcome: str) -> float:
    try:
        return _OUTCOME_QUALITY[outcome]
    except KeyError:
        raise ScoreInputError(
            f"must be one of {sorted(_OUTCOME_QUALITY)} or None, got {outcome!r}", field="outcome"
        ) from None


def _rating(rating: float) -> float:
    if isinstance(rating, bool) or not (isinstance(rating, int | float) and 0.0 <= rating <= 1.0):
        raise ScoreInputError(
            f"must be a number in [0, 1], got {rating!r}", field="feedback_rating"
        )
    return float(rating)


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))
