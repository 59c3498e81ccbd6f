"""The watchdog of the processes backend: a stopped or stuck worker process ends in an error.

torch's ``DataLoader`` can wait forever on one worker process: with ``timeout=0`` it only
checks that workers are alive, and whatever the timeout, receiving a batch under the
``file_descriptor`` sharing strategy asks the *sending* worker for the storage's file
descriptor over a unix socket, with no timeout; a worker stopped (SIGSTOP) or stuck after
its message was queued holds the training loop there for good.

So :class:`Watchdog` runs one daemon thread (``fastdata-watchdog``) beside torch's iterator.
The loop tells it when it starts waiting for a batch and when the batch arrived. When one
wait has lasted ``timeout`` seconds, or the worker it waits on has been stopped (state ``T``
in ``/proc/<pid>/stat``) for :data:`STOPPED_AFTER` seconds, the watchdog SIGKILLs that
worker (a stopped process dies of SIGKILL, nothing else). That breaks whatever the loop is
blocked in (the socket to the dead worker closes; torch's liveness check sees it gone) and
the loop raises :class:`~fastdata.errors.FastdataWorkerError` naming the worker's index and
pid instead of torch's error. Before the kill the workers' pids are taken out of torch's
SIGCHLD check, so the death is reported where the loop waits, never inside the training
step.

Only the watchdog's own ticks count as waiting (each at most ``2 * POLL`` seconds): a
process suspended as a whole (Ctrl-Z, a laptop asleep) does not find its workers late when
it resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between two looks of the watchdog.
POLL = 0.25
#: Seconds a worker the loop waits on may stay stopped (SIGSTOP) before it is ended.
STOPPED_AFTER = 5.0
#: Seconds after the kill within which the loop raises (torch polls its workers every 5 s).
REPORT_WITHIN = 6.0


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (``R``, ``S``, ``T``, ...), None when it is gone or
    the system has no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    _, _, rest = stat.rpartition(")")  # the command name may hold spaces and parentheses
    return rest.split()[0] if rest.split() else None


class Watchdog:
    """Watches one torch ``_MultiProcessingDataLoaderIter``; see the module docstring."""

    def __init__(self, iterator: Any, timeout: float, *, stopped_after: float = STOPPED_AFTER) -> None:
        self._iterator, self.timeout, self.stopped_after = iterator, timeout, stopped_after
        self._lock = threading.Lock()
        self._waiting = False
        self._waited = 0.0  # seconds of the current wait, counted in watchdog ticks
        self._stopped = 0.0  # of those, seconds a worker was seen stopped
        self.fired: str | None = None  # what was ended and why, once it fired
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fastdata-watchdog", daemon=True)
        self._thread.start()

    def waiting(self) -> None:
        """The loop starts waiting for a batch."""
        with self._lock:
            self._waiting, self._waited, self._stopped = True, 0.0, 0.0

    def arrived(self) -> None:
        with self._lock:
            self._waiting = False

    def end_rest(self) -> None:
        """Terminate the workers left: torch would give each 5 s to finish a stuck fetch."""
        for w in getattr(self._iterator, "_workers", ()):
            try:
                if w.is_alive():
                    w.terminate()
            except (OSError, ValueError, AssertionError):  # already reaped or closed
                pass

    def close(self) -> None:
        self._closed.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * POLL + 1)

    # ------------------------------------------------------------------ the thread

    def _awaited(self) -> tuple[int, Any] | None:
        """(index, process) of the worker whose batch the loop waits for: torch hands batches
        out in order, the next one is ``_rcvd_idx``'s. None when that is not known."""
        it = self._iterator
        try:
            info = it._task_info.get(it._rcvd_idx)
            if info and len(info) == 1:
                return info[0], it._workers[info[0]]
        except (AttributeError, IndexError, KeyError, TypeError):
            pass
        return None

    def _watch(self) -> None:
        last = time.monotonic()
        while not self._closed.wait(POLL):
            now = time.monotonic()
            tick, last = min(now - last, 2 * POLL), now
            with self._lock:
                if not self._waiting or self.fired is not None:
                    continue
                self._waited += tick
                awaited = self._awaited()
                everyone = list(enumerate(getattr(self._iterator, "_workers", ())))
                candidates = [awaited] if awaited else everyone
                # any stopped worker, not only the awaited one: a worker stopped in the middle of
                # handing a batch over (torch's fd transfer, the shared queue's lock) blocks the
                # loop while it seems to wait for another worker's batch
                stopped = [(i, w) for i, w in everyone if process_state(w.pid) == "T"]
                self._stopped = self._stopped + tick if stopped else 0.0
                if self._stopped >= self.stopped_after:
                    self._fire(stopped, f"it has been stopped (SIGSTOP) for {self._stopped:.0f} s")
                elif self.timeout and self._waited >= self.timeout:
                    self._fire(candidates, "")  # not knowing which one it waits on: all of them

    def _fire(self, workers: list[tuple[int, Any]], why: str) -> None:
        names = ", ".join(f"{i} (pid {w.pid})" for i, w in workers)
        self.fired = (f"DataLoader worker {names} delivered no batch for {self._waited:.0f} s"
                      f"{'; ' + why if why else ''} (timeout={self.timeout:g} s): ended it. "
                      "Find why it hung (py-spy dump --pid), then resume from the last "
                      "loader.state_dict()")
        log.error("%s", self.fired)
        try:  # report the death where the loop waits, not from torch's SIGCHLD handler
            from torch.utils.data import _utils

            if getattr(self._iterator, "_worker_pids_set", False):
                _utils.signal_handling._remove_worker_pids(id(self._iterator))
                self._iterator._worker_pids_set = False
        except Exception:  # noqa: BLE001 - torch internals moved: the SIGCHLD path still reports it
            log.debug("could not unregister the worker pids from torch's SIGCHLD check", exc_info=True)
        for _, w in workers:
            try:
                os.kill(w.pid, signal.SIGKILL)
            except (ProcessLookupError, TypeError):
                pass


def watched(iterator: Any, timeout: float) -> Any:
    """The items of torch's ``iterator``, each wait watched by a :class:`Watchdog` (none when
    ``timeout`` is 0); a worker it ended is raised as :class:`~fastdata.errors.FastdataWorkerError`.
    Closing this generator stops the watchdog."""
    from fastdata.errors import FastdataWorkerError

    if not timeout:
        yield from iterator
        return
    watch = Watchdog(iterator, timeout)
    try:
        while True:
            watch.waiting()
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Exception as error:
                if watch.fired is not None:
                    watch.end_rest()
                    raise FastdataWorkerError(watch.fired) from error
                raise
            finally:
                watch.arrived()
            if watch.fired is not None:
                watch.end_rest()
                raise FastdataWorkerError(watch.fired)
            yield item
    finally:
        watch.close()
