"""How text is compared and quoted: the normalization memorize de-duplicates by and the SDK
checks with, and the clipped form a summary highlight quotes a memory in.

It lives in the platform so the SDK, the agents and the read service apply one function
(agents import it; the platform never imports agents).
"""

from __future__ import annotations

import functools
import unicodedata

# The longest highlight line a summary quotes (characters, after whitespace is folded).
HIGHLIGHT_CHARS = 160


# ASCII texts up to this many characters keep their normalized form (no longer than the
# text) in a cache of CACHED_TEXTS, 4 MB at most: a worker normalizes each text four times
# (score's and memorize's checks, the content hash, the memory id), ~1.3 µs each for a
# sentence. Other texts are normalized every time (NFKC may expand a character 18-fold).
CACHED_TEXT_CHARS = 512
CACHED_TEXTS = 4096


def normalize_text(text: str) -> str:
    """Return ``text`` as compared for duplicates: NFKC, casefolded, whitespace collapsed.

    Surrounding punctuation and whitespace are stripped ("Hello!" == "hello"); inner
    punctuation is kept, since it can carry meaning ("3.5" vs "35", "don't").
    """
    if len(text) <= CACHED_TEXT_CHARS and text.isascii():
        return _normalize_cached(text)
    return _normalize(text)


def _normalize(text: str) -> str:
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


_normalize_cached = functools.lru_cache(maxsize=CACHED_TEXTS)(_normalize)


def _is_edge_noise(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def clip_highlight(text: str) -> str:
    """``text`` as a summary highlight quotes it: whitespace folded to single spaces, cut to
    ``HIGHLIGHT_CHARS`` with an ellipsis. The read service matches superseded memories
    against summary lines with the same function."""
    flat = " ".join(text.split())
    return flat if len(flat) <= HIGHLIGHT_CHARS else flat[: HIGHLIGHT_CHARS - 1] + "…"
