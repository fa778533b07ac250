"""The versioned value-scorer config: per-kind weights and component parameters, from a file.

Weights live only in the file (``value-scorer.v1.json`` by default), never in code, so a
re-weighting is a new file version and ``scorer_version`` says which one scored an event.
Every key is checked; unknown keys are errors so a typo never silently falls back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from agents.scoring.exceptions import ScorerConfigError

COMPONENTS = ("outcome_quality", "explicit_feedback", "reusability", "complexity", "novelty")
DEFAULT_CONFIG_PATH = Path(__file__).with_name("value-scorer.v1.json")

_TOP_KEYS = frozenset(
    {"version", "doc", "kinds", "default", "complexity", "reusability", "novelty"}
)


@dataclass(frozen=True)
class ScorerConfig:
    """Validated scorer settings: weights per event kind and the component parameters."""

    version: str
    kind_weights: Mapping[str, Mapping[str, float]]
    default_weights: Mapping[str, float]
    saturation_tokens: int
    saturation_occurrences: int
    similarity_floor: float
    source: Path

    def weights_for(self, kind: str) -> Mapping[str, float]:
        """Return the weights of ``kind``, or the ``default`` weights for a kind not listed."""
        return self.kind_weights.get(kind, self.default_weights)


def load_scorer_config(path: Path | None = None) -> ScorerConfig:
    """Read and validate a scorer config file (the shipped default when ``path`` is None)."""
    file = DEFAULT_CONFIG_PATH if path is None else Path(path)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScorerConfigError(f"cannot be read: {exc.strerror}", file=file, key="<file>") from exc
    except ValueError as exc:
        raise ScorerConfigError(f"is not valid JSON: {exc}", file=file, key="<file>") from exc
    return _parse(raw, file)


def _parse(raw: Any, file: Path) -> ScorerConfig:
    top = _section(raw, "<root>", file, required=("version", "kinds", "default"), allowed=_TOP_KEYS)
    version = top["version"]
    if not isinstance(version, str) or not version.strip():
        _fail(file, "version", f"must be a non-empty string, got {version!r}")
    if "doc" in top and not isinstance(top["doc"], str):
        _fail(file, "doc", "must be a string")
    kinds = _section(top["kinds"], "kinds", file, required=(), allowed=None)
    kind_weights = {kind: _weights(spec, f"kinds.{kind}", file) for kind, spec in kinds.items()}
    complexity = _section(
        top.get("complexity", {}), "complexity", file, ("saturation_tokens",), {"saturation_tokens"}
    )
    reusability = _section(
        top.get("reusability", {}),
        "reusability",
        file,
        ("saturation_occurrences",),
        {"saturation_occurrences"},
    )
    novelty = _section(
        top.get("novelty", {}), "novelty", file, ("similarity_floor",), {"similarity_floor"}
    )
    return ScorerConfig(
        version=version,
        kind_weights=MappingProxyType(kind_weights),
        default_weights=_weights(top["default"], "default", file),
        saturation_tokens=_int(
            complexity["saturation_tokens"], "complexity.saturation_tokens", 1, file
        ),
        saturation_occurrences=_int(
            reusability["saturation_occurrences"], "reusability.saturation_occurrences", 2, file
        ),
        similarity_floor=_floor(novelty["similarity_floor"], "novelty.similarity_floor", file),
        source=file,
    )


def _weights(spec: Any, key: str, file: Path) -> Mapping[str, float]:
    """Validate ``{"weights": {...}}``: every component named, each weight finite and >= 0."""
    section = _section(spec, key, file, required=("weights",), allowed={"weights"})
    weights = _section(section["weights"], f"{key}.weights", file, COMPONENTS, set(COMPONENTS))
    out: dict[str, float] = {}
    for name in COMPONENTS:
        wkey = f"{key}.weights.{name}"
        value = _number(weights[name], wkey, file)
        if value < 0:
            _fail(file, wkey, f"weight must be >= 0, got {value}")
        out[name] = value
    # A value exists only once feedback arrived, so feedback must count towards it;
    # this also keeps the known weight above zero whenever a value is computed.
    if out["explicit_feedback"] <= 0:
        _fail(file, f"{key}.weights.explicit_feedback", "weight must be > 0")
    return MappingProxyType(out)


def _section(
    value: Any,
    key: str,
    file: Path,
    required: tuple[str, ...],
    allowed: set[str] | frozenset[str] | None,
) -> Mapping[str, Any]:
    """Check that ``value`` is an object with the required keys and no unknown ones."""
    if not isinstance(value, dict):
        _fail(file, key, f"must be an object, got {type(value).__name__}")
    for name in required:
        if name not in value:
            _fail(file, _join(key, name), "is required")
    if allowed is not None:
        for name in sorted(set(value) - set(allowed)):
            _fail(file, _join(key, name), f"is not a known key (expected one of {sorted(allowed)})")
    return value


def _number(value: Any, key: str, file: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(file, key, f"must be a finite number, got {value!r}")
    return float(value)


def _int(value: Any, key: str, minimum: int, file: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(file, key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _floor(value: Any, key: str, file: Path) -> float:
    number = _number(value, key, file)
    if not 0.0 <= number < 1.0:
        _fail(file, key, f"must be in [0, 1), got {number}")
    return number


def _join(parent: str, name: str) -> str:
    return name if parent == "<root>" else f"{parent}.{name}"


def _fail(file: Path, key: str, message: str) -> NoReturn:
    raise ScorerConfigError(message, file=file, key=key)
