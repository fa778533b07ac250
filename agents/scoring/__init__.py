"""Value scoring: how much an event is worth remembering, with weights from a versioned file."""

from agents.scoring.config import (
    COMPONENTS,
    DEFAULT_CONFIG_PATH,
    ScorerConfig,
    load_scorer_config,
)
from agents.scoring.exceptions import ScoreInputError, ScorerConfigError
from agents.scoring.scorer import Score, ScoreInputs, ValueScorer

__all__ = [
    "COMPONENTS",
    "DEFAULT_CONFIG_PATH",
    "Score",
    "ScoreInputError",
    "ScoreInputs",
    "ScorerConfig",
    "ScorerConfigError",
    "ValueScorer",
    "load_scorer_config",
]
