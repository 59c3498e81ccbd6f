"""A thread pool whose threads never hold the interpreter open.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, so a
thread blocked on a stalled socket (up to the read timeout, then the retries) keeps a
process alive long after Ctrl-C. fastdata's background I/O runs here instead: the threads
are daemons, a shutdown can leave running work behind instead of waiting for it, and the
futures are ordinary :class:`concurrent.futures.Future` objects.

Whoever abandons running work must make sure nothing depends on it: downloads write to
temp files that the cache removes at exit or on its next open (``fastdata.storage``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = object()


class DaemonPool:
    """At most ``workers`` daemon threads named ``<name>-<i>``, started as work arrives."""

    def __init__(self, workers: int, name: str) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")  # programming error
        self._workers, self._name = workers, name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("submit after shutdown")
            self._queue.put((future, fn, args))
            if self._idle == 0 and len(self._threads) < self._workers:
                t = threading.Thread(target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            elif self._idle > 0:
                self._idle -= 1  # an idle thread takes it
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as e:  # noqa: BLE001 - handed to the waiter
                    future.set_exception(e)
                else:
                    future.set_result(result)
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop taking work; with ``wait``, join the threads, else leave running work behind."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if cancel_futures:
            pending = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    pending.append(item[0])
            for future in pending:
                future.cancel()
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for t in self._threads:
                t.join()

    def __enter__(self) -> DaemonPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # an error waits for the running work as usual; an interrupt (Ctrl-C, SystemExit)
        # leaves it behind instead of waiting on a stalled socket
        abandon = exc_type is not None and not issubclass(exc_type, Exception)
        self.shutdown(wait=not abandon, cancel_futures=exc_type is not None)
