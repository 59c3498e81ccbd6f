"""The node cache's bookkeeping store: one LMDB environment per cache root, per process.

:mod:`fastdata.storage.cache` decides what the records mean (entries, pins, reservations,
counters); this module only opens the environment, runs transactions and keeps both safe
across ``fork``, across containers and across crashes:

* **Transactions** run under a process-wide gate (``fork`` waits for it, so a child never
  inherits one in flight) and under a ``flock`` on ``TXN_LOCK``: shared to read, exclusive
  to write. LMDB itself runs without its lock file (``MDB_NOLOCK``): its reader table keys
  readers by pid, and pids collide between containers that share the cache (two pid 1s
  fail with ``EAGAIN``). With the flock no reader is active while a writer is, which is
  LMDB's rule for running without its own lock.
* **Damage.** ``data.mdb`` is checked when it is opened: a file LMDB does not recognise, or
  one shorter than its own last page (a truncation: reading it would end the process with
  SIGBUS), is moved aside to ``data.mdb.damaged`` under the exclusive lock and the store
  starts empty; the cache then rebuilds its records from the directory (``reconcile``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
from collections.abc import Iterator

import lmdb

from fastdata.errors import FastdataCacheError, FastdataConfigError

log = logging.getLogger(__name__)

DB_DIR = ".fastdata-cache.lmdb"
TXN_LOCK = "txn.lock"
DATA = "data.mdb"
TABLES = ("entries", "pins", "reserve", "meta", "spaces", "sparse")  # sparse: key -> file size
ENTRY = struct.Struct(">QdQ")  # bytes accounted (a sparse file: those written), next_use, last-use tick
U64 = struct.Struct(">Q")
MAX_NAME = 200  # bytes, leaving room for the temp-name decoration within NAME_MAX
MAP_SIZE = 1 << 30
REBUILD = b"rebuild"  #: meta key: the records were lost; reconcile adopts the directory and clears it

gate = threading.Lock()
# (st_dev, st_ino) of the LMDB dir -> [env, tables, users, fd of its transaction lock file]
_envs: dict[tuple[int, int], list] = {}


def _after_fork_in_child() -> None:
    for env, _, _, lock_fd in _envs.values():
        env.close()
        os.close(lock_fd)  # our copy only: nothing is locked across a fork (see gate)
    _envs.clear()
    gate.release()


os.register_at_fork(before=gate.acquire, after_in_parent=gate.release,
                    after_in_child=_after_fork_in_child)


def component(kind: str, value: str) -> bytes:
    """``value`` as one safe path component (a namespace or a file name), UTF-8 encoded."""
    if not isinstance(value, str) or not value or value[0] == "." or "/" in value or "\0" in value:
        raise FastdataConfigError(f"cache {kind} must be one path component not starting with '.', "
                                  f"got {value!r}")
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        raise FastdataConfigError(f"cache {kind} is not valid UTF-8: {value!r}") from None
    if len(raw) > MAX_NAME:
        raise FastdataConfigError(f"cache {kind} is {len(raw)} bytes, over {MAX_NAME}: {value[:40]!r}...")
    return raw


def entry_key(namespace: str, name: str) -> bytes:
    return component("namespace", namespace) + b"\0" + component("name", name)


def attach(root: str, root_fd: int, db_dir: str, key: tuple[int, int]) -> None:
    """Share (or open) this process's environment of ``root/db_dir``. When its records were
    found damaged it starts empty with the ``REBUILD`` mark set in ``meta``: the first
    reconcile of any process adopts the directory's files and clears it."""
    with gate:
        if key in _envs:
            _envs[key][2] += 1
            return
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        lock_fd = os.open(os.path.join(db_dir, TXN_LOCK), flags, 0o600, dir_fd=root_fd)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                env, rebuilt = _open(root, root_fd, db_dir)
                try:
                    with env.begin(write=True) as txn:
                        tables = {n: env.open_db(n.encode(), txn=txn) for n in TABLES}
                        if rebuilt:  # in the store itself: whichever process reconciles first adopts
                            txn.put(REBUILD, b"1", db=tables["meta"])
                except lmdb.Error as e:
                    where = env.path()
                    env.close()
                    if _disk_full(e):
                        raise _full_error(where, e) from None
                    raise
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(lock_fd)
            raise
        _envs[key] = [env, tables, 1, lock_fd]


def _open(root: str, root_fd: int, db_dir: str) -> tuple[lmdb.Environment, bool]:
    """Open the environment (under the exclusive lock); a damaged one is moved aside first."""
    path = os.path.join(root, db_dir)
    problem = None
    try:
        env = _lmdb(path)
    except lmdb.Error as e:
        if _disk_full(e):
            raise _full_error(path, e) from None
        problem = f"LMDB cannot read it ({type(e).__name__}: {e})"
    else:
        try:
            size = os.stat(os.path.join(db_dir, DATA), dir_fd=root_fd, follow_symlinks=False).st_size
        except FileNotFoundError:
            size = 0
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if size and size < needed:
            problem = f"it is truncated ({size} bytes, its records reach byte {needed})"
            env.close()
        else:
            return env, False
    damaged = os.path.join(path, DATA)
    log.warning("node cache %s: the bookkeeping %s is damaged: %s; moving it to %s.damaged and "
                "rebuilding the records from the cache directory", root, damaged, problem, damaged)
    dfd = os.open(db_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        os.replace(DATA, DATA + ".damaged", src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as e:
        raise FastdataCacheError(
            f"node cache {root}: the bookkeeping {damaged} is damaged ({problem}) and cannot be moved "
            f"aside ({e}); delete {path} and restart") from None
    finally:
        os.close(dfd)
    return _lmdb(path), True


def _lmdb(path: str) -> lmdb.Environment:
    return lmdb.open(path, map_size=MAP_SIZE, max_dbs=8, subdir=True, mode=0o600, metasync=False,
                     sync=False, readahead=False, lock=False)


@contextlib.contextmanager
def transaction(key: tuple[int, int], write: bool) -> Iterator[tuple[lmdb.Transaction[bytes], dict]]:
    """One LMDB transaction on the environment ``key``, under the gate and the flock."""
    with gate:
        env, tables, _, lock_fd = _envs[key]
        fcntl.flock(lock_fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        try:
            with env.begin(write=write) as txn:
                yield txn, tables
        except lmdb.Error as e:
            if _disk_full(e):
                raise _full_error(env.path(), e) from None
            raise
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)


def _disk_full(e: lmdb.Error) -> bool:
    """LMDB reports a full disk as an error whose text is the system's (no errno attribute)."""
    text = str(e)
    return isinstance(e, lmdb.MapFullError) or "No space left" in text or "quota exceeded" in text


def _full_error(path: str, e: lmdb.Error) -> FastdataCacheError:
    return FastdataCacheError(
        f"node cache bookkeeping {path}: the disk is full ({type(e).__name__}: {e}); free space on "
        "the cache's disk (or lower cache_limit below the free space)")


def detach(key: tuple[int, int]) -> None:
    """One user of ``key`` is done; the last one closes the environment."""
    with gate:
        shared = _envs.get(key)
        if shared is not None:
            shared[2] -= 1
            if shared[2] == 0:
                shared[0].close()
                os.close(shared[3])
                del _envs[key]
