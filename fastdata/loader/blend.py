"""Batches of a blend: each row read by its own source's assembler (moved out of ``dataset.py``).

Global ids and shard keys are those of :mod:`fastdata.sampling.sources`; the interface is
the one of :class:`~fastdata.loader.batch.BatchAssembler` (``__call__``, ``shards_of``,
``shard_of_each``), with shard keys in place of shard numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastdata.loader.batch import BatchAssembler
from fastdata.sampling.sources import IdSpace, shard_key


class BlendAssembler:
    """Assembles rows of several sources; global id = ``offsets[source]`` + local id."""

    def __init__(self, parts: Sequence[BatchAssembler], ids: IdSpace) -> None:
        self.parts, self.ids = parts, ids
        self.offsets = ids.offsets

    def __call__(self, sample_ids: np.ndarray) -> dict[str, np.ndarray]:
        source = self.ids.source_of(sample_ids)
        out: dict[str, np.ndarray] = {}
        for s in np.unique(source):
            rows = np.flatnonzero(source == s)
            local = np.where(sample_ids[rows] >= 0, sample_ids[rows] - self.offsets[s], -1)
            for key, value in self.parts[int(s)](local).items():
                if key not in out:
                    out[key] = np.empty((len(sample_ids),) + value.shape[1:], dtype=value.dtype)
                out[key][rows] = value
        out["sample_ids"] = sample_ids.astype(np.int64)
        return out

    def shard_of_each(self, sample_ids: np.ndarray) -> np.ndarray:
        """The shard key holding each (non-padding) sample."""
        keys = np.zeros(len(sample_ids), dtype=np.int64)
        for s, rows, local in self.ids.by_source(sample_ids):
            keys[rows] = shard_key(s, self.parts[s].shard_of_each(local))
        return keys

    def shards_of(self, sample_ids: np.ndarray) -> np.ndarray:
        """The shard keys that reading ``sample_ids`` touches, in order of first use."""
        keys = self.shard_of_each(sample_ids[sample_ids >= 0])
        _, first_use = np.unique(keys, return_index=True)
        return keys[np.sort(first_use)]
