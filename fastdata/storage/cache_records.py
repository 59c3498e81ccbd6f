"""The node cache's records and the directory they describe (see ``fastdata.storage.cache``).

:class:`CacheRecords` holds what every decision of the cache builds on: the private root and
its bookkeeping environment, the per-transaction helpers over the tables (entries, pins,
reservations, counters), holder liveness, safe (never-following) directory access, and
:meth:`CacheRecords.reconcile`, which makes the records match the disk after any crash.
Admission, eviction and publishing are :class:`~fastdata.storage.cache.NodeCache`'s.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import stat
from collections.abc import Iterator

import lmdb

from fastdata.atomic import TMP_PREFIX
from fastdata.errors import FastdataCacheError
from fastdata.storage import cache_db, leases
from fastdata.storage.cache_db import TXN_LOCK

log = logging.getLogger("fastdata.storage.cache")

HOLDER = leases.HOLDER  # a holder's token: pid and a random nonce
ENTRY, U64 = cache_db.ENTRY, cache_db.U64


class CachedShard:
    """A pinned cache file, not evicted until :meth:`release` (or the end of a ``with`` block)."""

    __slots__ = ("path", "size", "_cache", "_key", "_pid", "_released")

    def __init__(self, cache: CacheRecords, key: bytes, size: int) -> None:
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


class CacheRecords:
    """The records of a node cache at ``root``; subclassed by NodeCache (which sets
    ``root``, ``limit``, ``_db_dir`` and the process fields before calling ``_open_root``)."""

    root: str
    limit: int
    _db_dir: str
    _pid: int
    _closed: bool
    _root_fd: int
    _me: bytes
    _held: set[CachedShard]  # this process's pins, released on close
    _known: set[str]  # namespaces this process has recorded
    _db_fd_cached: int  # set by _db_fd, with:
    _db_fd_pid: int | None  # the pid that opened it (None once closed)

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
        cache_db.attach(self.root, self._root_fd, self._db_dir, key)
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
    def _txn(self, write: bool = True) -> Iterator[tuple[lmdb.Transaction[bytes], dict]]:
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
        value = U64.unpack(raw)[0] if raw else 0
        if delta:
            value = max(0, value + delta)  # never negative, even if coordination failed
            txn.put(name, U64.pack(value), db=dbs["meta"])
        return value

    def _alive(self, holder: bytes, seen: dict[bytes, bool]) -> bool:
        if holder == self._me:
            return True
        if holder not in seen:
            seen[holder] = leases.alive(self._db_fd(), holder)
        return seen[holder]

    def _touch(self, txn, dbs, key: bytes, size: int, next_use: float) -> None:
        txn.put(key, ENTRY.pack(size, next_use, self._count(txn, dbs, b"tick", 1)), db=dbs["entries"])

    def _pin(self, txn, dbs, key: bytes, size: int) -> CachedShard:
        pin = key + b"\0" + self._me
        raw = txn.get(pin, db=dbs["pins"])
        txn.put(pin, U64.pack((U64.unpack(raw)[0] if raw else 0) + 1), db=dbs["pins"])
        handle = CachedShard(self, key, size)
        self._held.add(handle)
        return handle

    def _unpin(self, handle: CachedShard) -> None:
        self._held.discard(handle)
        if self._closed:
            return
        with self._txn() as (txn, dbs):
            pin = handle._key + b"\0" + self._me
            left = U64.unpack(txn.get(pin, db=dbs["pins"], default=U64.pack(1)))[0] - 1
            if left > 0:
                txn.put(pin, U64.pack(left), db=dbs["pins"])
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
            self._forget(txn, dbs, key, ENTRY.unpack(raw)[0])

    def _forget(self, txn, dbs, key: bytes, accounted: int) -> None:
        """Delete ``key``'s records (its file is gone) and stop accounting its bytes."""
        txn.delete(key, db=dbs["entries"])
        txn.delete(key, db=dbs["sparse"])
        self._count(txn, dbs, b"files", -accounted)

    @staticmethod
    def _accounted(txn, dbs, key: bytes) -> int:
        """The bytes accounted for ``key`` (0 without an entry)."""
        raw = txn.get(key, db=dbs["entries"])
        return ENTRY.unpack(raw)[0] if raw is not None else 0

    @staticmethod
    def _file_size(txn, dbs, key: bytes, accounted: int) -> int:
        """The size of ``key``'s file: its accounted bytes, unless it is sparse (a shard fetched
        block by block is accounted at the bytes written into it, ``NodeCache.grow``)."""
        raw = txn.get(key, db=dbs["sparse"])
        return U64.unpack(raw)[0] if raw else accounted

    def _valid(self, txn, dbs, key: bytes, size: int | None) -> bool:
        """Whether ``key`` has an entry whose file is intact; a damaged one is dropped."""
        raw = txn.get(key, db=dbs["entries"])
        if raw is None:
            return False
        esize = self._file_size(txn, dbs, key, ENTRY.unpack(raw)[0])
        st = self._lstat(*key.decode().split("\0"))
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
        return [(k, U64.unpack(v[:8])[0], v[8:].rsplit(b"\0", 1)[0])
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
            self._count(txn, dbs, b"reserved", -U64.unpack(raw[:8])[0])

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
                if not self._alive(k[-HOLDER.size:], seen):
                    txn.delete(k, db=dbs["pins"])
            live, adoptable, reserved, live_temps = set(), {}, 0, set()
            for res, rsize, rkey in self._reservations(txn, dbs):
                if self._alive(res[:HOLDER.size], seen):
                    live.add(rkey)
                    live_temps.add(self._temp_of(txn, dbs, res))
                    reserved += rsize
                else:
                    self._unreserve(txn, dbs, res)
                    adoptable[rkey] = rsize
            files = sum(ENTRY.unpack(v)[0] for k, v in list(txn.cursor(db=dbs["entries"]))
                        if self._valid(txn, dbs, k, None))
            rebuild = txn.get(cache_db.REBUILD, db=dbs["meta"]) is not None
            if rebuild:
                # the records were lost: every namespace directory of the root is ours
                txn.delete(cache_db.REBUILD, db=dbs["meta"])
                for namespace in os.listdir(self._root_fd):
                    ns_st = os.stat(namespace, dir_fd=self._root_fd, follow_symlinks=False)
                    if not namespace.startswith(".") and stat.S_ISDIR(ns_st.st_mode):
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
                            held = min(st.st_size, st.st_blocks * 512)  # a sparse file: its blocks
                            if held < st.st_size:
                                txn.put(key, U64.pack(st.st_size), db=dbs["sparse"])
                            self._touch(txn, dbs, key, held, math.inf)
                            files += held
                        else:
                            log.warning("node cache: deleting %s: no cache entry records it", path)
                            self._lstat(namespace, fname, unlink=True)
                finally:
                    os.close(fd)
            for k in list(txn.cursor(db=dbs["sparse"]).iternext(values=False)):
                if txn.get(k, db=dbs["entries"]) is None:
                    txn.delete(k, db=dbs["sparse"])
            txn.put(b"files", U64.pack(files), db=dbs["meta"])
            txn.put(b"reserved", U64.pack(reserved), db=dbs["meta"])
        leases.sweep(self._db_fd())
