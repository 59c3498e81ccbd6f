"""Blending several sources by weight, deterministically and resumably.

Every global batch of ``G`` slots gives each source a fixed quota ``g_s`` (largest-remainder
rounding of ``weight_s × G``), spread evenly over the batch, so every rank's micro-batch
carries about the same mixture. Source ``s`` runs its own :class:`EpochOrder` with global
batch ``g_s``: at absolute step ``K`` (epoch × steps per epoch + step) it is at its own step
``K mod S_s`` of its own epoch ``K // S_s``. A heavily weighted source therefore repeats
(with a fresh shuffle each time round) and a lightly weighted one is sampled partially;
the blended epoch has ``Σ M_s // G`` steps. Everything is a pure function of the absolute
step. Weights that change by step, and a resume under other weights, are
:mod:`fastdata.sampling.mixture`'s: it says where each source stands at every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fastdata.errors import FastdataConfigError
from fastdata.sampling.order import EpochOrder, OrderConfig, SampleSpace
from fastdata.sampling.permute import PermuteFn, permute_reference

if TYPE_CHECKING:
    from fastdata.sampling.mixture import MixturePlan


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
    """The order of one epoch of a weighted blend; ``slots`` returns global ids
    ``offsets[s] + local id``. Which samples each source gives at each step is the
    :class:`~fastdata.sampling.mixture.MixturePlan`'s; blend step ``K`` of this epoch is
    ``epoch * num_steps + step``."""

    def __init__(self, spaces: Sequence[SampleSpace], plan: MixturePlan, config: OrderConfig,
                 epoch: int, identities: Sequence[str], permute: PermuteFn = permute_reference) -> None:
        self.config, self.epoch, self.plan = config, epoch, plan
        self.offsets = np.concatenate([[0], np.cumsum([s.num_samples for s in spaces])])
        self._spaces, self._identities, self._permute = spaces, identities, permute
        self._orders: dict[tuple[int, int, int], EpochOrder] = {}
        self._patterns: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.num_steps = int(self.offsets[-1]) // config.global_batch

    def _order(self, source: int, epoch: int, quota: int) -> EpochOrder:
        key = (source, epoch, quota)
        order = self._orders.get(key)
        if order is None:
            c = self.config
            sub = OrderConfig(quota, quota, seed=c.seed, shuffle=c.shuffle, window=c.window, drop_last=True)
            order = EpochOrder(self._spaces[source], sub, epoch, self._identities[source], self._permute)
            if len(self._orders) > 4 * len(self._spaces):
                self._orders.clear()
            self._orders[key] = order
        return order

    def _pattern(self, plan: MixturePlan, segment: int) -> tuple[np.ndarray, np.ndarray]:
        key = (id(plan), segment)
        if key not in self._patterns:
            self._patterns[key] = plan.segments[segment].pattern()
        return self._patterns[key]

    def _read(self, source: int, epoch: np.ndarray, offset: np.ndarray, quota: np.ndarray) -> np.ndarray:
        """Local ids at (source epoch, offset, quota of that epoch's order), element-wise; one
        row per step, one column per slot of the source."""
        e, g = int(epoch.flat[0]), int(quota.flat[0])
        if (epoch == e).all() and (quota == g).all():
            step, slot = offset // g, offset % g
            cols = slot[0]
            if (step == step[:, :1]).all() and (slot == cols).all() and (np.diff(cols) == 1).all():
                # whole rows of one epoch's steps (no change or epoch end in the way): one call
                return self._order(source, e, g).slots(step[:, 0], int(cols[0]), int(cols[-1]) + 1)
        out = np.empty(epoch.shape, dtype=np.int64)
        pair = epoch * (self.config.global_batch + 1) + quota
        for key in np.unique(pair).tolist():
            mine = pair == key
            e, g = divmod(key, self.config.global_batch + 1)
            step, slot = offset[mine] // g, offset[mine] % g
            rows, inverse = np.unique(step, return_inverse=True)
            lo, hi = int(slot.min()), int(slot.max()) + 1  # a rank's slots: one narrow band
            out[mine] = self._order(source, e, g).slots(rows, lo, hi)[inverse.ravel(), slot - lo]
        return out

    def slots(self, step: int | np.ndarray, lo: int, hi: int) -> np.ndarray:
        steps = np.asarray(step, dtype=np.int64)
        if steps.size and (steps.min() < 0 or steps.max() >= self.num_steps):
            raise IndexError(f"step {step} outside epoch of {self.num_steps} steps")
        absolute = self.epoch * self.num_steps + steps.reshape(-1)
        out = np.empty((len(absolute), hi - lo), dtype=np.int64)
        self._fill(self.plan, absolute, np.arange(len(absolute)), lo, hi, out)
        return out.reshape(steps.shape + (hi - lo,))

    def _fill(self, plan: MixturePlan, absolute: np.ndarray, rows: np.ndarray, lo: int, hi: int,
              out: np.ndarray) -> None:
        segment = plan.segment_of(absolute[rows])
        if plan.before is not None and np.any(segment < 0):  # before the anchor: the plan without it
            self._fill(plan.before, absolute, rows[segment < 0], lo, hi, out)
        for seg in np.unique(segment[segment >= 0]).tolist():
            mine = rows[segment == seg]
            source, index = self._pattern(plan, seg)
            src, idx = source[lo:hi], index[lo:hi]
            for s in np.unique(src).tolist():
                cols = np.flatnonzero(src == s)
                e, o, g = plan.positions(seg, s, absolute[mine], idx[cols])
                out[np.ix_(mine, cols)] = self._read(s, e, o, g) + self.offsets[s]

    def global_batch(self, step: int) -> np.ndarray:
        return self.slots(step, 0, self.config.global_batch)
