"""The one stepping generator: a run of one process's steps, made in chunks, in order.

Every way of iterating a ``TokenDataset`` goes through :func:`stream`: the dataset's own
``__iter__`` (in-process, or in a stock DataLoader's workers), ``fastdata.DataLoader``'s
threads backend and the worker processes of its processes backend. It

* cuts the steps into chunks of 1, 2, 4, ... up to ``largest`` steps (the first batch
  waits only for its own shards; later ones are read in bulk), and hands each chunk to
  ``make`` (which returns one item per step), in this thread or on a pool of ``threads``
  with up to ``in_flight`` chunks in the making;
* runs a :class:`~fastdata.loader.prefetch.Prefetcher` over the same steps whenever the
  plan's shards are fetched (remote or compressed), within ``prefetch_bytes`` and the
  room the cache fit leaves (``RankPlan.prefetch_room``);
* does not wait for a stalled download when interrupted (Ctrl-C, SystemExit): background
  threads are daemons (``fastdata.daemon_pool``).

It yields ``(step, item, record)``, with ``record`` the making's stage timings
(``loader/stalls.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from functools import partial
from typing import TypeVar

from fastdata.daemon_pool import DaemonPool
from fastdata.loader.plan import RankPlan
from fastdata.loader.prefetch import Prefetcher
from fastdata.loader.stalls import Made, made

T = TypeVar("T")
Make = Callable[[range], Sequence[T]]


def stream(plan: RankPlan, steps: range, make: Make[T], *, largest: int,  # noqa: PLR0913
           threads: int = 0, in_flight: int = 2, prefetch_bytes: int = 0) -> Iterator[tuple[int, T, Made]]:
    """Items of ``steps`` (a range, possibly strided: a worker's lane), in order."""
    prefetcher = _prefetcher(plan, steps, prefetch_bytes)
    interrupted = True  # until the loop ends, fails or is closed: Ctrl-C waits for nothing
    try:
        made_chunks = (_pooled(steps, make, largest, threads, in_flight) if threads
                       else _inline(steps, make, largest))
        for part, (items, record) in made_chunks:
            yield from _each(part, items, record, prefetcher)
            # Let go of the chunk before the next one is asked for: its buffers are then free
            # before a worker allocates the chunk after it (1.4x the threads backend's rate,
            # benchmarks/ab_loader.py)
            del items
        interrupted = False
    except (Exception, GeneratorExit):
        interrupted = False
        raise
    finally:
        if prefetcher is not None:
            prefetcher.close(wait=not interrupted)


def _each(part: range, items: Sequence[T], record: Made, prefetcher: Prefetcher | None
          ) -> Iterator[tuple[int, T, Made]]:
    for step, item in zip(part, items):
        if prefetcher is not None:
            prefetcher.advance(step)
        yield step, item, record


def chunks(steps: range, largest: int) -> Iterator[range]:
    """``steps`` in consecutive chunks of 1, 2, 4, ... up to ``largest`` steps."""
    size, i = 1, 0
    while i < len(steps):
        yield steps[i : i + size]
        i += size
        size = min(size * 2, largest)


def _prefetcher(plan: RankPlan, steps: range, budget: int) -> Prefetcher | None:
    if plan.prefetch_room is not None:  # never fetch ahead what the cache must evict
        budget = min(budget, plan.prefetch_room)
    if not plan.fetches or budget <= 0 or not steps:
        return None
    walk = range(steps.start, plan.num_steps)  # a worker's lane walks all the rank's steps (one cache)
    return Prefetcher(walk, plan.first_uses, plan.fetch, budget)


def _inline(steps: range, make: Make[T], largest: int) -> Iterator[tuple[range, tuple[Sequence[T], Made]]]:
    for part in chunks(steps, largest):
        yield part, made(partial(make, part))


def _pooled(steps: range, make: Make[T], largest: int, threads: int, in_flight: int
            ) -> Iterator[tuple[range, tuple[Sequence[T], Made]]]:
    parts = chunks(steps, largest)
    pool = DaemonPool(threads, "fastdata-loader")
    window: deque[tuple[range, Future[tuple[Sequence[T], Made]]]] = deque()

    def submit(part: range) -> None:
        window.append((part, pool.submit(made, partial(make, part))))

    interrupted = True
    try:
        for part in parts:
            submit(part)
            if len(window) >= in_flight:
                break
        while window:
            part, future = window.popleft()
            result = future.result()
            following = next(parts, None)
            if following is not None:
                submit(following)
            yield part, result
        interrupted = False
    except (Exception, GeneratorExit):
        interrupted = False
        raise
    finally:
        for _, future in window:
            future.cancel()
        # an interrupt (Ctrl-C, SystemExit) does not wait for a thread on a stalled socket
        pool.shutdown(wait=not interrupted, cancel_futures=True)
