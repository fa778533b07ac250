"""Typed values in a statement: numbers, dates, weekdays, times, versions, ports, hosts,
URLs, e-mails, identifiers and names, each with a canonical value (so "Fridays" = "Friday",
"9:30am" = "09:30", "8,443" = "8443")."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """A typed value found in a text: its kind, canonical value and token position."""

    kind: str
    value: str
    position: int  # index of its first token in the text's token list
    end: int  # index after its last token



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
NOT_NAMES = frozenset("""
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


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    raw: str
    low: str


def tokens(text: str) -> list[Token]:
    text = unicodedata.normalize("NFKC", text).replace("’", "'")
    found = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "word"
        raw = match.group()
        if kind in ("url", "host"):
            raw = raw.rstrip(".,;:!?)")
        found.append(Token(kind, raw, raw.casefold()))
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
    return slots_of(tokens(text))


def slots_of(toks: list[Token]) -> list[Slot]:
    """The typed values in a token list (``tokens(text)``), in order."""
    slots: list[Slot] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        prev = toks[i - 1].low if i else ""
        nxt = toks[i + 1] if i + 1 < len(toks) else None
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
            if nxt is not None and nxt.raw == ":" and i + 2 < len(toks) \
                    and toks[i + 2].kind == "number":
                slots.append(Slot("port", _canonical_number(toks[i + 2].raw), i + 2, i + 3))
                i += 3
                continue
        elif tok.kind == "number":
            i = _number_slot(toks, i, prev, slots)
            continue
        elif tok.kind == "word":
            i = _word_slot(toks, i, prev, slots)
            continue
        i += 1
    return slots


def _number_slot(tokens: list[Token], i: int, prev: str, slots: list[Slot]) -> int:
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


def _word_slot(tokens: list[Token], i: int, prev: str, slots: list[Slot]) -> int:
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


def _is_name(tokens: list[Token], i: int) -> bool:
    tok = tokens[i]
    if not tok.raw[:1].isupper() or tok.low in NOT_NAMES or tok.low in _ID_NOUNS:
        return False
    base = tok.low[:-2] if tok.low.endswith("'s") else tok.low
    if base in NOT_NAMES:
        return False
    return True


