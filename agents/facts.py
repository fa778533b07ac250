"""Fact slots: does a near-duplicate restate a memory, change its value, or talk about
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
import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "Action", "FactComparison", "NearDecision", "Slot", "Verdict", "compare_facts", "decide_near",
    "extract_slots",
]


class Verdict(enum.Enum):
    """How a new statement relates to the memory it is near."""

    SAME = "same"
    SUPERSEDES = "supersedes"
    DISTINCT = "distinct"


@dataclass(frozen=True)
class Slot:
    """A typed value found in a text: its kind, canonical value and token position."""

    kind: str
    value: str
    position: int  # index of its first token in the text's token list
    end: int  # index after its last token


@dataclass(frozen=True)
class FactComparison:
    """The verdict, and for a conflict the slot kind and both values."""

    verdict: Verdict
    kind: str | None = None
    old_value: str | None = None
    new_value: str | None = None


# Kinds whose change is a change of value wherever they stand ("port 6379" -> "8443").
VALUE_KINDS = frozenset({"number", "date", "weekday", "time", "version", "port", "day"})
# Kinds that can also name the subject ("db1.internal is the primary" vs "db2...").
NAME_KINDS = frozenset({"entity", "identifier", "host", "url", "email"})

_WEEKDAYS = {
    "monday": 0, "mon": 0, "tuesday": 1, "tue": 1, "tues": 1, "wednesday": 2, "wed": 2,
    "thursday": 3, "thu": 3, "thur": 3, "thurs": 3, "friday": 4, "fri": 4,
    "saturday": 5, "sat": 5, "sunday": 6, "sun": 6,
}
_MONTHS = {
    name: i + 1
    for i, names in enumerate([
        ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"),
        ("may",), ("june", "jun"), ("july", "jul"), ("august", "aug"),
        ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
        ("december", "dec"),
    ])
    for name in names
}
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "ninety": 90,
    "hundred": 100, "thousand": 1000,
}
_RELATIVE_DAYS = frozenset({"today", "tomorrow", "yesterday", "tonight"})
# Nouns after which a number names a thing rather than a quantity ("ticket 4521").
_ID_NOUNS = frozenset({
    "ticket", "issue", "pr", "bug", "incident", "order", "invoice", "room", "flight",
    "case", "build", "job", "account", "project", "sprint", "gate", "desk", "floor",
})
# Capitalized words that are not names: sentence starters, function words, imperatives.
_NOT_NAMES = frozenset("""
a an the i i'm i've i'll i'd my me we we're our ours you your yours he she it its they
them their this that these those there here who what when where why which how whose
is are was were be been am do does did don't can could should would will shall may
might must please remember note notes fyi btw also and or but so if then else because
in on at for to from by with without of about after before during until since every
each all any some no not never always usually often just only yes ok okay hi hello
hey thanks set use make let run check ask tell send add keep put move change update
deploy deploys deployments deployment meeting meetings team today tomorrow yesterday
tonight next last new old current currently now reminder important todo heads
""".split())
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

_TOKEN = re.compile(
    r"""
    (?P<url>https?://[^\s<>"']+)
  | (?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)
  | (?P<isodate>\d{4}-\d{1,2}-\d{1,2})
  | (?P<slashdate>\d{1,2}/\d{1,2}(?:/\d{2,4})?)
  | (?P<time>\d{1,2}:\d{2}(?:\s?[ap]\.?m\.?)?|\d{1,2}\s?[ap]\.?m\.?(?![\w]))
  | (?P<ip>\d{1,3}(?:\.\d{1,3}){3})
  | (?P<version>v\d+(?:\.\d+)*\b|\d+\.\d+\.\d+(?:[-.\w]*)?)
  | (?P<host>(?=[\w-]*[A-Za-z])[A-Za-z0-9](?:[\w-]*[A-Za-z0-9])?
             (?:\.[A-Za-z0-9](?:[\w-]*[A-Za-z0-9])?)+)
  | (?P<number>\#?\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th|%|k|m|gb|mb|kb|tb|ms|s|h|x)?\b)
  | (?P<word>[^\W\d_](?:[\w'’-]*\w)?|\w+)
  | (?P<punct>[^\w\s])
    """,
    re.VERBOSE | re.UNICODE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    raw: str
    low: str


def _tokens(text: str) -> list[_Token]:
    text = unicodedata.normalize("NFKC", text).replace("’", "'")
    found = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "word"
        raw = match.group()
        if kind in ("url", "host"):
            raw = raw.rstrip(".,;:!?)")
        found.append(_Token(kind, raw, raw.casefold()))
    return found


def _canonical_number(raw: str) -> str:
    digits = raw.lstrip("#").replace(",", "")
    match = re.match(r"(\d+(?:\.\d+)?)(.*)", digits)
    if match is None:
        return digits
    number, suffix = match.groups()
    if suffix in ("st", "nd", "rd", "th"):
        suffix = ""
    value = float(number)
    text = str(int(value)) if value.is_integer() else repr(value)
    return text + suffix


def _canonical_time(raw: str) -> str:
    low = raw.casefold().replace(".", "").replace(" ", "")
    match = re.match(r"(\d{1,2})(?::(\d{2}))?(am|pm)?$", low)
    if match is None:
        return low
    hour, minute, half = int(match.group(1)), int(match.group(2) or 0), match.group(3)
    if half == "pm" and hour < 12:
        hour += 12
    if half == "am" and hour == 12:
        hour = 0
    return f"{hour:02d}:{minute:02d}"


def extract_slots(text: str) -> list[Slot]:
    """The typed values of ``text`` in order, each with a canonical value."""
    tokens = _tokens(text)
    slots: list[Slot] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        prev = tokens[i - 1].low if i else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "url":
            slots.append(Slot("url", tok.low.rstrip("/"), i, i + 1))
        elif tok.kind == "email":
            slots.append(Slot("email", tok.low, i, i + 1))
        elif tok.kind in ("isodate", "slashdate"):
            parts = re.split(r"[-/]", tok.low)
            slots.append(Slot("date", "-".join(str(int(p)) for p in parts), i, i + 1))
        elif tok.kind == "time":
            slots.append(Slot("time", _canonical_time(tok.raw), i, i + 1))
        elif tok.kind == "version":
            slots.append(Slot("version", tok.low.lstrip("v"), i, i + 1))
        elif tok.kind in ("ip", "host"):
            slots.append(Slot("host", tok.low, i, i + 1))
            if nxt is not None and nxt.raw == ":" and i + 2 < len(tokens) \
                    and tokens[i + 2].kind == "number":
                slots.append(Slot("port", _canonical_number(tokens[i + 2].raw), i + 2, i + 3))
                i += 3
                continue
        elif tok.kind == "number":
            i = _number_slot(tokens, i, prev, slots)
            continue
        elif tok.kind == "word":
            i = _word_slot(tokens, i, prev, slots)
            continue
        i += 1
    return slots


def _number_slot(tokens: list[_Token], i: int, prev: str, slots: list[Slot]) -> int:
    tok = tokens[i]
    value = _canonical_number(tok.raw)
    nxt = tokens[i + 1].low if i + 1 < len(tokens) else ""
    if nxt in _MONTHS and not tok.raw.startswith("#"):  # "3 March"
        slots.append(Slot("date", f"{_MONTHS[nxt]}-{value}", i, i + 2))
        return i + 2
    if prev == "port":
        kind = "port"
    elif tok.raw.startswith("#") or prev in _ID_NOUNS:
        kind = "identifier"
    elif prev in ("version", "python", "node", "java", "postgres", "kafka", "release"):
        kind = "version"
    else:
        kind = "number"
    slots.append(Slot(kind, value, i, i + 1))
    return i + 1


def _word_slot(tokens: list[_Token], i: int, prev: str, slots: list[Slot]) -> int:
    tok = tokens[i]
    low = tok.low.rstrip("s") if tok.low.endswith("days") else tok.low  # "Fridays"
    if low in _WEEKDAYS and (len(low) > 3 or tok.raw[0].isupper()):
        slots.append(Slot("weekday", str(_WEEKDAYS[low]), i, i + 1))
        return i + 1
    if tok.low in _MONTHS and (tok.low != "may" or tok.raw[0].isupper()) \
            and (tok.low not in ("mar", "jan", "sep") or tok.raw[0].isupper()):
        day = tokens[i + 1] if i + 1 < len(tokens) else None
        if day is not None and day.kind == "number":
            slots.append(Slot("date", f"{_MONTHS[tok.low]}-{_canonical_number(day.raw)}",
                              i, i + 2))
            return i + 2
        slots.append(Slot("date", f"{_MONTHS[tok.low]}", i, i + 1))
        return i + 1
    if tok.low in _RELATIVE_DAYS:
        slots.append(Slot("day", tok.low, i, i + 1))
        return i + 1
    if tok.low in _NUMBER_WORDS:
        slots.append(Slot("port" if prev == "port" else "number",
                          str(_NUMBER_WORDS[tok.low]), i, i + 1))
        return i + 1
    if _is_identifier(tok.raw):
        slots.append(Slot("identifier", tok.low, i, i + 1))
        return i + 1
    if _is_name(tokens, i):
        end = i + 1
        while (end < len(tokens) and tokens[end].kind == "word" and _is_name(tokens, end)
               and not _is_identifier(tokens[end].raw)):
            end += 1
        slots.append(Slot("entity", " ".join(t.low for t in tokens[i:end]), i, end))
        return end
    return i + 1


def _is_identifier(raw: str) -> bool:
    """Letters mixed with digits ("us-east-1", "JIRA-1234") or an upper-case constant
    with an underscore ("MAX_POOL_SIZE")."""
    has_digit = any(c.isdigit() for c in raw)
    has_alpha = any(c.isalpha() for c in raw)
    if has_digit and has_alpha:
        return True
    return "_" in raw and raw.upper() == raw and has_alpha


def _is_name(tokens: list[_Token], i: int) -> bool:
    tok = tokens[i]
    if not tok.raw[:1].isupper() or tok.low in _NOT_NAMES or tok.low in _ID_NOUNS:
        return False
    base = tok.low[:-2] if tok.low.endswith("'s") else tok.low
    if base in _NOT_NAMES:
        return False
    return True


def compare_facts(old: str, new: str) -> FactComparison:
    """Decide whether ``new`` restates, supersedes or is distinct from ``old``.

    A value of ``old`` counts as replaced only if the other text does not contain it at
    all (as a slot of any kind or a plain word), and ``new`` holds a different value of the
    same kind that ``old`` does not contain: "on Friday" -> "on Tuesday" conflicts,
    "on Friday" -> "on Friday at 3pm" adds a detail and does not.
    """
    old_slots, new_slots = extract_slots(old), extract_slots(new)
    swapped = _swapped_kind(old_slots, new_slots) if _frame(old) == _frame(new) else None
    if swapped is not None:
        return FactComparison(Verdict.SUPERSEDES, swapped)
    modifier = _swapped_modifier(old, new, old_slots, new_slots)
    if modifier is not None:
        return FactComparison(Verdict.DISTINCT, "modifier", *modifier)
    old_words = _word_set(old, old_slots)
    new_words = _word_set(new, new_slots)
    new_tokens = _tokens(new)
    for kind in _kinds_in_order(old_slots):
        gone = [s for s in old_slots if s.kind == kind and s.value not in new_words]
        came = [s for s in new_slots if s.kind == kind and s.value not in old_words]
        if not gone or not came:
            continue
        changed = came[0]
        if kind in NAME_KINDS and _is_subject(new_tokens, changed):
            return FactComparison(Verdict.DISTINCT, kind, gone[0].value, changed.value)
        return FactComparison(Verdict.SUPERSEDES, kind, gone[0].value, changed.value)
    return FactComparison(Verdict.SAME)


def _kinds_in_order(slots: list[Slot]) -> list[str]:
    kinds: list[str] = []
    for slot in slots:
        if slot.kind not in kinds:
            kinds.append(slot.kind)
    return kinds


def _word_set(text: str, slots: list[Slot]) -> set[str]:
    """Every canonical slot value and every plain word of ``text``, for "does the other
    text say this anywhere" checks."""
    words = {s.value for s in slots}
    for tok in _tokens(text):
        words.add(tok.low)
        if tok.low.endswith("'s"):
            words.add(tok.low[:-2])
    return words


def _is_subject(tokens: list[_Token], slot: Slot) -> bool:
    """Whether the name at ``slot`` is followed (within a few words) by a predicate:
    "Alice's laptop runs ...", "db1.internal is the primary"."""
    for tok in tokens[slot.end : slot.end + 4]:
        if tok.low in _PREDICATE_CUES:
            return True
        if tok.raw in {".", "!", "?", ","}:
            return False
    return False


def _swapped_kind(old_slots: list[Slot], new_slots: list[Slot]) -> str | None:
    """A kind whose values are the same but in another order ("Alice owns billing, Bob
    owns auth" -> "Bob owns billing, Alice owns auth")."""
    for kind in _kinds_in_order(old_slots):
        a = [s.value for s in old_slots if s.kind == kind]
        b = [s.value for s in new_slots if s.kind == kind]
        if len(a) > 1 and sorted(a) == sorted(b) and a != b:
            return kind
    return None


def _frame(text: str) -> list[str]:
    """The words of ``text`` that are not slots: what stays when only values change."""
    tokens, slots = _tokens(text), extract_slots(text)
    in_slot = {i for s in slots for i in range(s.position, s.end)}
    return [t.low for i, t in enumerate(tokens) if i not in in_slot and t.kind != "punct"]


def _swapped_modifier(
    old: str, new: str, old_slots: list[Slot], new_slots: list[Slot]
) -> tuple[str, str] | None:
    """A plain word (or two) before the same head word replaced by another: "the *auth*
    service" vs "the *billing* service", "my *son's* school" vs "my *daughter's* school".
    The head stays, its modifier changes: another thing of the same sort, not a new value.
    """
    a_tokens, b_tokens = _tokens(old), _tokens(new)
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


def _is_modifier(tok: _Token) -> bool:
    return tok.kind == "word" and tok.low not in _NOT_NAMES and tok.low not in _DEGREE_WORDS


# Short forms read as their long form when comparing wording ("DB host" = "database host").
_ABBREVIATIONS = {
    "db": "database", "dbs": "databases", "prod": "production", "env": "environment",
    "config": "configuration", "repo": "repository", "docs": "documentation",
    "dev": "development", "k8s": "kubernetes", "msg": "message", "info": "information",
}
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
) -> NearDecision:
    """Merge a restatement at ``merge_threshold``; supersede a changed value of the same
    subject at ``supersede_threshold`` (a value change moves the embedding more than a
    paraphrase does, so it may sit lower); anything else is a memory of its own."""
    if similarity < min(merge_threshold, supersede_threshold):
        return NearDecision(Action.NEW, FactComparison(Verdict.SAME))
    found = compare_facts(memory_text, text)
    if found.verdict is Verdict.SAME and similarity >= merge_threshold:
        return NearDecision(Action.MERGE, found)
    if found.verdict is Verdict.SUPERSEDES and similarity >= supersede_threshold:
        return NearDecision(Action.SUPERSEDE, found)
    return NearDecision(Action.NEW, found)
