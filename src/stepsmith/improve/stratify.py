"""β — stratify solved tasks into difficulty levels, hardest first (method.md §3).

Sort by difficulty score (success rate; fewer successes = harder), split into ``m`` groups as
evenly as possible, take each group's last score as a boundary and re-bin every task into the
first level whose boundary it does not exceed. Re-binning keeps tasks with equal scores in the
same level; levels left empty by it are dropped so no cumulative selection repeats.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def split_evenly(n: int, m: int) -> list[int]:
    """Sizes of ``m`` consecutive chunks of ``n`` items, as even as possible (larger first)."""
    m = max(1, min(m, n)) if n else 1
    base, extra = divmod(n, m)
    return [base + (1 if i < extra else 0) for i in range(m)]


def boundaries(scores: Sequence[float], m: int) -> list[float]:
    """The last (largest) score of each even chunk of the ascending scores."""
    ordered = sorted(scores)
    bounds: list[float] = []
    pos = 0
    for size in split_evenly(len(ordered), m):
        if size == 0:
            continue
        pos += size
        bounds.append(ordered[pos - 1])
    return bounds


def stratify(items: Sequence[tuple[K, float]], m: int = 3) -> list[list[K]]:
    """β(D, m): levels of keys, hardest (lowest score) first; ties stay together.

    Within a level, keys keep ascending-score order (then input order) so prompts are stable.
    """
    if m < 1:
        raise ValueError(f"stratify: m (number of difficulty levels) must be >= 1, got {m}")
    if not items:
        return []
    bounds = boundaries([s for _, s in items], m)
    levels: list[list[K]] = [[] for _ in bounds]
    for key, score in sorted(items, key=lambda kv: kv[1]):
        for i, b in enumerate(bounds):
            if score <= b:
                levels[i].append(key)
                break
    return [lvl for lvl in levels if lvl]


def cumulative(levels: Sequence[Sequence[K]]) -> list[list[K]]:
    """d_j = E[0] ∪ ... ∪ E[j] for every j (H, HM, HME); ``[[]]`` when nothing is solved yet."""
    if not levels:
        return [[]]
    out: list[list[K]] = []
    acc: list[K] = []
    for lvl in levels:
        acc = acc + list(lvl)
        out.append(list(acc))
    return out
