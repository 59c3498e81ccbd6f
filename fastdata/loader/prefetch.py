"""Fetching the shards the coming steps need, ahead of the training loop.

The order is known in advance, so one background thread walks this rank's next steps,
works out which shards they touch, and makes sure each is in the node cache before a
batch needs it, oldest need first, never more than ``budget`` bytes ahead of the step the
loop is at. Shards fetched ahead are left unpinned with their next use as the eviction
hint, so the cache evicts them last. One bounded look-ahead, one stop event, and any
error is handed to the consumer, which raises it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from fastdata import metrics

log = logging.getLogger(__name__)


class Prefetcher:
    """Background filling of the cache for steps ``steps`` (in order)."""

    #: Steps whose shards are worked out in one vectorised call.
    block = 256

    def __init__(self, steps: range, first_uses: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
                 fetch: Callable[[int, int], int], budget: int) -> None:
        """
        Args:
            steps: the steps this rank will make, in order.
            first_uses: ``first_uses(lo, hi)`` gives (step, shard) of each shard first read in
                steps ``[lo, hi)``, in that order.
            fetch: ``fetch(shard, step)`` puts the shard in the cache; returns its size.
            budget: bytes that may be fetched ahead of the consumer's step.
        """
        self._steps, self._first_uses, self._fetch, self._budget = steps, first_uses, fetch, budget
        self._ahead: deque[tuple[int, int]] = deque()  # (step, bytes) fetched for future steps
        self._consumer = steps.start - 1
        self._cond = threading.Condition()
        self._stop = False
        self.error: BaseException | None = None
        self.fetched = 0
        self._thread = threading.Thread(target=self._run, name="fastdata-prefetch", daemon=True)
        self._thread.start()

    def advance(self, step: int) -> None:
        """The training loop has reached ``step``; raises what the prefetch thread hit."""
        with self._cond:
            self._consumer = step
            while self._ahead and self._ahead[0][0] <= step:
                self._ahead.popleft()
            self._cond.notify_all()
        if self.error is not None:
            raise self.error

    def _room(self) -> bool:
        return sum(b for _, b in self._ahead) < self._budget

    def _run(self) -> None:
        seen: set[int] = set()
        try:
            for lo in range(self._steps.start, self._steps.stop, self.block):
                with self._cond:  # keep the walk near the consumer: no CPU spent far ahead
                    while not self._stop and lo > self._consumer + self.block:
                        self._cond.wait(0.1)
                    if self._stop:
                        return
                steps, shards = self._first_uses(lo, min(lo + self.block, self._steps.stop))
                for step, shard in zip(steps.tolist(), shards.tolist()):
                    if shard in seen:
                        continue
                    with self._cond:
                        while not self._stop and step > self._consumer and not self._room():
                            self._cond.wait(0.1)
                        if self._stop:
                            return
                    size = self._fetch(shard, step)
                    seen.add(shard)
                    self.fetched += 1
                    with self._cond:
                        if step > self._consumer:
                            self._ahead.append((step, size))
                        metrics.gauge("prefetch.ahead_bytes", sum(b for _, b in self._ahead))
                        metrics.gauge("prefetch.ahead_steps", max(0, step - self._consumer))
        except BaseException as e:  # handed to the consumer by advance()
            self.error = e
            log.debug("prefetch stopped: %s", e)

    def close(self, wait: bool = True) -> None:
        """Stop the walk; ``wait=False`` (an interrupt) does not wait for a fetch in flight."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if wait:
            self._thread.join(timeout=30)
