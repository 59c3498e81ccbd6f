"""The global sample order of an epoch, and each rank's stripe of it.

The order is a pure function of (sample space, seed, epoch, global batch, partitions,
window); it never depends on the number of nodes, ranks or workers. The construction:

1. **Shard order.** The shards are permuted (keyed by seed and epoch); the samples they
   own, in that order, form the sequence ``Q`` (positions ``0 .. M-1``).
2. **Partitions.** ``Q`` is cut into ``P`` canonical partitions of contiguous positions
   (``p*M//P`` to ``(p+1)*M//P``), each a run of neighbouring shards.
3. **Local shuffle.** Inside a partition, positions are shuffled within blocks that
   cover ``window`` consecutive shards (or the whole partition for a full shuffle),
   with a keyed bijection: no per-sample table is ever built.
4. **Steps.** Global batch ``k`` has ``G`` slots; slot ``j`` takes the next sample of
   partition ``j // (G/P)``, so every partition advances ``G/P`` samples per step.
   A rank of micro-batch ``b`` takes the contiguous slots ``[rank*b, (rank+1)*b)``;
   when the number of nodes divides ``P`` a node reads only its own partitions'
   shards.

There are ``M // G`` full steps. With ``drop_last`` the remaining ``M mod G`` samples
are not used this epoch; otherwise one more step is padded: its empty slots carry
sample id -1 (their data is a real sample whose labels the loader masks out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastdata.errors import FastdataConfigError
from fastdata.sampling.permute import PermuteFn, child_keys, derive_key, permute_reference


@dataclass(frozen=True)
class SampleSpace:
    """Which samples each shard owns: shard ``j`` owns ``[first[j], first[j+1])``."""

    first: np.ndarray  # int64, one more entry than shards

    @property
    def num_samples(self) -> int:
        return int(self.first[-1])

    @property
    def num_shards(self) -> int:
        return len(self.first) - 1

    def counts(self) -> np.ndarray:
        return np.diff(self.first)


def packed_space(shard_tokens: np.ndarray, seq_len: int) -> SampleSpace:
    """Fixed windows of ``seq_len + 1`` tokens over each shard's token stream.

    The ``k``-th sample of a shard covers its tokens ``[k*seq_len, k*seq_len + seq_len + 1)``
    (inputs and the labels shifted by one), across document boundaries; consecutive windows
    share one token. No window crosses a shard, so a node reads only the shards of its own
    partitions; the price is that the last ``(tokens - 1) mod seq_len`` tokens of each shard
    are never a label (under 0.002 % of a 256 MB shard at seq_len 2048).
    """
    if seq_len < 1:
        raise FastdataConfigError(f"seq_len must be >= 1, got {seq_len}")
    tokens = np.asarray(shard_tokens, dtype=np.int64)
    counts = np.maximum(tokens - 1, 0) // seq_len
    return SampleSpace(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


def document_space(shard_docs: np.ndarray) -> SampleSpace:
    """One sample per document."""
    return SampleSpace(np.concatenate([[0], np.cumsum(np.asarray(shard_docs, dtype=np.int64))]))


@dataclass(frozen=True)
class OrderConfig:
    """What the order depends on, besides the data and the epoch."""

    global_batch: int  #: samples per global step, all ranks together
    partitions: int  #: canonical partitions; must divide global_batch
    seed: int = 0
    shuffle: bool = True
    window: int | None = 16  #: shards per local-shuffle block; None shuffles whole partitions
    drop_last: bool = True

    def __post_init__(self) -> None:
        if self.global_batch < 1:
            raise FastdataConfigError(f"global batch must be >= 1, got {self.global_batch}")
        if self.partitions < 1 or self.global_batch % self.partitions:
            raise FastdataConfigError(
                f"partitions ({self.partitions}) must divide the global batch ({self.global_batch})")
        if self.window is not None and self.window < 1:
            raise FastdataConfigError(f"shuffle window must be >= 1 shard or None, got {self.window}")


class EpochOrder:
    """The sample order of one epoch; memory is O(shards)."""

    def __init__(self, space: SampleSpace, config: OrderConfig, epoch: int, identity: str = "",
                 permute: PermuteFn = permute_reference) -> None:
        self.space, self.config, self.epoch = space, config, epoch
        self._permute = permute
        self._key = derive_key(identity, config.seed, epoch)
        counts = space.counts()
        n = space.num_shards
        self._shards = np.arange(n, dtype=np.int64)
        if config.shuffle:
            keys = np.full(n, derive_key(self._key, "shards"), dtype=np.uint64)
            self._shards = permute(self._shards, np.full(n, n, dtype=np.int64), keys)
        self._starts = np.concatenate([[0], np.cumsum(counts[self._shards])])  # positions in Q
        m, p = space.num_samples, config.partitions
        self._bounds = np.arange(p + 1, dtype=np.int64) * m // p  # partition p = [b[p], b[p+1])
        self._per_part = config.global_batch // p
        full = m // config.global_batch
        self.num_steps = full if config.drop_last or m == full * config.global_batch else full + 1

    def slots(self, step: int | np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Sample ids of slots ``[lo, hi)`` of global batch ``step`` (or of each of an array of
        steps, one row per step); -1 marks padding."""
        steps = np.asarray(step, dtype=np.int64)
        if steps.size and (steps.min() < 0 or steps.max() >= self.num_steps):
            raise IndexError(f"step {step} outside epoch of {self.num_steps} steps")
        j = np.arange(lo, hi, dtype=np.int64)
        part = np.broadcast_to(j // self._per_part, steps.shape + j.shape).ravel()
        t = (steps[..., None] * self._per_part + j % self._per_part).ravel()
        start, end = self._bounds[part], self._bounds[part + 1]
        valid = t < end - start
        out = np.full(len(t), -1, dtype=np.int64)
        if valid.all():
            out = self._sample_at(self._shuffled(start + t, part))
        elif valid.any():
            out[valid] = self._sample_at(self._shuffled(start[valid] + t[valid], part[valid]))
        return out.reshape(steps.shape + j.shape)

    def global_batch(self, step: int) -> np.ndarray:
        return self.slots(step, 0, self.config.global_batch)

    def _shuffled(self, pos: np.ndarray, part: np.ndarray) -> np.ndarray:
        """Apply the local shuffle of each position's partition block."""
        if not self.config.shuffle:
            return pos
        lo = self._bounds[part]
        hi = self._bounds[part + 1]
        window = self.config.window
        block = np.zeros(len(pos), dtype=np.int64)
        if window is not None:
            shard = np.searchsorted(self._starts, pos, side="right") - 1
            block = shard // window
            n = len(self._shards)
            lo = np.maximum(lo, self._starts[np.minimum(block * window, n)])
            hi = np.minimum(hi, self._starts[np.minimum((block + 1) * window, n)])
        keys = child_keys(self._key, part, block)
        return lo + self._permute(pos - lo, hi - lo, keys)

    def _sample_at(self, pos: np.ndarray) -> np.ndarray:
        u = np.searchsorted(self._starts, pos, side="right") - 1
        return self.space.first[self._shards[u]] + (pos - self._starts[u])

    def shards_of(self, samples: np.ndarray) -> np.ndarray:
        """Shard that owns each (non-padding) sample id."""
        return np.searchsorted(self.space.first, samples, side="right") - 1


@dataclass(frozen=True)
class Stripe:
    """The slots of each global batch that one rank takes, and the steps one worker makes."""

    lo: int
    hi: int
    worker: int = 0
    num_workers: int = 1

    @classmethod
    def of(cls, global_batch: int, rank: int, world_size: int, worker: int = 0,
           num_workers: int = 1) -> Stripe:
        if global_batch % world_size:
            raise FastdataConfigError(
                f"global batch {global_batch} is not divisible by world size {world_size}: every "
                "rank must get the same micro-batch")
        micro = global_batch // world_size
        return cls(rank * micro, (rank + 1) * micro, worker, num_workers)

    def steps(self, start: int, num_steps: int) -> range:
        """The steps this worker makes, from global step ``start`` on, in order.

        Workers take turns: worker ``w`` makes steps ``start + w``, ``start + w + n``, ...
        which is the order in which a DataLoader collects them.
        """
        return range(start + self.worker, num_steps, self.num_workers)
