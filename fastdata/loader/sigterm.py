"""SIGTERM while a loader iterates: unwind like Ctrl-C instead of dying mid-write.

Python's default for SIGTERM ends the process at once: a download in flight leaves its temp
file in the cache (reclaimed only by the next open on the node) and nothing runs its
``finally``. While a :class:`fastdata.DataLoader` iterates, and only when the process has no
SIGTERM handler of its own (the handler is ``SIG_DFL``) and this is the main thread,
fastdata installs one that raises ``SystemExit(143)`` in the main thread: the training loop
unwinds like Ctrl-C, background threads are not waited for, temp files are removed at exit.
The previous handler is put back when the last iterator ends. A handler set by the user or
a framework (Lightning, torchelastic) is never replaced.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_users = [0]  # iterators inside the block (a list: captured by reference, see below)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def graceful_sigterm() -> Iterator[None]:
    """Within the block, an unhandled SIGTERM raises SystemExit(143) in the main thread."""
    installed = False
    # local references: an iterator collected at interpreter exit closes after module globals
    # may already be gone
    lock, users, sig, handler = _lock, _users, signal, _raise_exit
    with lock:
        if threading.current_thread() is threading.main_thread():
            if users[0] > 0:
                users[0] += 1
                installed = True
            elif sig.getsignal(sig.SIGTERM) is sig.SIG_DFL:
                sig.signal(sig.SIGTERM, handler)
                users[0], installed = 1, True
    try:
        yield
    finally:
        if installed:
            with lock:
                users[0] -= 1
                if users[0] == 0 and sig.getsignal(sig.SIGTERM) is handler:
                    sig.signal(sig.SIGTERM, sig.SIG_DFL)
