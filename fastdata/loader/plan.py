"""One process's plan of one epoch: which samples, and so which shards, each of its steps reads.

A :class:`RankPlan` joins the epoch's order (``sampling/order.py``, or a blend's), this
process's stripe of every global step, and the assembler that maps samples to shards and
reads them. Everything that asks "what does step ``s`` need" asks it: the stepping
generator (``loader/stream.py``) for the batches, the prefetcher for the first use of each
shard, and the tests for what a step touches. It is cheap to build (no I/O) and made by
:meth:`TokenDataset.plan`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastdata.loader.batch import BatchAssembler
from fastdata.loader.blend import BlendAssembler
from fastdata.reader.dataset import Dataset
from fastdata.sampling.blend import BlendOrder
from fastdata.sampling.order import EpochOrder, Stripe
from fastdata.sampling.sources import first_uses, split_key

Arrays = dict[str, np.ndarray]


class RankPlan:
    """The steps of one epoch as this process reads them.

    Args:
        order: the epoch's order.
        stripe: this process's slots of each global step.
        assembler: maps sample ids to shards and reads them.
        datasets: the sources, indexed as the shard keys' source part.
        open_limit: shards one gather may map at once (the cache fit's pins per process).
        per_batch: batches hold per-batch arrays (``cu_seqlens``): read one at a time.
        prefetch_room: bytes this process may fetch ahead (None: no limit from a cache).
    """

    def __init__(self, order: EpochOrder | BlendOrder, stripe: Stripe,  # noqa: PLR0913
                 assembler: BatchAssembler | BlendAssembler, datasets: Sequence[Dataset], *,
                 open_limit: int, per_batch: bool, prefetch_room: int | None) -> None:
        self.order, self.stripe, self.assembler = order, stripe, assembler
        self.datasets, self.open_limit, self.per_batch = datasets, open_limit, per_batch
        self.prefetch_room = prefetch_room

    @property
    def num_steps(self) -> int:
        return self.order.num_steps

    @property
    def fetches(self) -> bool:
        """Whether some shards come from remote storage or need decompressing (worth prefetching)."""
        return any(not d.files.in_place for d in self.datasets)

    def slots(self, steps: int | np.ndarray) -> np.ndarray:
        """Sample ids of this process's slots of ``steps`` (one row per step for an array)."""
        return self.order.slots(steps, self.stripe.lo, self.stripe.hi)

    def shards_of(self, step: int) -> np.ndarray:
        """Shards (as ``source << 40 | shard``) that this process's part of ``step`` reads."""
        return self.assembler.shards_of(self.slots(step))

    def first_uses(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(step, shard key) of each shard first read in steps ``[lo, hi)``, in that order:
        one vectorised pass for a whole block of steps (the prefetcher's walk)."""
        ids = self.slots(np.arange(lo, hi, dtype=np.int64))
        steps, keys = first_uses(ids, self.assembler.shard_of_each)
        return lo + steps, keys

    def fetch(self, key: int, step: int) -> int:
        """Make sure shard ``key`` is cached, with ``step`` as its next use; returns its raw size."""
        source, shard = split_key(key)
        data = self.datasets[source]
        path, release = data.files.acquire(shard, next_use=step, ahead=True)
        try:
            fill = data.files.block_fill(shard, path)  # fetched block by block: all of its blocks
            if fill is not None:
                try:
                    fill.ensure_all()
                finally:
                    fill.close()
        finally:
            release()
        return data.shards[shard].raw_bytes

    def batch(self, step: int) -> Arrays:
        """This process's micro-batch of global step ``step`` as numpy arrays."""
        return self.assembler(self.slots(step))

    def batches(self, steps: Sequence[int]) -> list[Arrays]:
        """Micro-batches of several steps, read with one gather per group (per-batch Python
        overhead dominates otherwise); each batch's arrays are views of shared buffers."""
        if self.per_batch:
            return [self.batch(s) for s in steps]
        ids = self.slots(np.asarray(steps, dtype=np.int64))
        b = self.stripe.hi - self.stripe.lo
        out = []
        for lo, hi in self.groups(ids):
            arrays = self.assembler(ids[lo:hi].ravel())
            out += [{k: v[i * b : (i + 1) * b] for k, v in arrays.items()} for i in range(hi - lo)]
        return out

    def groups(self, ids: np.ndarray) -> list[tuple[int, int]]:
        """Runs of consecutive steps (rows of ``ids``) whose samples lie in at most
        ``open_limit`` shards: one gather maps all of its shards at once, and with a node
        cache a process keeps only a few mapped (and pinned), so a larger gather would unpin
        shards it still reads, and a tight cache could evict and fetch them again."""
        limit = self.open_limit
        shards_of = self.assembler.shards_of
        if len(ids) <= 1 or limit >= ids.size or len(shards_of(ids.ravel())) <= limit:
            return [(0, len(ids))]
        groups, start, seen = [], 0, np.zeros(0, np.int64)
        for i, row in enumerate(ids):
            shards = shards_of(row)
            union = np.union1d(seen, shards)
            if len(union) > limit and i > start:
                groups.append((start, i))
                start, union = i, np.unique(shards)
            seen = union
        groups.append((start, len(ids)))
        return groups
