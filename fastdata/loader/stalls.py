"""Where the training loop's wait goes: each wait split over the stages of the batch's making.

Where a batch is made (a loader thread, the loop's own thread with ``num_workers=0``, or a
worker process) :func:`made` times it: when the making started and ended, and which share of
that time the layers below marked as ``fetch`` (downloading a shard, or waiting for another
thread's or process's download of it, and opening it), ``verify`` (hashing a shard) or
``decompress``; the rest of the making is ``gather`` (working out the batch's samples and
copying their tokens). A chunk of batches made together shares one such record.

The loop's wait for a batch runs from its ``next()`` to the batch's arrival. The part of the
wait during which the batch was being made is split over the four stages in the proportions
of the making; the part during which it was not (waiting for a free thread or worker, a
worker's start-up, the hand-off from a worker process) is ``queue``. So the stages of every
wait add up to that wait exactly. Cost per batch: a few float operations, no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from fastdata import metrics
from fastdata._testing import delay_point

T = TypeVar("T")

#: (started, ended, fetch, verify, decompress, gather): a making's interval (perf_counter
#: seconds) and the share of each stage in it. A tuple of floats, so a worker process can send it.
Made = tuple[float, float, float, float, float, float]

#: A batch nobody made here (none of its wait can be attributed to a stage of its making).
UNMADE: Made = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

WAIT_KEYS = tuple(f"loader.wait.{s}.seconds" for s in metrics.STAGES)


def made(make: Callable[[], T]) -> tuple[T, Made]:
    """``make()`` and the record of its making (the ``gather`` test delay point is inside)."""
    with metrics.making() as clock:
        delay_point("gather")
        out = make()
    return out, (clock.started, clock.ended, *clock.fractions())


class Stalls:
    """Seconds of wait per stage, added up by the loop's thread alone (no lock)."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = [0.0] * len(metrics.STAGES)

    def add(self, asked: float, got: float, record: Made) -> None:
        """The wait from ``asked`` to ``got`` for a batch made as ``record`` says."""
        s = self.seconds
        start, end = record[0], record[1]
        overlap = (got if got < end else end) - (asked if asked > start else start)
        if overlap <= 0.0:
            s[4] += got - asked
            return
        s[0] += overlap * record[2]
        s[1] += overlap * record[3]
        s[2] += overlap * record[4]
        s[3] += overlap * record[5]
        s[4] += (got - asked) - overlap

    def take(self) -> list[tuple[str, float]]:
        """The counts gathered since the last take (for ``Registry.record``)."""
        out = [(k, v) for k, v in zip(WAIT_KEYS, self.seconds) if v]
        self.seconds = [0.0] * len(metrics.STAGES)
        return out


def shares(snap: Mapping[str, float]) -> dict[str, float]:
    """The wait shares of a loader snapshot: of the time the loop spent in ``next()`` or in its
    own work, the part in ``next()`` (all batches, and after each iterator's first batch), and
    each stage's part of the wait."""
    wait, work = snap.get("loader.wait.seconds", 0.0), snap.get("loader.compute.seconds", 0.0)
    first = snap.get("loader.first_batch.seconds", 0.0)
    out: dict[str, float] = {}
    if wait + work > 0:
        out["loader.data_wait_share"] = wait / (wait + work)
    if wait - first + work > 0:
        out["loader.data_wait_share.steady"] = max(0.0, wait - first) / (wait - first + work)
    if wait > 0:
        for name, key in zip(metrics.STAGES, WAIT_KEYS):
            out[f"loader.wait.{name}.share"] = snap.get(key, 0.0) / wait
    return out


def dominant(snap: Mapping[str, float]) -> str:
    """The stage that carried most of the wait (``queue`` when nothing was waited for)."""
    values = [snap.get(k, 0.0) for k in WAIT_KEYS]
    return metrics.STAGES[max(range(len(values)), key=values.__getitem__)] if any(values) else "queue"
