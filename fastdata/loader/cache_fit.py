"""How a node cache limit fits the job: one pure function, used by ``TokenDataset``,
``fastdata.DataLoader`` (through it) and ``fastdata doctor``.

Every process that reads shards (each rank, and each worker process of the processes
backend) keeps some shards mapped, and so pinned, at once:

* the order's **working set** per process when the limit holds it for every process (then
  each shard of a shuffle block is opened once);
* else the minimum, ``CACHED_OPEN_SHARDS``: correct, but shards are opened again and again
  (and with a very tight cache fetched again), so the loader warns, naming the advised limit.

Below ``largest shard x (processes x CACHED_OPEN_SHARDS + 1)`` (the one is a fill in flight)
nothing can work: the limit is refused, naming that minimum. What the limit leaves beyond
the pins is each process's room to prefetch. No torch, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastdata.errors import FastdataConfigError

#: Shards a process keeps mapped (and so pinned in a node cache) at the least.
CACHED_OPEN_SHARDS = 4


@dataclass(frozen=True)
class CacheFit:
    """What a limit means for one job on one node."""

    per_process: int  #: shards each reading process keeps pinned
    minimum: int  #: the smallest limit that can work, in bytes
    advised: int  #: the limit that keeps every process's working set pinned
    prefetch_room: int  #: bytes each process may fetch ahead without crowding the pins
    tight: bool  #: the limit holds less than the working set (one assembling thread, a warning)


def minimum_limit(largest: int, processes: int) -> int:
    """The smallest limit for ``processes`` readers of shards up to ``largest`` bytes."""
    return largest * (processes * CACHED_OPEN_SHARDS + 1)


def fit(limit: int, largest: int, ranks: int, working_set: int, workers: int = 1) -> CacheFit:
    """The fit of ``limit`` bytes for ``ranks`` ranks on the node, each reading through
    ``workers`` processes (1 for threads), with a working set of ``working_set`` shards per
    process and shards of up to ``largest`` bytes.

    Raises:
        FastdataConfigError: the limit is below the minimum (named, with who pins what).
    """
    processes = ranks * workers
    working = max(CACHED_OPEN_SHARDS, working_set)
    advised = largest * (processes * working + 1)
    per_process = working if limit >= advised else CACHED_OPEN_SHARDS
    minimum = minimum_limit(largest, processes)
    if limit < minimum:
        who = f"{ranks} rank(s)" + (f" x {workers} worker processes" if workers > 1 else "")
        raise FastdataConfigError(
            f"cache_limit {limit} bytes is too small: {who} on this node keep up to "
            f"{CACHED_OPEN_SHARDS} shards of up to {largest} bytes each, plus one in flight; use at "
            f"least {minimum} bytes")
    room = max(1, (limit - largest * processes * per_process) // processes)
    return CacheFit(per_process, minimum, advised, room, per_process < working)


def working_set(shards: int, partitions: int, global_batch: int, micro_batch: int,
                window: int | None, shuffle: bool) -> int:
    """Shards one process reads from at once: the partitions its micro-batch draws from, each
    within its current shuffle block (``window`` shards, or the whole partition)."""
    per_partition = -(-shards // partitions) + 1
    slots = max(1, global_batch // partitions)
    touched = min(partitions, -(-micro_batch // slots) + 1)
    block = 2 if not shuffle else min(window or per_partition, per_partition)
    return min(shards, touched * block)


def fitting_window(limit: int, largest: int, processes: int, shards: int, partitions: int,  # noqa: PLR0913
                   global_batch: int, micro_batch: int) -> int | None:
    """The largest shuffle ``window`` (shards per local-shuffle block) whose working set the
    limit holds for every process, or None when not even a window of 1 does."""
    best = None
    for window in range(1, shards + 1):
        working = max(CACHED_OPEN_SHARDS, working_set(shards, partitions, global_batch, micro_batch,
                                                      window, shuffle=True))
        if largest * (processes * working + 1) > limit:
            break
        best = window
    return best
