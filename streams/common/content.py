"""How text is compared: the normalization memorize de-duplicates by and the SDK checks with.

It lives in the platform so the SDK and the agents apply one function (agents import it;
the platform never imports agents).
"""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """Return ``text`` as compared for duplicates: NFKC, casefolded, whitespace collapsed.

    Surrounding punctuation and whitespace are stripped ("Hello!" == "hello"); inner
    punctuation is kept, since it can carry meaning ("3.5" vs "35", "don't").
    """
    # NFKC again after casefolding: casefold can produce sequences NFKC would rewrite,
    # and a second pass keeps the function idempotent.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    collapsed = " ".join(folded.split())
    start, end = 0, len(collapsed)
    while start < end and _is_edge_noise(collapsed[start]):
        start += 1
    while end > start and _is_edge_noise(collapsed[end - 1]):
        end -= 1
    return collapsed[start:end]


def _is_edge_noise(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")
