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
_users = 0


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def graceful_sigterm() -> Iterator[None]:
    """Within the block, an unhandled SIGTERM raises SystemExit(143) in the main thread."""
    global _users
    installed = False
    with _lock:
        if threading.current_thread() is threading.main_thread():
            if _users > 0:
                _users += 1
                installed = True
            elif signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _raise_exit)
                _users, installed = 1, True
    try:
        yield
    finally:
        if installed:
            with _lock:
                _users -= 1
                if _users == 0 and signal.getsignal(signal.SIGTERM) is _raise_exit:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
