"""Which holders of a node cache are alive: a lease file per process, locked while it lives.

A holder (the process behind a pin or a reservation) is named by a token: its pid and a
random nonce. While the process lives it holds an exclusive ``flock`` on
``<root>/.fastdata-cache.lmdb/leases/<token hex>`` (inside the bookkeeping directory). The
kernel drops the lock when the process dies, however it dies (SIGKILL included, and before
it is reaped). Any process tells whether a holder is alive by trying to take that lock
without waiting, so liveness works between containers or pods that share the cache
directory but not a PID namespace (a pid means nothing across them; a lock on a shared
file does).

* A lease is created under a temp name, locked, then renamed into place: a sweeper never
  sees an unlocked final name of a live process.
* A forked child closes its copy of the parent's lease descriptor (the parent keeps the
  lock) and makes its own on first use.
* A holder whose lease file is missing is dead (this includes holders recorded by a
  fastdata that identified holders by pid and start time).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
import struct
import threading
import time

from fastdata.errors import FastdataCacheError

LEASE_DIR = "leases"  # inside the cache's LMDB directory, which the cache makes and checks first
HOLDER = struct.Struct(">IQ")  # pid (for people reading the table), random nonce
_TMP = ".tmp-"

_lock = threading.Lock()
_mine: dict[tuple[int, int, int], tuple[bytes, int]] = {}  # (pid, st_dev, st_ino) -> (token, fd)


def _after_fork_in_child() -> None:
    for _, fd in _mine.values():
        with contextlib.suppress(OSError):
            os.close(fd)  # the parent's descriptor: closing our copy keeps the parent's lock
    _mine.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _lease_dir(db_fd: int) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(LEASE_DIR, 0o700, dir_fd=db_fd)
    try:
        fd = os.open(LEASE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=db_fd)
    except OSError as e:
        raise FastdataCacheError(f"node cache lease directory {LEASE_DIR} is not a usable directory: {e}; "
                                 "remove it") from e
    return fd


def my_token(db_fd: int) -> bytes:
    """This process's holder token for the cache at ``db_fd``, its lease made on first use."""
    st = os.fstat(db_fd)
    key = (os.getpid(), st.st_dev, st.st_ino)
    with _lock:
        found = _mine.get(key)
        if found is not None:
            return found[0]
        token = HOLDER.pack(os.getpid() & 0xFFFFFFFF, secrets.randbits(64))
        dfd = _lease_dir(db_fd)
        try:
            tmp = _TMP + token.hex()
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dfd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, token.hex(), src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
        _mine[key] = (token, fd)
        return token


def alive(db_fd: int, holder: bytes) -> bool:
    """Whether the process behind ``holder`` still holds its lease (a dead one's file goes)."""
    if len(holder) != HOLDER.size:
        return False
    dfd = _lease_dir(db_fd)
    try:
        try:
            fd = os.open(holder.hex(), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except (FileNotFoundError, OSError):
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(holder.hex(), dir_fd=dfd)  # we hold its lock: nobody can be using it
            return False
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def sweep(db_fd: int) -> int:
    """Remove the lease files of dead processes (and abandoned temp leases); returns how many."""
    dfd = _lease_dir(db_fd)
    removed = 0
    try:
        for name in os.listdir(dfd):
            if name.startswith(_TMP):
                # a temp lease lives for the moment between its creation and its lock, then is
                # renamed: one that is old and unlocked was abandoned by a crash in between
                with contextlib.suppress(FileNotFoundError):
                    old = time.time() - os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mtime > 60
                    if old and not _locked(dfd, name):
                        os.unlink(name, dir_fd=dfd)
                        removed += 1
                continue
            try:
                holder = bytes.fromhex(name)
            except ValueError:
                continue
            if not alive(db_fd, holder):
                removed += 1
    finally:
        os.close(dfd)
    return removed


def _locked(dfd: int, name: str) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
