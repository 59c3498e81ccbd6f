"""Which cached shards make room, in which order: the node cache's eviction policy.

Only entries no live process pins and no download in flight reserves are candidates (the
cache decides that). Among them the policy is Belady's rule as far as the loader knows the
future: the entry whose next use is farthest away goes first (never used again: ``inf``),
and among equals the least recently used one (the lowest use tick).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """An evictable entry: its key, size in bytes, next use (a step, or ``inf``), last-use tick."""

    key: bytes
    size: int
    next_use: float
    tick: int


def victims(candidates: Iterable[Candidate], need: int) -> list[Candidate] | None:
    """The entries to evict, in order, until ``need`` bytes are free; None when even all of
    them would not free that much (the caller waits for pins to go)."""
    ranked = sorted(candidates, key=lambda c: (-c.next_use, c.tick, c.key))
    if sum(c.size for c in ranked) < need:
        return None
    chosen: list[Candidate] = []
    for c in ranked:
        if need <= 0:
            break
        chosen.append(c)
        need -= c.size
    return chosen
