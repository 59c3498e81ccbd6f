"""The node-local shard cache: one directory per node, shared by every process on it.

Files live at ``<root>/<namespace>/<name>``. The bookkeeping lives in an LMDB environment at
``<root>/.fastdata-cache.lmdb`` whose write transactions are the only cross-process
coordination (no shared memory; the only lock files are the holders' leases). Its tables:

* ``entries``  ``ns\\0name`` -> (size, next_use, last-use tick): published, accounted files
* ``pins``     ``ns\\0name\\0holder`` -> count: users of an entry, never evicted while pinned
* ``reserve``  ``holder token`` -> (size, ``ns\\0name\\0tempname``): bytes set aside for a fill
* ``meta``     ``files`` and ``reserved`` byte counters, ``tick`` (the LRU clock)
* ``spaces``   namespaces this cache created: reconcile scans their directories and no others

A holder is a process, named by a token and kept alive by a locked lease file
(:mod:`fastdata.storage.leases`): liveness needs no pid, so containers sharing the cache
without sharing a PID namespace see each other's holders as alive, and a dead (or zombie)
process's lock is gone. Dead holders are dropped while making room and by
:meth:`NodeCache.reconcile`; a temp file no live reservation names is deleted there too.

The limit bounds the bytes on disk (final plus temp files) at every instant: bytes are
reserved before the temp file exists, a victim is unlinked before the transaction that frees
its bytes commits, and a temp file is deleted before its reservation. ``fill`` must not
write more than the size it is given. LMDB's own files are not counted.

File contents never depend on the bookkeeping (ACCEPTANCE C11): a file gets its final name
only by an atomic rename of a complete, size-checked, fsynced temp file whose bytes the
caller verified inside ``fill``; if coordination fails, the cost is duplicate downloads and
counters that reconcile recomputes. The cache checks type and size on every acquire; hash
checks on first use are the caller's, who can drop a bad file with :meth:`NodeCache.invalidate`.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import math
import os
import shutil
import stat
import time
import weakref
from collections.abc import Callable, Iterator

import lmdb

from fastdata import metrics
from fastdata._testing import pause_point
from fastdata.atomic import TMP_PREFIX, is_enospc, temp_name
from fastdata.errors import FastdataCacheError, FastdataConfigError, FastdataIntegrityError
from fastdata.storage import cache_db, leases
from fastdata.storage.cache_db import DB_DIR, TXN_LOCK
from fastdata.units import parse_size

log = logging.getLogger(__name__)

_HOLDER = leases.HOLDER  # a holder's token: pid and a random nonce
_ENTRY, _U64 = cache_db.ENTRY, cache_db.U64
_key = cache_db.entry_key


_open_caches: weakref.WeakSet[NodeCache] = weakref.WeakSet()


@atexit.register
def _drop_fills_left_behind() -> None:
    """At exit (after Ctrl-C left a download on a stalled socket), remove its temp file now
    rather than at the next open; the daemon threads doing it die with the process."""
    for cache in list(_open_caches):
        with contextlib.suppress(Exception):
            cache.drop_own_reservations()


class CachedShard:
    """A pinned cache file, not evicted until :meth:`release` (or the end of a ``with`` block)."""

    __slots__ = ("path", "size", "_cache", "_key", "_pid", "_released")

    def __init__(self, cache: NodeCache, key: bytes, size: int) -> None:
        self.path = os.path.join(cache.root, *key.decode().split("\0"))
        self.size, self._cache, self._key, self._pid, self._released = size, cache, key, os.getpid(), False

    def release(self) -> None:
        """Unpin; idempotent. In a forked child the pin is the parent's, so this does nothing."""
        with cache_db.gate:
            if self._released:
                return
            self._released = True
        if self._pid == os.getpid():
            self._cache._unpin(self)

    def __enter__(self) -> CachedShard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"CachedShard({self.path!r}, size={self.size}, released={self._released})"


class NodeCache:
    """A size-limited, crash-safe cache of shard files shared by all processes of a node.

    Args:
        root: the cache directory, created with mode 0700 if missing. A world-writable root
            owned by another user is refused; a world-writable one of ours gets a warning.
        limit: the most bytes of shard files (final and temp) on disk, e.g. ``"50GiB"``;
            every process sharing ``root`` should use the same limit.
        wait_timeout: seconds to wait for room held by pinned or reserved shards (then
            :class:`FastdataCacheError`), or for another live process's download of the same
            shard (then fetch it here too).

    Raises:
        FastdataConfigError: a bad limit or timeout.
        FastdataCacheError: the root is unsafe or unusable.
    """

    def __init__(self, root: str, limit: int | str, *, wait_timeout: float = 120.0,
                 _private_db: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.limit = parse_size(limit)
        if self.limit <= 0:
            raise FastdataConfigError(f"cache limit must be positive, got {limit!r}")
        if not wait_timeout >= 0:
            raise FastdataConfigError(f"wait_timeout must be >= 0 seconds, got {wait_timeout!r}")
        self.wait_timeout = float(wait_timeout)
        # For the C11 test only: bookkeeping private to this process, so that no process sees
        # another's records, as if no lock worked. (LMDB's lock=False cannot model that: its
        # concurrent writers corrupt the store and abort.)
        self._db_dir = f".fastdata-cache.{os.getpid()}.lmdb" if _private_db else DB_DIR
        self._pid, self._known, self._held, self._closed = -1, set(), set(), False
        self._rebuild = False  # the bookkeeping was found damaged: reconcile adopts the directory
        self._root_fd = self._open_root()
        try:
            self._attach()
            self.reconcile()
        except BaseException:
            self.close()
            raise
        _open_caches.add(self)

    def _open_root(self) -> int:
        os.makedirs(os.path.dirname(self.root), exist_ok=True)
        created = False
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.root, 0o700)
            created = True
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise FastdataCacheError(f"node cache root {self.root} is not a usable directory: {e}") from e
        st = os.fstat(fd)
        if created:
            os.fchmod(fd, 0o700)  # whatever the umask
        elif st.st_mode & stat.S_IWOTH and st.st_uid != os.getuid():
            os.close(fd)
            raise FastdataCacheError(
                f"node cache root {self.root} is world-writable and owned by uid {st.st_uid}, not us "
                f"({os.getuid()}): others could replace cached shards; use a private directory")
        elif st.st_uid != os.getuid():
            os.close(fd)
            raise FastdataCacheError(
                f"node cache root {self.root} is owned by uid {st.st_uid}, not this user ({os.getuid()}): "
                "its owner could plant or replace cached shards; use a directory you own (or chown it)")
        elif st.st_mode & stat.S_IWOTH:
            log.warning("node cache root %s is world-writable (mode %o): other users can tamper with "
                        "it; chmod 700 it", self.root, stat.S_IMODE(st.st_mode))
        return fd

    def _attach(self) -> None:
        """Open this process's LMDB environment, or share it; again after a fork."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self._db_dir, 0o700, dir_fd=self._root_fd)
        st = os.stat(self._db_dir, dir_fd=self._root_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            raise FastdataCacheError(f"node cache {self.root}: {self._db_dir} is not a directory; remove it")
        for fname in ("data.mdb", TXN_LOCK):  # LMDB would write through a planted symlink
            with contextlib.suppress(FileNotFoundError):
                path = os.path.join(self._db_dir, fname)
                if not stat.S_ISREG(os.stat(path, dir_fd=self._root_fd, follow_symlinks=False).st_mode):
                    raise FastdataCacheError(f"node cache {self.root}: {path} is not a file; remove it")
        key = (st.st_dev, st.st_ino)
        self._rebuild = cache_db.attach(self.root, self._root_fd, self._db_dir, key) or self._rebuild
        if self._pid not in (-1, os.getpid()):
            self._held = set()  # a forked child: the parent's pins are the parent's to release
        self._env_key, self._pid, self._known = key, os.getpid(), set()
        self._me = leases.my_token(self._db_fd())

    def _db_fd(self) -> int:
        """The bookkeeping directory (checked by ``_attach``), opened once per process."""
        if getattr(self, "_db_fd_pid", None) != os.getpid():
            self._db_fd_cached = os.open(self._db_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                                         os.O_CLOEXEC, dir_fd=self._root_fd)
            self._db_fd_pid = os.getpid()
        return self._db_fd_cached

    @contextlib.contextmanager
    def _txn(self, write: bool = True) -> Iterator[tuple[lmdb.Transaction, dict]]:
        if self._closed:
            raise FastdataCacheError(f"node cache {self.root} is closed")
        if self._pid != os.getpid():
            self._attach()
        with cache_db.transaction(self._env_key, write) as (txn, dbs):
            yield txn, dbs

    # -- helpers inside one transaction ------------------------------------------------------
    @staticmethod
    def _count(txn, dbs, name: bytes, delta: int = 0) -> int:
        raw = txn.get(name, db=dbs["meta"])
        value = _U64.unpack(raw)[0] if raw else 0
        if delta:
            value = max(0, value + delta)  # never negative, even if coordination failed
            txn.put(name, _U64.pack(value), db=dbs["meta"])
        return value

    def _alive(self, holder: bytes, seen: dict[bytes, bool]) -> bool:
        if holder == self._me:
            return True
        if holder not in seen:
            seen[holder] = leases.alive(self._db_fd(), holder)
        return seen[holder]

    def _touch(self, txn, dbs, key: bytes, size: int, next_use: float) -> None:
        txn.put(key, _ENTRY.pack(size, next_use, self._count(txn, dbs, b"tick", 1)), db=dbs["entries"])

    def _pin(self, txn, dbs, key: bytes, size: int) -> CachedShard:
        pin = key + b"\0" + self._me
        raw = txn.get(pin, db=dbs["pins"])
        txn.put(pin, _U64.pack((_U64.unpack(raw)[0] if raw else 0) + 1), db=dbs["pins"])
        handle = CachedShard(self, key, size)
        self._held.add(handle)
        return handle

    def _unpin(self, handle: CachedShard) -> None:
        self._held.discard(handle)
        if self._closed:
            return
        with self._txn() as (txn, dbs):
            pin = handle._key + b"\0" + self._me
            left = _U64.unpack(txn.get(pin, db=dbs["pins"], default=_U64.pack(1)))[0] - 1
            if left > 0:
                txn.put(pin, _U64.pack(left), db=dbs["pins"])
            else:
                txn.delete(pin, db=dbs["pins"])

    def _pinned(self, txn, dbs, key: bytes, seen: dict[bytes, bool]) -> bool:
        """Whether a live process pins ``key``; dead holders' pins are deleted on the way."""
        prefix, cur, holders = key + b"\0", txn.cursor(db=dbs["pins"]), []
        if cur.set_range(prefix):
            for k in cur.iternext(values=False):
                if not k.startswith(prefix):
                    break
                holders.append(k)
        live = False
        for k in holders:
            if self._alive(k[len(prefix):], seen):
                live = True
            else:
                txn.delete(k, db=dbs["pins"])
        return live

    def _dir(self, namespace: str) -> int | None:
        """An fd of the namespace directory, None if missing; a symlink is refused."""
        try:
            return os.open(namespace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=self._root_fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise FastdataCacheError(f"node cache {self.root}: {namespace!r} is a symlink or not a "
                                         "directory; refusing to follow it, remove it") from e
            raise

    def _lstat(self, namespace: str, fname: str, *, unlink: bool = False) -> os.stat_result | None:
        """lstat (or unlink, which never follows a symlink) ``namespace/fname``; None if missing."""
        try:
            fd = self._dir(namespace)
        except FastdataCacheError:
            return None
        if fd is None:
            return None
        try:
            st = os.stat(fname, dir_fd=fd, follow_symlinks=False)
            if unlink and not stat.S_ISDIR(st.st_mode):
                os.unlink(fname, dir_fd=fd)
            return st
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def _drop(self, txn, dbs, key: bytes, reason: str) -> None:
        raw = txn.get(key, db=dbs["entries"])
        if raw is not None:
            namespace, name = key.decode().split("\0")
            log.warning("node cache: dropping %s: %s", os.path.join(self.root, namespace, name), reason)
            self._lstat(namespace, name, unlink=True)
            txn.delete(key, db=dbs["entries"])
            self._count(txn, dbs, b"files", -_ENTRY.unpack(raw)[0])

    def _valid(self, txn, dbs, key: bytes, size: int | None) -> bool:
        """Whether ``key`` has an entry whose file is intact; a damaged one is dropped."""
        raw = txn.get(key, db=dbs["entries"])
        if raw is None:
            return False
        esize, st = _ENTRY.unpack(raw)[0], self._lstat(*key.decode().split("\0"))
        if st is None:
            reason = "the file is missing"
        elif not stat.S_ISREG(st.st_mode):
            reason = "it is not a regular file"
        elif st.st_size != esize:
            reason = f"its size is {st.st_size} bytes, expected {esize}"
        elif size is not None and esize != size:
            reason = f"it holds {esize} bytes but {size} were asked for"
        else:
            return True
        self._drop(txn, dbs, key, reason)
        return False

    @staticmethod
    def _reservations(txn, dbs) -> list[tuple[bytes, int, bytes]]:
        """(reservation key, bytes, entry key) of every reservation."""
        return [(k, _U64.unpack(v[:8])[0], v[8:].rsplit(b"\0", 1)[0])
                for k, v in txn.cursor(db=dbs["reserve"])]

    @staticmethod
    def _temp_of(txn, dbs, res: bytes) -> tuple[bytes, bytes]:
        """(namespace, temp file name) of reservation ``res``."""
        namespace, _, tmp = bytes(txn.get(res, db=dbs["reserve"])[8:]).split(b"\0")
        return namespace, tmp

    def _unreserve(self, txn, dbs, res: bytes) -> None:
        raw = txn.get(res, db=dbs["reserve"])
        if raw is not None:
            namespace, _, tmp = raw[8:].decode().split("\0")
            self._lstat(namespace, tmp, unlink=True)  # the temp goes first: disk bytes <= accounted
            txn.delete(res, db=dbs["reserve"])
            self._count(txn, dbs, b"reserved", -_U64.unpack(raw[:8])[0])

    # -- the interface ---------------------------------------------------------------------------
    @staticmethod
    def minimum_limit(max_shard: int, concurrent: int) -> int:
        """The smallest workable limit: each of ``concurrent`` users (ranks, workers and
        prefetch slots of a node) may pin one shard of the largest size at once."""
        if max_shard < 0 or concurrent < 1:
            raise FastdataConfigError(f"need max_shard >= 0 and concurrent >= 1: {max_shard=}, {concurrent=}")
        return max(1, max_shard * concurrent)

    def usage(self) -> int:
        """Bytes accounted: published files plus live reservations."""
        with self._txn(write=False) as (txn, dbs):
            return self._count(txn, dbs, b"files") + self._count(txn, dbs, b"reserved")

    def stats(self) -> dict[str, int]:
        """Bytes of ``files`` and ``reserved``; numbers of ``entries``, ``pins`` ((shard, process)
        pairs) and ``reservations``. For monitoring and tests."""
        with self._txn(write=False) as (txn, dbs):
            out = {n: self._count(txn, dbs, n.encode()) for n in ("files", "reserved")}
            for n, table in (("entries", "entries"), ("pins", "pins"), ("reservations", "reserve")):
                out[n] = txn.stat(dbs[table])["entries"]
            return out

    def set_next_use(self, namespace: str, name: str, next_use: float) -> None:
        """Tell eviction when a cached shard is next needed (larger goes first; inf: never)."""
        key = _key(namespace, name)
        with self._txn() as (txn, dbs):
            raw = txn.get(key, db=dbs["entries"])
            if raw is not None:
                size, _, tick = _ENTRY.unpack(raw)
                txn.put(key, _ENTRY.pack(size, float(next_use), tick), db=dbs["entries"])

    def invalidate(self, namespace: str, name: str, reason: str = "invalidated by the caller") -> None:
        """Drop a cached file the caller found bad (say, a hash mismatch on first use), with a
        warning. Processes that have it open keep the old inode; the next acquire refills."""
        key = _key(namespace, name)
        with self._txn() as (txn, dbs):
            self._drop(txn, dbs, key, reason)

    def acquire(self, namespace: str, name: str, size: int, fill: Callable[[str], None], *,
                next_use: float = math.inf) -> CachedShard:
        """A pinned handle to ``<root>/<namespace>/<name>``, a file of exactly ``size`` bytes.

        A cached file of the right type and size is pinned as it is. Otherwise room is made
        (evicting unpinned, unreserved entries, largest ``next_use`` first, then the least
        recently used) and ``fill(temp_path)`` writes the file, verifying its hash and raising
        on a mismatch. While another live process fills the same shard, this waits for it.

        Raises:
            FastdataConfigError: a bad name or size, or one over the limit (naming the minimum).
            FastdataIntegrityError: ``fill`` wrote another number of bytes.
            FastdataCacheError: no room within ``wait_timeout``, or the disk is full.
        """
        key = _key(namespace, name)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise FastdataConfigError(f"shard size must be a non-negative int, got {size!r}")
        if size > self.limit:
            raise FastdataConfigError(
                f"shard {namespace}/{name} is {size} bytes but the node cache limit is {self.limit}; "
                f"the limit must be at least {self.minimum_limit(size, 1)} bytes for it alone")
        if namespace not in self._known:
            with self._txn() as (txn, dbs):
                txn.put(namespace.encode(), b"", db=dbs["spaces"])
            self._known.add(namespace)
        with contextlib.suppress(FileExistsError):
            os.mkdir(namespace, 0o700, dir_fd=self._root_fd)
        fd = self._dir(namespace)  # a symlink is refused before anything is reserved
        if fd is None:
            raise FastdataCacheError(f"node cache {self.root}: directory {namespace!r} vanished")
        try:
            deadline, delay, takeover = time.monotonic() + self.wait_timeout, 0.002, False
            while isinstance(got := self._reserve(key, size, next_use, takeover), str):
                if time.monotonic() >= deadline:
                    if got != "filling":
                        raise FastdataCacheError(got)
                    log.warning("node cache: %s/%s is still being filled by another process after %g s; "
                                "fetching it here too", namespace, name, self.wait_timeout)
                    deadline, takeover = time.monotonic() + self.wait_timeout, True
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            return got if isinstance(got, CachedShard) else self._fill(fd, key, size, next_use, fill, got)
        finally:
            os.close(fd)

    def _reserve(self, key: bytes, size: int, next_use: float, takeover: bool):
        """One try: a handle (a hit), (reservation key, temp name), or why to wait."""
        seen: dict[bytes, bool] = {}
        with self._txn() as (txn, dbs):
            if self._valid(txn, dbs, key, size):
                self._touch(txn, dbs, key, size, next_use)
                return self._pin(txn, dbs, key, size)
            busy = set()
            for res, _, rkey in self._reservations(txn, dbs):
                if self._alive(res[:_HOLDER.size], seen):
                    busy.add(rkey)
                else:
                    self._unreserve(txn, dbs, res)
            if key in busy and not takeover:
                return "filling"
            files, reserved = self._count(txn, dbs, b"files"), self._count(txn, dbs, b"reserved")
            need = files + reserved + size - self.limit
            if need > 0:
                victims, pinned = [], 0
                for k, v in txn.cursor(db=dbs["entries"]):
                    esize, enext, etick = _ENTRY.unpack(v)
                    if k in busy or self._pinned(txn, dbs, k, seen):
                        pinned += esize
                    else:
                        victims.append((-enext, etick, k, esize))
                if sum(v[3] for v in victims) < need:
                    shard = key.decode().replace("\0", "/")
                    return (f"node cache {self.root} cannot make room for {shard} ({size} bytes)"
                            f" within {self.wait_timeout:g} s: limit {self.limit} bytes, usage "
                            f"{files + reserved} bytes, of which {pinned} pinned by running processes and "
                            f"{reserved} reserved for downloads in flight; raise the limit (see "
                            "NodeCache.minimum_limit) or release shards sooner")
                for i, (_, _, k, esize) in enumerate(sorted(victims)):
                    if need <= 0:
                        break
                    self._lstat(*k.decode().split("\0"), unlink=True)  # before the commit
                    if i == 0:
                        pause_point("mid_evict")
                    txn.delete(k, db=dbs["entries"])
                    self._count(txn, dbs, b"files", -esize)
                    metrics.count("cache.evictions")
                    metrics.count("cache.evicted_bytes", esize)
                    need -= esize
            res, tmp = self._me + os.urandom(8), temp_name(key.decode().split("\0")[1])
            txn.put(res, _U64.pack(size) + key + b"\0" + tmp.encode(), db=dbs["reserve"])
            self._count(txn, dbs, b"reserved", size)
        return res, tmp

    def _fill(self, fd: int, key: bytes, size: int, next_use: float, fill: Callable[[str], None],
              reservation: tuple[bytes, str]) -> CachedShard:
        (res, tmp), (namespace, name), renamed = reservation, key.decode().split("\0"), False
        pause_point("after_reserve")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600, dir_fd=fd))
            fill(os.path.join(self.root, namespace, tmp))
            tfd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            try:
                if (got := os.fstat(tfd).st_size) != size:
                    raise FastdataIntegrityError(
                        f"node cache: filling {os.path.join(self.root, namespace, name)} wrote {got} bytes, "
                        f"expected {size}")
                os.fsync(tfd)
            finally:
                os.close(tfd)
            pause_point("mid_download")
            with self._txn() as (txn, dbs):
                if self._valid(txn, dbs, key, size):  # another process published it meanwhile
                    os.unlink(tmp, dir_fd=fd)
                else:
                    os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                    renamed = True
                    pause_point("after_publish_before_account")
                    self._count(txn, dbs, b"files", size)
                self._unreserve(txn, dbs, res)
                self._touch(txn, dbs, key, size, next_use)
                handle = self._pin(txn, dbs, key, size)
            renamed = False  # committed: the file is accounted
            os.fsync(fd)
            return handle
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name if renamed else tmp, dir_fd=fd)
            with contextlib.suppress(Exception), self._txn() as (txn, dbs):
                self._unreserve(txn, dbs, res)
            if is_enospc(e):
                raise FastdataCacheError(
                    f"node cache {self.root}: disk full while writing {namespace}/{name}: needed {size} "
                    f"bytes, {shutil.disk_usage(self.root).free} bytes free; lower the cache limit below "
                    "the free space or free the disk") from e
            raise

    def reconcile(self) -> None:
        """Make the bookkeeping match the disk; safe at any time, and run on open.

        Drops pins and reservations of dead holders (with their temp files), temp files of
        dead pids, and entries whose file is missing, not a regular file or of the wrong size.
        A file without an entry is adopted if a dead holder's reservation names it with its
        exact size (it was renamed into place after its fill verified it, just before the
        crash), or when the records were found damaged and rebuilt (``cache_db``); otherwise
        it is deleted. Only directories of namespaces this cache created
        are scanned. The counters are recomputed from what remains.
        """
        seen: dict[bytes, bool] = {}
        with self._txn() as (txn, dbs):
            for k in list(txn.cursor(db=dbs["pins"]).iternext(values=False)):
                if not self._alive(k[-_HOLDER.size:], seen):
                    txn.delete(k, db=dbs["pins"])
            live, adoptable, reserved, live_temps = set(), {}, 0, set()
            for res, rsize, rkey in self._reservations(txn, dbs):
                if self._alive(res[:_HOLDER.size], seen):
                    live.add(rkey)
                    live_temps.add(self._temp_of(txn, dbs, res))
                    reserved += rsize
                else:
                    self._unreserve(txn, dbs, res)
                    adoptable[rkey] = rsize
            files = sum(_ENTRY.unpack(v)[0] for k, v in list(txn.cursor(db=dbs["entries"]))
                        if self._valid(txn, dbs, k, None))
            rebuild, self._rebuild = self._rebuild, False
            if rebuild:  # the records were lost: every namespace directory of the root is ours
                for namespace in os.listdir(self._root_fd):
                    st = os.stat(namespace, dir_fd=self._root_fd, follow_symlinks=False)
                    if not namespace.startswith(".") and stat.S_ISDIR(st.st_mode):
                        txn.put(namespace.encode(), b"", db=dbs["spaces"])
            for raw_ns in list(txn.cursor(db=dbs["spaces"]).iternext(values=False)):
                namespace = raw_ns.decode()
                try:
                    fd = self._dir(namespace)
                except FastdataCacheError as e:
                    log.warning("%s", e)
                    continue
                if fd is None:
                    continue
                try:
                    for fname in os.listdir(fd):
                        if fname.startswith(TMP_PREFIX) and (raw_ns, os.fsencode(fname)) not in live_temps:
                            log.info("node cache: deleting %s/%s, a temp file no live holder reserves",
                                     namespace, fname)
                            self._lstat(namespace, fname, unlink=True)
                            continue
                        key = raw_ns + b"\0" + os.fsencode(fname)
                        if fname.startswith(".") or key in live or txn.get(key, db=dbs["entries"]):
                            continue  # temp files (swept above), in flight, or accounted
                        st = self._lstat(namespace, fname)
                        if st is None or stat.S_ISDIR(st.st_mode):
                            continue
                        path = os.path.join(self.root, namespace, fname)
                        if stat.S_ISREG(st.st_mode) and (rebuild or adoptable.get(key) == st.st_size):
                            # published by a complete fill (only renames give final names); its
                            # content is hash-checked by each process on first use, as always
                            log.info("node cache: adopting %s (%s)", path, "records rebuilt" if rebuild
                                     else "published just before its writer died")
                            self._touch(txn, dbs, key, st.st_size, math.inf)
                            files += st.st_size
                        else:
                            log.warning("node cache: deleting %s: no cache entry records it", path)
                            self._lstat(namespace, fname, unlink=True)
                finally:
                    os.close(fd)
            txn.put(b"files", _U64.pack(files), db=dbs["meta"])
            txn.put(b"reserved", _U64.pack(reserved), db=dbs["meta"])
        leases.sweep(self._db_fd())

    def drop_own_reservations(self) -> int:
        """Delete the downloads in flight (temp files and reservations) of this process and of
        dead ones (worker processes stopped with it); at exit, when an interrupt left a fill
        behind on a stalled socket. Returns how many."""
        if self._closed or self._pid != os.getpid():
            return 0
        seen: dict[bytes, bool] = {}
        with self._txn() as (txn, dbs):
            gone = [res for res, _, _ in self._reservations(txn, dbs)
                    if res[:_HOLDER.size] == self._me or not self._alive(res[:_HOLDER.size], seen)]
            for res in gone:
                self._unreserve(txn, dbs, res)
        return len(gone)

    def close(self) -> None:
        """Release the pins taken through this object and detach; idempotent."""
        if self._closed:
            return
        for handle in list(self._held):
            handle.release()
        self._closed = True
        if self._pid == os.getpid():
            cache_db.detach(self._env_key)
        if getattr(self, "_db_fd_pid", None) == os.getpid():
            os.close(self._db_fd_cached)
            self._db_fd_pid = None
        os.close(self._root_fd)

    def __enter__(self) -> NodeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NodeCache({self.root!r}, limit={self.limit})"
