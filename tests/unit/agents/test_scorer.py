"""The value scorer: unknown without feedback, weights only from the versioned config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.scoring import (
    COMPONENTS,
    DEFAULT_CONFIG_PATH,
    ScoreInputError,
    ScoreInputs,
    ScorerConfigError,
    ValueScorer,
    load_scorer_config,
)

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def default_raw() -> dict[str, Any]:
    return json.loads(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))


def write_config(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "scorer.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


@pytest.fixture
def scorer() -> ValueScorer:
    return ValueScorer(load_scorer_config())


def full_inputs(**changes: Any) -> ScoreInputs:
    base: dict[str, Any] = {
        "kind": "RESPONSE",
        "text": "Use a compacted topic keyed by tenant and memory id.",
        "outcome": "SUCCESS",
        "feedback_rating": 0.8,
        "occurrence_count": 3,
        "nearest_similarity": 0.4,
    }
    base.update(changes)
    return ScoreInputs(**base)


def test_no_feedback_means_unknown_value_not_half(scorer: ValueScorer) -> None:
    score = scorer.score(full_inputs(feedback_rating=None))
    assert score.value is None
    assert score.confidence == 0.0
    assert score.needs_feedback is True


def test_no_feedback_still_reports_computable_components(scorer: ValueScorer) -> None:
    score = scorer.score(full_inputs(feedback_rating=None))
    assert set(score.components) == set(COMPONENTS) - {"explicit_feedback"}
    assert score.components["outcome_quality"] == 1.0


def test_late_feedback_changes_value(scorer: ValueScorer) -> None:
    before = scorer.score(full_inputs(feedback_rating=None))
    liked = scorer.score(full_inputs(feedback_rating=1.0))
    disliked = scorer.score(full_inputs(feedback_rating=0.0))
    assert before.value is None
    assert liked.value is not None and disliked.value is not None
    assert liked.value > disliked.value
    assert liked.needs_feedback is False
    assert liked.confidence > 0.0
    # Everything but the rating is unchanged by the re-score.
    assert {
        k: v for k, v in liked.components.items() if k != "explicit_feedback"
    } == before.components


@pytest.mark.parametrize(
    "unknown", [{}, {"outcome": None}, {"outcome": None, "nearest_similarity": None}]
)
def test_value_is_weighted_mean_of_known_components(
    scorer: ValueScorer, unknown: dict[str, Any]
) -> None:
    score = scorer.score(full_inputs(**unknown))
    weights = default_raw()["kinds"]["RESPONSE"]["weights"]
    expected = sum(weights[k] * v for k, v in score.components.items()) / sum(
        weights[k] for k in score.components
    )
    assert score.value == pytest.approx(expected)
    assert 0.0 <= score.value <= 1.0


def test_confidence_is_share_of_weight_known(scorer: ValueScorer) -> None:
    complete = scorer.score(full_inputs())
    partial = scorer.score(full_inputs(outcome=None, nearest_similarity=None))
    weights = default_raw()["kinds"]["RESPONSE"]["weights"]
    unknown = weights["outcome_quality"] + weights["novelty"]
    assert complete.confidence == pytest.approx(1.0)
    assert partial.confidence == pytest.approx(1.0 - unknown / sum(weights.values()))
    assert "outcome_quality" not in partial.components
    assert "novelty" not in partial.components


def test_weights_come_from_config_file(tmp_path: Path, scorer: ValueScorer) -> None:
    raw = default_raw()
    raw["version"] = "value-scorer/test"
    raw["kinds"]["RESPONSE"]["weights"] = {name: 0.0 for name in COMPONENTS} | {
        "explicit_feedback": 1.0
    }
    reweighted = ValueScorer(load_scorer_config(write_config(tmp_path, raw)))
    inputs = full_inputs(feedback_rating=0.3)
    assert reweighted.score(inputs).value == pytest.approx(0.3)
    assert scorer.score(inputs).value != pytest.approx(0.3)
    assert reweighted.score(inputs).scorer_version == "value-scorer/test"


def test_unknown_kind_uses_default_weights(tmp_path: Path) -> None:
    raw = default_raw()
    raw["default"]["weights"] = {name: 0.0 for name in COMPONENTS} | {"explicit_feedback": 1.0}
    scorer = ValueScorer(load_scorer_config(write_config(tmp_path, raw)))
    assert scorer.score(full_inputs(kind="SOMETHING_NEW", feedback_rating=0.7)).value == 0.7


def test_scorer_version_comes_from_config(scorer: ValueScorer) -> None:
    assert scorer.score(full_inputs()).scorer_version == default_raw()["version"]


@pytest.mark.parametrize(
    ("outcome", "quality"), [("SUCCESS", 1.0), ("PARTIAL", 0.5), ("FAILURE", 0.0)]
)
def test_outcome_quality_follows_outcome(scorer: ValueScorer, outcome: str, quality: float) -> None:
    assert scorer.score(full_inputs(outcome=outcome)).components["outcome_quality"] == quality


def test_reusability_is_zero_on_first_sight_and_saturates(scorer: ValueScorer) -> None:
    saturation = default_raw()["reusability"]["saturation_occurrences"]
    values = [
        scorer.score(full_inputs(occurrence_count=n)).components["reusability"]
        for n in range(1, saturation + 3)
    ]
    assert values[0] == 0.0
    assert values == sorted(values)
    assert values[saturation - 1] == values[-1] == 1.0


def test_complexity_saturates_at_configured_tokens(scorer: ValueScorer) -> None:
    saturation = default_raw()["complexity"]["saturation_tokens"]
    short = scorer.score(full_inputs(text="word " * (saturation // 2)))
    long = scorer.score(full_inputs(text="word " * (saturation * 3)))
    assert short.components["complexity"] == pytest.approx(0.5)
    assert long.components["complexity"] == 1.0


@pytest.mark.parametrize(
    ("similarity", "novelty"), [(0.25, 0.75), (1.0, 0.0), (1.02, 0.0), (-0.3, 1.0)]
)
def test_novelty_is_one_minus_similarity_clipped(
    scorer: ValueScorer, similarity: float, novelty: float
) -> None:
    score = scorer.score(full_inputs(nearest_similarity=similarity))
    assert score.components["novelty"] == pytest.approx(novelty)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"feedback_rating": 1.5}, "feedback_rating"),
        ({"feedback_rating": float("nan")}, "feedback_rating"),
        ({"occurrence_count": 0}, "occurrence_count"),
        ({"outcome": "TIMEOUT"}, "outcome"),
        ({"nearest_similarity": float("nan")}, "nearest_similarity"),
    ],
)
def test_out_of_range_inputs_are_rejected(
    scorer: ValueScorer, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(ScoreInputError, match=field) as raised:
        scorer.score(full_inputs(**change))
    assert raised.value.field == field
    assert raised.value.retriable is False


def edit(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for name in parents:
        raw = raw[name]
    if value is KeyError:
        del raw[last]
    else:
        raw[last] = value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("version", KeyError),
        ("kinds.QUERY.weights.novelity", 0.1),
        ("kinds.NOTE.weights.complexity", -0.2),
        ("kinds.OUTCOME.weights.explicit_feedback", 0.0),
        ("default.weights.novelty", KeyError),
        ("complexity.saturation_tokens", 0),
        ("novelty.similarity_floor", 1.0),
        ("weights", {}),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, key: str, value: Any) -> None:
    raw = default_raw()
    edit(raw, key, value)
    path = write_config(tmp_path, raw)
    with pytest.raises(ScorerConfigError) as raised:
        load_scorer_config(path)
    assert raised.value.key == key
    assert key in str(raised.value)
    assert str(path) in str(raised.value)


def test_unreadable_config_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    for path in (broken, tmp_path / "missing.json"):
        with pytest.raises(ScorerConfigError, match=str(path)):
            load_scorer_config(path)


def test_shipped_config_weighs_every_event_kind() -> None:
    telemetry = json.loads((SCHEMAS / "telemetry-2.avsc").read_text(encoding="utf-8"))
    kind_type = next(f["type"] for f in telemetry["fields"] if f["name"] == "kind")
    config = load_scorer_config()
    assert set(kind_type["symbols"]) | {"TRANSCRIPT"} <= set(config.kind_weights)


def test_similarity_at_or_below_configured_floor_counts_as_fully_novel(tmp_path: Path) -> None:
    raw = default_raw()
    raw["novelty"]["similarity_floor"] = 0.2
    scorer = ValueScorer(load_scorer_config(write_config(tmp_path, raw)))
    novelty = [
        scorer.score(full_inputs(nearest_similarity=s)).components["novelty"] for s in (0.1, 0.6)
    ]
    assert novelty == pytest.approx([1.0, 0.5])
