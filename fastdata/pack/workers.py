"""Encoding tasks on worker processes, results in task order, inputs fetched ahead.

Tasks come lazily (a Python iterable's records are read as the pack goes). Each task's
data (the bytes of a remote input, fetched by this process) is fetched on a thread and
the task then encoded on a worker process; at most ``2 * workers`` tasks are in flight,
which bounds memory, and results are yielded in task order.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

from fastdata.pack.encode import EncodeOptions, TaskResult, encode_task
from fastdata.pack.sources import Task, TaskData

#: Fills in a task's data (remote bytes) when it came without; runs on a fetch thread.
Fetch = Callable[[Task, TaskData], TaskData]


def _worker_init() -> None:
    # Hugging Face tokenizers parallelise each batch over all cores; with one process per
    # core that oversubscribes them, so workers encode single-threaded.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"


def _no_fetch(task: Task, data: TaskData) -> TaskData:
    return data


class Workers:
    """The encoding processes of one pack.

    Started at once with fork while this process has no other thread (before the pack opens
    any fsspec client, whose event-loop thread would make fork unsafe); otherwise started
    with spawn when a pack of more than one task first needs them.
    """

    def __init__(self, workers: int) -> None:
        self.count, self._pool = workers, None
        fork = "fork" in multiprocessing.get_all_start_methods()
        if workers > 1 and threading.active_count() == 1 and fork:
            self._pool = self._start("fork")

    def _start(self, method: str) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context(method)
        pool = ProcessPoolExecutor(max_workers=self.count, mp_context=ctx, initializer=_worker_init)
        pool.submit(int).result()  # start the processes now, from this thread
        return pool

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = self._start("spawn")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def ordered_results(tasks: Iterable[tuple[Task, TaskData]], options: EncodeOptions, workers: Workers,
                    fetch: Fetch = _no_fetch) -> Iterator[TaskResult]:
    """Encode ``tasks`` on the ``workers`` (this process for one); yield results in task order."""
    queued = iter(tasks)
    head = list(itertools.islice(queued, 2))
    queued = itertools.chain(head, queued)
    pool = workers.pool() if workers.count > 1 and len(head) > 1 else None

    def one(task: Task, data: TaskData) -> TaskResult | TaskData:
        data = fetch(task, data)
        if pool is None:
            return data  # encoded by the consumer, in this process
        return pool.submit(encode_task, task, options, data).result()

    depth = 2 * workers.count
    fetchers = ThreadPoolExecutor(depth, thread_name_prefix="fastdata-pack-input")
    window: deque[tuple[Task, Future[TaskResult | TaskData]]] = deque()
    try:
        while True:
            while len(window) < depth:
                item = next(queued, None)
                if item is None:
                    break
                window.append((item[0], fetchers.submit(one, *item)))
            if not window:
                return
            task, future = window.popleft()
            done = future.result()
            yield done if isinstance(done, TaskResult) else encode_task(task, options, done)
    finally:
        for _, future in window:
            future.cancel()
        fetchers.shutdown(wait=True, cancel_futures=True)
