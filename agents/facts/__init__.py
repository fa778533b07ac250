"""Fact updates: decide whether a near duplicate restates, changes or is beside a memory."""

from agents.facts.compare import (
    Action,
    FactComparison,
    NearDecision,
    Verdict,
    compare_facts,
    decide_near,
)
from agents.facts.slots import Slot, extract_slots

__all__ = [
    "Action", "FactComparison", "NearDecision", "Slot", "Verdict", "compare_facts", "decide_near",
    "extract_slots",
]
