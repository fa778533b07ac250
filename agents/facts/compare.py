"""Fact updates: does a near-duplicate restate a memory, change its value, or talk about
something else?

Two statements close in embedding space ("The auth service deploys on Friday." / "... on
Tuesday.") can differ in exactly the part that matters. This module finds the typed values
in each text (numbers, dates, weekdays, times, versions, ports, hostnames, URLs, e-mails,
identifiers, named entities), compares them, and decides without a model:

- ``SAME``: no value of the old text was replaced by another value of the same kind; a
  near duplicate may merge (a paraphrase, or a restatement with more detail).
- ``SUPERSEDES``: a value was replaced by another value of the same kind in value
  position ("deploys on Friday" -> "on Tuesday"): the new text states a changed fact.
- ``DISTINCT``: the replaced value is the statement's subject ("Alice's laptop runs ..."
  vs "Bob's laptop runs ..."): two facts, kept apart.

Pure functions of the two texts, so a replay decides exactly as the first run did.
"""

from __future__ import annotations

import difflib
import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from agents.facts.slots import NOT_NAMES, Slot, Token, slots_of, tokens


class Verdict(enum.Enum):
    """How a new statement relates to the memory it is near."""

    SAME = "same"
    SUPERSEDES = "supersedes"
    DISTINCT = "distinct"



@dataclass(frozen=True)
class FactComparison:
    """The verdict, and for a conflict the slot kind and both values."""

    verdict: Verdict
    kind: str | None = None
    old_value: str | None = None
    new_value: str | None = None
    # Only values differ: the two texts are the same sentence once their values are removed.
    same_frame: bool = False



# Texts longer than this (in tokens) are compared by their values only.
MAX_ALIGNED_TOKENS = 200
# A name may be written as an identifier ("Okta" -> "Auth0"): either replaces the other.
_FAMILY = {"entity": {"entity", "identifier"}, "identifier": {"identifier", "entity"}}
# Kinds whose change is a change of value wherever they stand ("port 6379" -> "8443").
VALUE_KINDS = frozenset({"number", "date", "weekday", "time", "version", "port", "day"})
# Kinds that can also name the subject ("db1.internal is the primary" vs "db2...").
NAME_KINDS = frozenset({"entity", "identifier", "host", "url", "email"})
# Words that never head a noun phrase: a modifier swap before one of these is no swap.
_FUNCTION_WORDS = frozenset("""
a an the my our your his her their its this that these those is are was were be been
am do does did can could should would will shall may might must and or but so if then
in on at for to from by with without of about after before during until since every
each all any some no not 's
""".split())
# Words after a name that make the name the statement's subject ("Alice's laptop runs").
_PREDICATE_CUES = frozenset("""
is are was were be been 's has have had owns own uses use runs run listens lives
deploys deploy ships ship handles handle leads lead manages manage prefers prefer
likes like works work needs need requires require points resolves costs takes
starts start ends end expires expire hosts host serves serve stores store belongs
reports report sits sit covers cover = : -> means to
""".split())



def compare_facts(old: str, new: str) -> FactComparison:
    """Decide whether ``new`` restates, supersedes or is distinct from ``old``.

    A value of ``old`` counts as replaced only if the other text does not contain it at
    all (as a slot of any kind or a plain word), and ``new`` holds a different value of the
    same kind that ``old`` does not contain: "on Friday" -> "on Tuesday" conflicts,
    "on Friday" -> "on Friday at 3pm" adds a detail and does not.
    """
    a, b = _analysed(old), _analysed(new)
    old_tokens, new_tokens, old_slots, new_slots = a.tokens, b.tokens, a.slots, b.slots
    same_frame = a.frame == b.frame
    swapped = _swapped_kind(old_slots, new_slots) if same_frame else None
    if swapped is not None:
        return FactComparison(Verdict.SUPERSEDES, swapped, same_frame=True)
    # The word alignment is quadratic in the worst case: long texts skip it (a memory of
    # hundreds of words is no single fact whose subject could be swapped).
    short = max(len(old_tokens), len(new_tokens)) <= MAX_ALIGNED_TOKENS
    modifier = _swapped_modifier(old_tokens, new_tokens, old_slots, new_slots) if short else None
    if modifier is not None:
        return FactComparison(Verdict.DISTINCT, "modifier", *modifier)
    for kind in _kinds_in_order(old_slots):
        family = _FAMILY.get(kind, {kind})
        gone = [s for s in old_slots if s.kind == kind and s.value not in b.words]
        came = [s for s in new_slots if s.kind in family and s.value not in a.words]
        if not gone or not came:
            continue
        changed = came[0]
        # A question states nothing: "restart it on cluster 0?" and "... cluster 5?" are two
        # questions, neither replaces the other.
        if kind in NAME_KINDS and _is_subject(new_tokens, changed) \
                or _is_question(old_tokens) or _is_question(new_tokens):
            return FactComparison(Verdict.DISTINCT, kind, gone[0].value, changed.value)
        return FactComparison(Verdict.SUPERSEDES, kind, gone[0].value, changed.value, same_frame)
    return FactComparison(Verdict.SAME)


@dataclass(frozen=True)
class _Analysis:
    """What ``compare_facts`` reads of one text (immutable: shared through the cache)."""

    tokens: tuple[Token, ...]
    slots: tuple[Slot, ...]
    frame: tuple[str, ...]
    words: frozenset[str]


# memorize compares a new text with each memory it is near, and a memory with each text
# near it: the same texts come back batch after batch. Short ones (one fact, the usual
# memory) keep their analysis; at most _CACHED × ~50 tokens, a few MB.
_CACHED_CHARS = 256
_CACHED = 2048


def _analyse(text: str) -> _Analysis:
    toks = tokens(text)
    slots = slots_of(toks)
    return _Analysis(tuple(toks), tuple(slots), tuple(_frame(toks, slots)),
                     frozenset(_word_set(toks, slots)))


_analyse_cached = functools.lru_cache(maxsize=_CACHED)(_analyse)


def analysis_cache_clear() -> None:
    """Forget the cached analyses (benchmarks measure a text's first sight with it)."""
    _analyse_cached.cache_clear()


def _analysed(text: str) -> _Analysis:
    return _analyse_cached(text) if len(text) <= _CACHED_CHARS else _analyse(text)


def _is_question(toks: Sequence[Token]) -> bool:
    return bool(toks) and (toks[-1].raw == "?" or toks[0].low in _QUESTION_WORDS)


def _kinds_in_order(slots: Sequence[Slot]) -> list[str]:
    kinds: list[str] = []
    for slot in slots:
        if slot.kind not in kinds:
            kinds.append(slot.kind)
    return kinds


def _word_set(toks: Sequence[Token], slots: Sequence[Slot]) -> set[str]:
    """Every canonical slot value and every plain word of a text, for "does the other
    text say this anywhere" checks."""
    words = {s.value for s in slots}
    for tok in toks:
        words.add(tok.low)
        if tok.low.endswith("'s"):
            words.add(tok.low[:-2])
    return words


def _is_subject(toks: Sequence[Token], slot: Slot) -> bool:
    """Whether the name at ``slot`` is followed (within a few words) by a predicate:
    "Alice's laptop runs ...", "db1.internal is the primary"."""
    for tok in toks[slot.end : slot.end + 4]:
        if tok.low in _PREDICATE_CUES:
            return True
        if tok.raw in {".", "!", "?", ","}:
            return False
    return False


def _swapped_kind(old_slots: Sequence[Slot], new_slots: Sequence[Slot]) -> str | None:
    """A kind whose values are the same but in another order ("Alice owns billing, Bob
    owns auth" -> "Bob owns billing, Alice owns auth")."""
    for kind in _kinds_in_order(old_slots):
        a = [s.value for s in old_slots if s.kind == kind]
        b = [s.value for s in new_slots if s.kind == kind]
        if len(a) > 1 and sorted(a) == sorted(b) and a != b:
            return kind
    return None


def _frame(toks: Sequence[Token], slots: Sequence[Slot]) -> list[str]:
    """The words of a text that are not slots: what stays when only values change."""
    in_slot = {i for s in slots for i in range(s.position, s.end)}
    return [t.low for i, t in enumerate(toks) if i not in in_slot and t.kind != "punct"]


def _swapped_modifier(
    a_tokens: Sequence[Token], b_tokens: Sequence[Token], old_slots: Sequence[Slot],
    new_slots: Sequence[Slot],
) -> tuple[str, str] | None:
    """A plain word (or two) before the same head word replaced by another: "the *auth*
    service" vs "the *billing* service", "my *son's* school" vs "my *daughter's* school".
    The head stays, its modifier changes: another thing of the same sort, not a new value.
    """
    # Names may be modifiers or heads ("the *prod* Grafana"); values may not.
    a_slot = {i for s in old_slots if s.kind != "entity" for i in range(s.position, s.end)}
    b_slot = {i for s in new_slots if s.kind != "entity" for i in range(s.position, s.end)}
    a = [_ABBREVIATIONS.get(t.low, t.low) for t in a_tokens]
    b = [_ABBREVIATIONS.get(t.low, t.low) for t in b_tokens]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "replace" or i2 - i1 != j2 - j1 or i2 - i1 > 2:
            continue
        if i2 >= len(a) or j2 >= len(b) or a[i2] != b[j2]:
            continue
        olds, news = range(i1, i2), range(j1, j2)
        if any(i in a_slot for i in olds) or any(j in b_slot for j in news):
            continue
        if not (all(_is_modifier(a_tokens[i]) for i in olds)
                and all(_is_modifier(b_tokens[j]) for j in news)):
            continue
        head = a_tokens[i2]
        modifies = head.kind == "word" and head.low not in _FUNCTION_WORDS and i2 not in a_slot
        # "My *dentist* is ..." vs "My *doctor* is ...": the subject noun itself swapped.
        subject = (i2 - i1 == 1 and i1 > 0 and a[i1 - 1] in _DETERMINERS
                   and head.low in _PREDICATE_CUES)
        if modifies or subject:
            return " ".join(a[i1:i2]), " ".join(b[j1:j2])
    return None


def _is_modifier(tok: Token) -> bool:
    return tok.kind == "word" and tok.low not in NOT_NAMES and tok.low not in _DEGREE_WORDS


# Short forms read as their long form when comparing wording ("DB host" = "database host").
_ABBREVIATIONS = {
    "db": "database", "dbs": "databases", "prod": "production", "env": "environment",
    "config": "configuration", "repo": "repository", "docs": "documentation",
    "dev": "development", "k8s": "kubernetes", "msg": "message", "info": "information",
}
_QUESTION_WORDS = frozenset({"how", "what", "when", "where", "why", "which", "who", "whose",
                             "can", "could", "should", "would", "is", "are", "do", "does"})
_DETERMINERS = frozenset({"my", "our", "your", "his", "her", "their", "the"})
# Words that qualify an amount or a verb, not a thing ("about 12", "roughly 12").
_DEGREE_WORDS = frozenset("""
about roughly around approximately nearly almost over under exactly only just still
really very quite usually generally typically normally mostly always often
""".split())


class Action(enum.Enum):
    """What memorize does with a new text and one memory it is near."""

    MERGE = "merge"
    SUPERSEDE = "supersede"
    NEW = "new"  # a memory of its own (not near, or about something else)


@dataclass(frozen=True)
class NearDecision:
    """An action and the comparison behind it."""

    action: Action
    comparison: FactComparison


def decide_near(
    memory_text: str,
    text: str,
    similarity: float,
    *,
    merge_threshold: float,
    supersede_threshold: float,
    same_frame_threshold: float | None = None,
) -> NearDecision:
    """Merge a restatement at ``merge_threshold``; supersede a changed value of the same
    subject at ``supersede_threshold`` (a value change moves the embedding more than a
    paraphrase does, so it may sit lower), or at ``same_frame_threshold`` when nothing but
    the value differs (a new name moves it most: "My manager is Priya Raman." -> "... Daniel
    Kim." is 0.65); anything else is a memory of its own."""
    frame = supersede_threshold if same_frame_threshold is None else same_frame_threshold
    if similarity < min(merge_threshold, supersede_threshold, frame):
        return NearDecision(Action.NEW, FactComparison(Verdict.SAME))
    found = compare_facts(memory_text, text)
    if found.verdict is Verdict.SAME and similarity >= merge_threshold:
        return NearDecision(Action.MERGE, found)
    if found.verdict is Verdict.SUPERSEDES and (
        similarity >= supersede_threshold or found.same_frame and similarity >= frame
    ):
        return NearDecision(Action.SUPERSEDE, found)
    return NearDecision(Action.NEW, found)
