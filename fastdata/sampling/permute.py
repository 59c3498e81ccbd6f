"""A keyed bijection of ``[0, n)`` computed per index: shuffling without a permutation table.

A 4-round Feistel network over the smallest even-bit domain covering ``n``, with cycle
walking for values that land outside ``[0, n)``. Memory is O(1) whatever ``n`` is, so a
10⁹-sample epoch is shuffled without materialising anything, and the result depends only
on integer arithmetic (no numpy RNG whose stream could change between releases).

This numpy version is the reference; ``fastdata._native.permute`` (csrc/fastdata/permute.cc)
computes the same values much faster and is what the loader passes to the order.
``tests/test_order.py`` checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import xxhash

#: permute(index, size, key) -> images; all int64/uint64 arrays of one length.
PermuteFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

_ROUNDS = 4
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def derive_key(*parts: object) -> int:
    """A 64-bit key from any printable parts (seed, epoch, purpose, ...)."""
    return xxhash.xxh3_64_intdigest("\x1f".join(map(str, parts)).encode())


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def child_keys(base: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Independent keys for each (a, b) pair under ``base`` (e.g. partition and block)."""
    with np.errstate(over="ignore"):
        ua = np.asarray(a, dtype=np.int64).astype(np.uint64)
        ub = np.asarray(b, dtype=np.int64).astype(np.uint64)
        return mix64(mix64(np.uint64(base) ^ (ua * _M1)) + ub * _GOLDEN)


def permute_reference(index: np.ndarray, size: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``index[i]``'s image under the permutation of ``[0, size[i])`` keyed by ``key[i]``."""
    x = np.asarray(index, dtype=np.int64).astype(np.uint64)
    n = np.asarray(size, dtype=np.int64).astype(np.uint64)
    k = np.asarray(key, dtype=np.uint64)
    if np.any(x >= np.maximum(n, np.uint64(1))):
        raise ValueError("permute: some index is outside [0, size)")
    bits = np.maximum([int(v - 1).bit_length() if v > 1 else 0 for v in n], 2)
    h = ((bits + 1) // 2).astype(np.uint64)
    mask = (np.uint64(1) << h) - np.uint64(1)
    with np.errstate(over="ignore"):
        rounds = [mix64(k + _GOLDEN * np.uint64(r + 1)) for r in range(_ROUNDS)]
    todo = n > 1
    while todo.any():
        left, right = x[todo] >> h[todo], x[todo] & mask[todo]
        for rk in rounds:
            left, right = right, left ^ (mix64(right ^ rk[todo]) & mask[todo])
        x[todo] = (left << h[todo]) | right
        todo &= x >= n  # cycle-walk the values that left [0, n)
    return x.astype(np.int64)
