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
import logging
import math
import os
import shutil
import time
import weakref
from collections.abc import Callable

from fastdata import metrics
from fastdata._testing import pause_point
from fastdata.atomic import is_enospc, temp_name
from fastdata.errors import FastdataCacheError, FastdataConfigError, FastdataIntegrityError
from fastdata.storage import cache_db, eviction, leases
from fastdata.storage.cache_db import DB_DIR
from fastdata.storage.cache_records import CachedShard, CacheRecords
from fastdata.units import parse_size

log = logging.getLogger(__name__)

_HOLDER = leases.HOLDER  # a holder's token: pid and a random nonce
_ENTRY, _U64 = cache_db.ENTRY, cache_db.U64
PAGE = 4096  #: the file-system block size that sparse files are accounted in (NodeCache.grow)
_key = cache_db.entry_key


_open_caches: weakref.WeakSet[NodeCache] = weakref.WeakSet()


@atexit.register
def _drop_fills_left_behind() -> None:
    """At exit (after Ctrl-C left a download on a stalled socket), remove its temp file now
    rather than at the next open; the daemon threads doing it die with the process."""
    for cache in list(_open_caches):
        with contextlib.suppress(Exception):
            cache.drop_own_reservations()


class NodeCache(CacheRecords):
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
        self._root_fd = self._open_root()
        try:
            self._attach()
            self.reconcile()
        except BaseException:
            self.close()
            raise
        _open_caches.add(self)

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

    def acquire(self, namespace: str, name: str, size: int, fill: Callable[[str], None], *,  # noqa: PLR0913
                next_use: float = math.inf, accounted: int | None = None) -> CachedShard:
        """A pinned handle to ``<root>/<namespace>/<name>``, a file of exactly ``size`` bytes.

        A cached file of the right type and size is pinned as it is. Otherwise room is made
        (evicting unpinned, unreserved entries, largest ``next_use`` first, then the least
        recently used) and ``fill(temp_path)`` writes the file, verifying its hash and raising
        on a mismatch. While another live process fills the same shard, this waits for it.

        ``accounted`` (default ``size``) is for a sparse file that ``fill`` writes only in part
        (a shard fetched block by block): the bytes it holds on disk; whoever writes more
        into it later accounts them first with :meth:`grow`.

        Raises:
            FastdataConfigError: a bad name or size, or one over the limit (naming the minimum).
            FastdataIntegrityError: ``fill`` wrote another number of bytes.
            FastdataCacheError: no room within ``wait_timeout``, or the disk is full.
        """
        key = _key(namespace, name)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise FastdataConfigError(f"shard size must be a non-negative int, got {size!r}")
        held = size if accounted is None else accounted
        if isinstance(held, bool) or not isinstance(held, int) or not 0 <= held <= size:
            raise FastdataConfigError(f"accounted bytes must be an int in [0, {size}], got {accounted!r}")
        if size > self.limit and held == size:
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
            while isinstance(got := self._reserve(key, size, held, next_use, takeover), str):
                if time.monotonic() >= deadline:
                    if got != "filling":
                        raise FastdataCacheError(got)
                    log.warning("node cache: %s/%s is still being filled by another process after %g s; "
                                "fetching it here too", namespace, name, self.wait_timeout)
                    deadline, takeover = time.monotonic() + self.wait_timeout, True
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            if isinstance(got, CachedShard):
                return got
            return self._fill(fd, key, (size, held), next_use, fill, got)
        finally:
            os.close(fd)

    def grow(self, namespace: str, name: str, nbytes: int) -> None:
        """Account ``nbytes`` more of the pinned sparse file ``<namespace>/<name>`` (bytes about
        to be written into its holes; capped at its size), making room as :meth:`acquire`
        does. A file dropped meanwhile (found damaged) is not accounted: nothing to do.

        Raises:
            FastdataCacheError: no room within ``wait_timeout``.
        """
        key = _key(namespace, name)
        deadline, delay = time.monotonic() + self.wait_timeout, 0.002
        while isinstance(why := self._grow(key, nbytes), str):
            if time.monotonic() >= deadline:
                raise FastdataCacheError(why)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _grow(self, key: bytes, nbytes: int) -> str | None:
        """One try of :meth:`grow`: None when accounted, else why to wait."""
        seen: dict[bytes, bool] = {}
        with self._txn() as (txn, dbs):
            raw = txn.get(key, db=dbs["entries"])
            if raw is None:
                return None
            held, next_use, tick = _ENTRY.unpack(raw)
            sparse = txn.get(key, db=dbs["sparse"])
            if sparse is None:
                return None  # not sparse: accounted at its full size already
            more = min(nbytes, -(-_U64.unpack(sparse)[0] // PAGE) * PAGE - held)
            if more <= 0:
                return None
            busy = {rkey for res, _, rkey in self._reservations(txn, dbs)
                    if self._alive(res[:_HOLDER.size], seen)}
            why = self._make_room(txn, dbs, key, more, busy | {key}, seen)
            if why is None:
                txn.put(key, _ENTRY.pack(held + more, next_use, tick), db=dbs["entries"])
                self._count(txn, dbs, b"files", more)
            return why

    def _make_room(self, txn, dbs, key: bytes, size: int, busy: set[bytes],  # noqa: PLR0913
                   seen: dict[bytes, bool]) -> str | None:
        """Evict entries until ``size`` more bytes fit under the limit; None when they do, else
        why not (the caller waits for pins to go). ``busy`` entries are never evicted."""
        files, reserved = self._count(txn, dbs, b"files"), self._count(txn, dbs, b"reserved")
        need = files + reserved + size - self.limit
        if need <= 0:
            return None
        candidates, pinned = [], 0
        for k, v in txn.cursor(db=dbs["entries"]):
            esize, enext, etick = _ENTRY.unpack(v)
            if k in busy or self._pinned(txn, dbs, k, seen):
                pinned += esize
            else:
                candidates.append(eviction.Candidate(bytes(k), esize, enext, etick))
        chosen = eviction.victims(candidates, need)
        if chosen is None:
            shard = key.decode().replace("\0", "/")
            return (f"node cache {self.root} cannot make room for {shard} ({size} bytes)"
                    f" within {self.wait_timeout:g} s: limit {self.limit} bytes, usage "
                    f"{files + reserved} bytes, of which {pinned} pinned by running processes and "
                    f"{reserved} reserved for downloads in flight; raise the limit (see "
                    "NodeCache.minimum_limit) or release shards sooner")
        for i, victim in enumerate(chosen):
            self._lstat(*victim.key.decode().split("\0"), unlink=True)  # before the commit
            if i == 0:
                pause_point("mid_evict")
            self._forget(txn, dbs, victim.key, victim.size)
            metrics.count("cache.evictions")
            metrics.count("cache.evicted_bytes", victim.size)
            if victim.next_use != float("inf"):  # a later step was known to need it
                metrics.count("cache.evictions.live")
        return None

    def _reserve(self, key: bytes, size: int, held: int, next_use: float, takeover: bool):
        """One try: a handle (a hit), (reservation key, temp name), or why to wait."""
        seen: dict[bytes, bool] = {}
        with self._txn() as (txn, dbs):
            if self._valid(txn, dbs, key, size):
                self._touch(txn, dbs, key, self._accounted(txn, dbs, key), next_use)
                return self._pin(txn, dbs, key, size)
            busy = set()
            for res, _, rkey in self._reservations(txn, dbs):
                if self._alive(res[:_HOLDER.size], seen):
                    busy.add(rkey)
                else:
                    self._unreserve(txn, dbs, res)
            if key in busy and not takeover:
                return "filling"
            why = self._make_room(txn, dbs, key, held, busy, seen)
            if why is not None:
                return why
            res, tmp = self._me + os.urandom(8), temp_name(key.decode().split("\0")[1])
            txn.put(res, _U64.pack(held) + key + b"\0" + tmp.encode(), db=dbs["reserve"])
            self._count(txn, dbs, b"reserved", held)
        return res, tmp

    def _fill(self, fd: int, key: bytes, sizes: tuple[int, int], next_use: float,  # noqa: PLR0913
              fill: Callable[[str], None], reservation: tuple[bytes, str]) -> CachedShard:
        (size, held), (res, tmp), renamed = sizes, reservation, False
        namespace, name = key.decode().split("\0")
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
                    held = self._accounted(txn, dbs, key)
                else:
                    os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                    renamed = True
                    pause_point("after_publish_before_account")
                    self._count(txn, dbs, b"files", held)
                    if held != size:
                        txn.put(key, _U64.pack(size), db=dbs["sparse"])
                self._unreserve(txn, dbs, res)
                self._touch(txn, dbs, key, held, next_use)
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
