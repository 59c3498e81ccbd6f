"""Where every source of a blend stands at each global step: weights that change by step.

Each source ``s`` has its own stream of epochs. Its epoch ``e`` is the order of
:class:`~fastdata.sampling.order.EpochOrder` with a global batch (and partitions) of ``g``
slots, read step by step: ``L = (M_s // g) * g`` samples (the tail ``M_s mod g`` is left
out, as in any order with ``drop_last``). ``g`` is the source's quota when that epoch
started, so an epoch keeps its order to its end even when the quota changes under it.

A blend step ``K`` (``epoch × steps_per_epoch + step``) gives source ``s`` its quota
``q_s(K)`` of slots, filled with the source's next samples. The quotas come from a
*schedule* of weights by step (one entry: constant weights). A :class:`Cursor` says how
far a source has come: ``(epoch, offset, quota)``, ``offset`` samples of its epoch
``epoch`` (whose order was started under ``quota``) consumed. The cursors at a step are a
pure function of the schedule; a resumed run may instead *anchor* the plan at the cursors a
state recorded (O(sources)) and go on from there under other weights, or with sources
added (they start at epoch 0) or removed. With constant weights and no anchor, source ``s``
is at step ``K mod S_s`` of its epoch ``K // S_s``: the order blends always had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fastdata.errors import FastdataConfigError
from fastdata.sampling.blend import quotas, slot_pattern


@dataclass(frozen=True)
class Cursor:
    """How far one source's stream has come: ``offset`` samples of its epoch ``epoch``,
    whose order was started with a quota of ``quota`` slots (its global batch)."""

    epoch: int
    offset: int
    quota: int


def epoch_length(num_samples: int, quota: int) -> int:
    """Samples of one source epoch read with ``quota`` slots per step."""
    return (num_samples // quota) * quota


def advance(cursor: Cursor, num_samples: int, consumed: int, quota: int) -> Cursor:
    """The cursor after ``consumed`` more samples, taken ``quota`` per step. An epoch that
    ends exactly is kept (offset == its length): the next one starts under the quota in
    force when its first sample is taken."""
    total = cursor.offset + consumed
    first = epoch_length(num_samples, cursor.quota)
    if total <= first:
        return Cursor(cursor.epoch, total, cursor.quota)
    rest, length = total - first, epoch_length(num_samples, quota)
    full = (rest - 1) // length
    return Cursor(cursor.epoch + 1 + full, rest - full * length, quota)


@dataclass(frozen=True)
class Segment:
    """Steps ``[start, next start)`` under one set of quotas, with the cursors at ``start``."""

    start: int
    quotas: np.ndarray
    cursors: tuple[Cursor, ...]

    def pattern(self) -> tuple[np.ndarray, np.ndarray]:
        return slot_pattern(self.quotas)


class MixturePlan:
    """The cursors of every source at every blend step.

    Args:
        sizes: samples of each source.
        schedule: ``(step, weights)`` pairs, the first at step 0, steps increasing; weights
            one per source.
        global_batch: slots per global step.
        anchor: ``(step, cursors)``: from ``step`` on, continue from these cursors (one per
            source, None for a source that starts there at its epoch 0); before it, the plan
            without the anchor.

    Raises:
        FastdataConfigError: a malformed schedule, or a quota larger than its source.
    """

    def __init__(self, sizes: Sequence[int], schedule: Sequence[tuple[int, Sequence[float]]],
                 global_batch: int, anchor: tuple[int, Sequence[Cursor | None]] | None = None) -> None:
        self.sizes = [int(m) for m in sizes]
        steps = [int(k) for k, _ in schedule]
        if not steps or steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise FastdataConfigError(f"a mixture schedule needs increasing steps from 0, got {steps}")
        table = [quotas(list(w), global_batch) for _, w in schedule]
        for k, q in zip(steps, table):
            if len(q) != len(self.sizes):
                raise FastdataConfigError(
                    f"the schedule's weights at step {k} name {len(q)} sources; the blend has "
                    f"{len(self.sizes)}")
            for s, (m, n) in enumerate(zip(self.sizes, q.tolist())):
                if m < n:
                    raise FastdataConfigError(
                        f"source {s} has {m} samples, fewer than its {n} slots per global batch")
        self.weights = [tuple(float(x) for x in w) for _, w in schedule]
        self.before: MixturePlan | None = None
        if anchor is None:
            start, first = 0, 0
            cursors = tuple(Cursor(0, 0, int(q)) for q in table[0])
        else:
            start, given = anchor
            self.before = MixturePlan(sizes, schedule, global_batch)
            first = int(np.searchsorted(steps, start, side="right")) - 1
            cursors = tuple(c if c is not None else Cursor(0, 0, int(table[first][s]))
                            for s, c in enumerate(given))
        self.segments = [Segment(start, table[first], cursors)]
        for k, q in zip(steps[first + 1 :], table[first + 1 :]):
            last = self.segments[-1]
            moved = tuple(advance(c, m, (k - last.start) * int(n), int(n))
                          for c, m, n in zip(last.cursors, self.sizes, last.quotas))
            self.segments.append(Segment(k, q, moved))
        self._starts = np.array([seg.start for seg in self.segments], dtype=np.int64)
        self._steps = steps

    def segment_of(self, step: int | np.ndarray) -> np.ndarray:
        """Index of the segment of each step (-1: before the anchor, see ``before``)."""
        return np.searchsorted(self._starts, step, side="right") - 1

    def weights_at(self, step: int) -> tuple[float, ...]:
        return self.weights[int(np.searchsorted(self._steps, step, side="right")) - 1]

    def cursors_at(self, step: int) -> tuple[Cursor, ...]:
        """Every source's cursor before ``step`` is taken."""
        i = int(self.segment_of(step))
        if i < 0 and self.before is not None:
            return self.before.cursors_at(step)
        if i < 0:
            raise IndexError(f"step {step} is before the blend's first step")
        seg = self.segments[i]
        return tuple(advance(c, m, (step - seg.start) * int(n), int(n))
                     for c, m, n in zip(seg.cursors, self.sizes, seg.quotas))

    def positions(self, segment: int, source: int, steps: np.ndarray, index: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source epoch, offset in it, that epoch's quota) of the ``index``-th slot of
        ``source`` at each of ``steps`` (all in ``segment``); shape ``steps × index``."""
        seg = self.segments[segment]
        cursor, quota, m = seg.cursors[source], int(seg.quotas[source]), self.sizes[source]
        taken = cursor.offset + (steps - seg.start)[:, None] * quota + index[None, :]
        first, length = epoch_length(m, cursor.quota), epoch_length(m, quota)
        inside = taken < first
        rest = np.maximum(taken - first, 0)
        epoch = np.where(inside, cursor.epoch, cursor.epoch + 1 + rest // length)
        offset = np.where(inside, taken, rest % length)
        return epoch, offset, np.where(inside, cursor.quota, quota)
