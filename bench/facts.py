"""Fact-update benchmark: precision/recall of near-duplicate merge decisions with and
without the conflict detector (agents/facts), on the three hand-written sets in
tests/data/facts/ (paraphrases that must merge, value changes that must supersede,
look-alikes about other subjects that must stay separate).

Each pair is embedded with the real bundled all-MiniLM-L6-v2 and decided as memorize
decides it (``decide_near``): merge when the detector says SAME and the cosine reaches the
merge threshold, supersede when it says SUPERSEDES and the cosine reaches the supersede
threshold, otherwise a memory of its own. The baseline is the rule before the detector:
merge whenever the cosine reaches the merge threshold.

    PYTHONPATH=. python -m bench.facts [--merge 0.9] [--supersede 0.85] [--heldout]

``--heldout`` uses tests/data/facts/heldout/ instead: 15 pairs a set, written after the
detector was tuned on the main sets.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.facts import Action, compare_facts, decide_near
from agents.facts.compare import analysis_cache_clear
from streams.models.embedder import SentenceTransformerEmbedder

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "facts"
SETS = ("paraphrases", "value_changes", "lookalikes")


@dataclass(frozen=True)
class Pair:
    """One test pair, its set and the cosine of its two texts."""

    group: str
    old: str
    new: str
    cosine: float


def load_pairs(embedder: SentenceTransformerEmbedder, data: Path = DATA) -> list[Pair]:
    """Every pair of the three sets, with its cosine under the model."""
    rows: list[tuple[str, str, str]] = []
    for group in SETS:
        for line in (data / f"{group}.tsv").read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                old, new = line.split("\t")[:2]
                rows.append((group, old, new))
    a = embedder.embed([r[1] for r in rows])
    b = embedder.embed([r[2] for r in rows])
    cosines = np.sum(a * b, axis=1)
    return [Pair(g, o, n, float(c)) for (g, o, n), c in zip(rows, cosines, strict=True)]


def ratio(num: int, den: int) -> str:
    return f"{num / den:.3f} ({num}/{den})" if den else "n/a (0/0)"


def report(pairs: list[Pair], merge: float, supersede: float, frame: float) -> None:
    """Print the merge and supersede precision/recall, baseline and detector."""
    actions = [decide_near(p.old, p.new, p.cosine, merge_threshold=merge,
                           supersede_threshold=supersede, same_frame_threshold=frame).action
               for p in pairs]
    should = [p.group == "paraphrases" for p in pairs]
    for name, merged in (
        ("cosine only (before)", [p.cosine >= merge for p in pairs]),
        ("cosine + detector", [a is Action.MERGE for a in actions]),
    ):
        tp = sum(m and s for m, s in zip(merged, should, strict=True))
        fp = sum(m and not s for m, s in zip(merged, should, strict=True))
        changed = sum(m for m, p in zip(merged, pairs, strict=True) if p.group == "value_changes")
        looks = sum(m for m, p in zip(merged, pairs, strict=True) if p.group == "lookalikes")
        print(f"merge decisions, {name}: precision {ratio(tp, tp + fp)}, recall "
              f"{ratio(tp, sum(should))}; changed values merged {changed}, look-alikes "
              f"merged {looks}")
    sup = [a is Action.SUPERSEDE for a in actions]
    truth = [p.group == "value_changes" for p in pairs]
    tp = sum(s and t for s, t in zip(sup, truth, strict=True))
    print(f"supersede decisions: precision {ratio(tp, sum(sup))}, recall {ratio(tp, sum(truth))}")


def main() -> None:
    """Embed the sets once, then report at the chosen thresholds and a small sweep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merge", type=float, default=0.9)
    parser.add_argument("--supersede", type=float, default=0.85)
    parser.add_argument("--same-frame", type=float, default=0.5,
                        help="supersede threshold when only the value differs")
    parser.add_argument("--heldout", action="store_true", help="the held-out sets")
    args = parser.parse_args()
    pairs = load_pairs(SentenceTransformerEmbedder(), DATA / "heldout" if args.heldout else DATA)
    for group in SETS:
        cos = [p.cosine for p in pairs if p.group == group]
        print(f"{group}: {len(cos)} pairs, cosine min {min(cos):.3f} median "
              f"{float(np.median(cos)):.3f} max {max(cos):.3f}, >= {args.merge}: "
              f"{sum(c >= args.merge for c in cos)}")
    print(f"\n== merge {args.merge}, supersede {args.supersede}, same frame {args.same_frame}")
    report(pairs, args.merge, args.supersede, args.same_frame)
    expected = {"paraphrases": Action.MERGE, "value_changes": Action.SUPERSEDE,
                "lookalikes": Action.NEW}
    wrong = [p for p in pairs
             if decide_near(p.old, p.new, p.cosine, merge_threshold=args.merge,
                            supersede_threshold=args.supersede,
                            same_frame_threshold=args.same_frame).action
             is not expected[p.group]]
    print(f"pairs decided otherwise than their set says: {len(wrong)}")
    for p in wrong:
        print(f"   {p.group} {p.cosine:.3f} {compare_facts(p.old, p.new).verdict.value}: "
              f"{p.old} | {p.new}")
    for merge, supersede, frame in ((0.9, 0.85, 0.85), (0.9, 0.9, 0.9), (0.9, 0.8, 0.8),
                                    (0.85, 0.85, 0.5)):
        if (merge, supersede, frame) != (args.merge, args.supersede, args.same_frame):
            print(f"\n== merge {merge}, supersede {supersede}, same frame {frame}")
            report(pairs, merge, supersede, frame)
    # First sight of a text (its analysis computed) vs a text seen before (memorize meets
    # the same memory texts batch after batch; short texts keep their analysis).
    rounds = 20
    first = repeated = 0.0
    for _ in range(rounds):
        analysis_cache_clear()
        started = time.perf_counter()
        for p in pairs:
            compare_facts(p.old, p.new)
        first += time.perf_counter() - started
        started = time.perf_counter()
        for p in pairs:
            compare_facts(p.old, p.new)
        repeated += time.perf_counter() - started
    n = rounds * len(pairs)
    print(f"\ncompare_facts: {first / n * 1e6:.0f} us a pair seen first, "
          f"{repeated / n * 1e6:.0f} us a pair seen before (means of {n})")


if __name__ == "__main__":
    main()
