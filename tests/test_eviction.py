"""The eviction policy as a table: farthest next use first, then least recently used."""

from __future__ import annotations

import math

import pytest

from fastdata.storage.eviction import Candidate, victims

pytestmark = pytest.mark.timeout(10)


def c(name: str, size: int, next_use: float, tick: int) -> Candidate:
    return Candidate(name.encode(), size, next_use, tick)


@pytest.mark.parametrize(("candidates", "need", "expected"), [
    # never used again goes before any later use; then the farthest use
    ([c("a", 10, 5, 1), c("b", 10, math.inf, 2), c("d", 10, 9, 3)], 15, ["b", "d"]),
    # equal next use: the least recently used first
    ([c("a", 10, math.inf, 7), c("b", 10, math.inf, 3), c("d", 10, math.inf, 5)], 10, ["b"]),
    # stops as soon as enough is free, even if one victim frees more than needed
    ([c("a", 100, math.inf, 1), c("b", 10, 2, 2)], 1, ["a"]),
    # nothing needed: nothing evicted
    ([c("a", 10, math.inf, 1)], 0, []),
    # not enough even with everything: None (the cache waits)
    ([c("a", 10, 1, 1), c("b", 10, 2, 2)], 21, None),
    ([], 1, None),
])
def test_victims(candidates, need, expected):
    got = victims(candidates, need)
    assert (None if got is None else [v.key.decode() for v in got]) == expected
