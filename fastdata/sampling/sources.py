"""Several sources as one id space: global sample ids, shard keys and default weights.

Source ``s`` owns the global sample ids ``[offsets[s], offsets[s+1])``; its local id ``i``
is global id ``offsets[s] + i``. A shard is named across sources by the key
``source << KEY_SHIFT | shard`` (a single source's keys are its shard numbers). Pure: no
I/O, no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fastdata.errors import FastdataConfigError
from fastdata.sampling.order import SampleSpace

#: Bits of a shard key that hold the shard; the bits above hold the source.
KEY_SHIFT = 40
SHARD_MASK = (1 << KEY_SHIFT) - 1


def resolve_weights(given: Sequence[float | None], counts: Sequence[int]) -> list[float] | None:
    """Blend weights of the sources (None for a single source); without any weight given,
    sources are weighted by their sample counts.

    Raises:
        FastdataConfigError: some sources have a weight and others not.
    """
    if len(given) == 1:
        return None
    if all(w is None for w in given):
        return [float(c) for c in counts]
    if any(w is None for w in given):
        raise FastdataConfigError("give every source a weight, or none of them")
    return [float(w) for w in given]  # type: ignore[arg-type]


def concat(spaces: Sequence[SampleSpace]) -> SampleSpace:
    """The spaces one after the other (the global ids of a blend)."""
    offsets = IdSpace(spaces).offsets
    parts = [spaces[0].first] + [s.first[1:] + o for s, o in zip(spaces[1:], offsets[1:-1])]
    return SampleSpace(np.concatenate(parts))


class IdSpace:
    """Global ids of several sources: ``offsets`` has one more entry than sources."""

    def __init__(self, spaces: Sequence[SampleSpace]) -> None:
        self.offsets = np.concatenate([[0], np.cumsum([s.num_samples for s in spaces])]).astype(np.int64)

    @property
    def num_sources(self) -> int:
        return len(self.offsets) - 1

    def source_of(self, ids: np.ndarray) -> np.ndarray:
        """The source of each global id (padding, -1, maps to source 0)."""
        return np.maximum(np.searchsorted(self.offsets, ids, side="right") - 1, 0)

    def by_source(self, ids: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(source, positions in ``ids``, local ids) for each source among the real (>= 0) ids."""
        source = self.source_of(ids)
        real = ids >= 0
        out = []
        for s in np.unique(source[real]):
            rows = np.flatnonzero(real & (source == s))
            out.append((int(s), rows, ids[rows] - self.offsets[s]))
        return out


def shard_key(source: int, shards: np.ndarray) -> np.ndarray:
    """Keys naming ``shards`` of ``source`` across sources."""
    return (np.int64(source) << KEY_SHIFT) | np.asarray(shards, dtype=np.int64)


def split_key(key: int) -> tuple[int, int]:
    """(source, shard) of a shard key."""
    return int(key) >> KEY_SHIFT, int(key) & SHARD_MASK


def first_uses(ids: np.ndarray, shard_of_each: Callable[[np.ndarray], np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(row, shard key) of each shard that the samples ``ids`` (one row per step; -1:
    padding) read, at the row of its first use, in the order of first use."""
    flat = ids.ravel()
    keys = np.full(len(flat), -1, dtype=np.int64)
    keys[flat >= 0] = shard_of_each(flat[flat >= 0])
    real = np.flatnonzero(keys >= 0)
    uniq, first = np.unique(keys[real], return_index=True)
    at = real[first]
    by_use = np.argsort(at, kind="stable")
    return at[by_use] // max(1, ids.shape[-1]), uniq[by_use]
