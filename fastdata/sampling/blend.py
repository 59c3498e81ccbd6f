"""Blending several sources by weight, deterministically and resumably.

Every global batch of ``G`` slots gives each source a fixed quota ``g_s`` (largest-remainder
rounding of ``weight_s × G``), spread evenly over the batch, so every rank's micro-batch
carries about the same mixture. Source ``s`` runs its own :class:`EpochOrder` with global
batch ``g_s``: at absolute step ``K`` (epoch × steps per epoch + step) it is at its own step
``K mod S_s`` of its own epoch ``K // S_s``. A heavily weighted source therefore repeats
(with a fresh shuffle each time round) and a lightly weighted one is sampled partially;
the blended epoch has ``Σ M_s // G`` steps. Everything is a pure function of the absolute
step, so a resume needs only (epoch, step). Changing the weights changes every quota:
a state saved with other weights is refused (the weights are part of the state's identity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastdata.errors import FastdataConfigError
from fastdata.sampling.order import EpochOrder, OrderConfig, SampleSpace
from fastdata.sampling.permute import PermuteFn, permute_reference


def quotas(weights: Sequence[float], global_batch: int) -> np.ndarray:
    """Slots per global batch for each source (largest remainder; every source gets >= 1)."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) == 0 or np.any(w <= 0) or not np.all(np.isfinite(w)):
        raise FastdataConfigError(f"source weights must be positive numbers, got {list(weights)}")
    exact = w / w.sum() * global_batch
    q = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(w)), -(exact - q)))  # biggest remainder first, then index
    q[order[: global_batch - int(q.sum())]] += 1
    if np.any(q == 0):
        raise FastdataConfigError(
            f"a global batch of {global_batch} cannot hold weights {list(weights)}: source(s) "
            f"{np.flatnonzero(q == 0).tolist()} would never be sampled; raise the batch size"
        )
    return q


def slot_pattern(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source of each slot, index of the slot within its source's quota), evenly spread."""
    keys = [((i + 0.5) / n, s) for s, n in enumerate(q.tolist()) for i in range(n)]
    keys.sort()
    source = np.array([s for _, s in keys], dtype=np.int64)
    index = np.zeros(len(source), dtype=np.int64)
    for s in range(len(q)):
        index[source == s] = np.arange(int(q[s]))
    return source, index


class BlendOrder:
    """The order of a weighted blend; ``slots`` returns global ids ``offsets[s] + local id``."""

    def __init__(self, spaces: Sequence[SampleSpace], weights: Sequence[float], config: OrderConfig,
                 epoch: int, identities: Sequence[str], permute: PermuteFn = permute_reference) -> None:
        self.config, self.epoch = config, epoch
        self._q = quotas(weights, config.global_batch)
        self._source, self._index = slot_pattern(self._q)
        self.offsets = np.concatenate([[0], np.cumsum([s.num_samples for s in spaces])])
        self._spaces, self._identities, self._permute = spaces, identities, permute
        self._orders: dict[tuple[int, int], EpochOrder] = {}
        self._steps = []
        for s, space in enumerate(spaces):
            steps = self._order(s, 0).num_steps
            if steps == 0:
                raise FastdataConfigError(
                    f"source {s} has {space.num_samples} samples, fewer than its {self._q[s]} slots "
                    "per global batch")
            self._steps.append(steps)
        self.num_steps = int(self.offsets[-1]) // config.global_batch

    def _order(self, source: int, epoch: int) -> EpochOrder:
        key = (source, epoch)
        order = self._orders.get(key)
        if order is None:
            g = int(self._q[source])
            c = self.config
            sub = OrderConfig(g, g, seed=c.seed, shuffle=c.shuffle, window=c.window, drop_last=True)
            order = EpochOrder(self._spaces[source], sub, epoch, self._identities[source], self._permute)
            if len(self._orders) > 4 * len(self._spaces):
                self._orders.clear()
            self._orders[key] = order
        return order

    def slots(self, step: int | np.ndarray, lo: int, hi: int) -> np.ndarray:
        steps = np.asarray(step, dtype=np.int64)
        if steps.size and (steps.min() < 0 or steps.max() >= self.num_steps):
            raise IndexError(f"step {step} outside epoch of {self.num_steps} steps")
        flat = steps.reshape(-1)
        out = np.empty((len(flat), hi - lo), dtype=np.int64)
        src, idx = self._source[lo:hi], self._index[lo:hi]
        for s in np.unique(src):
            cols = np.flatnonzero(src == s)
            r_lo, r_hi = int(idx[cols[0]]), int(idx[cols[-1]]) + 1  # contiguous within the source
            absolute = self.epoch * self.num_steps + flat
            for row, k in enumerate(absolute):
                order = self._order(int(s), int(k // self._steps[s]))
                out[row, cols] = order.slots(int(k % self._steps[s]), r_lo, r_hi) + self.offsets[s]
        return out.reshape(steps.shape + (hi - lo,))

    def global_batch(self, step: int) -> np.ndarray:
        return self.slots(step, 0, self.config.global_batch)
