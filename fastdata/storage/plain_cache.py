"""The plain cache directory: ``cache_dir`` without ``cache_limit``.

Files are written once under a temp name and renamed into place; there is no limit and no
eviction. What makes it safe to reuse a file found there:

* the directories are private: created ``0700``, a symlinked directory or one owned by
  another user is refused (someone else could plant files in it);
* an entry that is not a regular file (a symlink, a fifo) is never opened: it is removed and
  the shard fetched again;
* the size is checked here; the caller checks the content hash the first time each process
  uses the file (``fastdata.reader.files``), as for the node cache.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable

from fastdata.atomic import is_enospc, sweep_stale_temps, temp_name
from fastdata.errors import FastdataCacheError

log = logging.getLogger(__name__)


def private_directory(path: str) -> str:
    """Create ``path`` (mode 0700) or check the existing one is ours; returns ``path``.

    Raises:
        FastdataCacheError: ``path`` is a symlink, not a directory, or owned by another user.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise FastdataCacheError(
            f"cache directory {path} is a symlink; fastdata does not follow symlinks in its cache "
            "(someone could point it at other files): remove it or choose another cache_dir")
    if not stat.S_ISDIR(st.st_mode):
        raise FastdataCacheError(f"cache directory {path} exists and is not a directory; choose another "
                                 "cache_dir")
    if st.st_uid != os.getuid():
        raise FastdataCacheError(
            f"cache directory {path} is owned by uid {st.st_uid}, not this user ({os.getuid()}): "
            "its files could have been planted; use a directory you own (or chown it)")
    return path


def open_plain_directory(path: str) -> str:
    """``private_directory(path)`` with stale temp files of dead processes swept."""
    private_directory(path)
    sweep_stale_temps(path)
    _directories.add(path)
    return path


def plain_file(directory: str, name: str, size: int, fill: Callable[[str], None]) -> tuple[str, bool]:
    """``directory/name`` of ``size`` bytes, written by ``fill(temp path)`` and renamed into
    place when missing; and whether it was written just now.

    An entry of the wrong size or type (a symlink is never followed) is removed and written
    again; the caller verifies the content of a file it did not write.
    """
    final = os.path.join(directory, name)
    with _lock_of(final):  # one fetch per file in this process (the prefetcher and the loader race)
        return _plain_file(final, directory, name, size, fill)


def _plain_file(final: str, directory: str, name: str, size: int, fill: Callable[[str], None]
                ) -> tuple[str, bool]:
    try:
        st = os.lstat(final)
        if stat.S_ISREG(st.st_mode) and st.st_size == size:
            return final, False
        why = (f"its size is {st.st_size} bytes, expected {size}" if stat.S_ISREG(st.st_mode)
               else "it is not a regular file (never followed)")
        log.warning("cache directory: fetching %s again: %s", final, why)
        os.unlink(final)
    except FileNotFoundError:
        pass
    tmp = os.path.join(directory, temp_name(name))
    _in_flight.add((os.getpid(), tmp))
    try:
        fill(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        if not is_enospc(e):
            raise
        raise FastdataCacheError(
            f"cache directory {directory}: disk full while writing {name}: needed {size} bytes, "
            f"{shutil.disk_usage(directory).free} bytes free; free the disk or choose a cache_dir "
            "with room") from e
    finally:
        _in_flight.discard((os.getpid(), tmp))
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final, True


_in_flight: set[tuple[int, str]] = set()  # (pid, temp file) being written (a forked child inherits it)
_directories: set[str] = set()  # plain directories this process opened


@atexit.register
def _drop_fills_left_behind() -> None:
    """At exit (after Ctrl-C left a download on a stalled socket), remove its temp file, and
    those of dead processes (worker processes stopped with this one)."""
    for pid, tmp in list(_in_flight):
        if pid == os.getpid():
            drop(tmp)
    for directory in list(_directories):
        with contextlib.suppress(OSError):
            sweep_stale_temps(directory)


_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def _lock_of(path: str) -> threading.Lock:
    with _locks_lock:
        return _locks.setdefault(path, threading.Lock())


def drop(path: str) -> None:
    """Remove a damaged file so that the next use fetches it again."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
