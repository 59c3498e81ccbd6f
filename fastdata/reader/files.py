"""Where the raw file of each shard comes from before it is memory-mapped.

:class:`ShardFiles` is what the reader asks of any format: a local file for a shard, pinned
until released. :class:`FastdataFiles` is the implementation for fastdata shards (below);
Megatron ``.bin`` ranges have their own (:mod:`fastdata.megatron.files`), on the same
download, caches and counters.

* Local, uncompressed datasets are read in place: never copied, evicted or modified.
* Anything else (a remote URL, zstd shards) is fetched with retries, checked against the
  manifest's size and hashes, decompressed with bounded output, and kept as a raw file:
  either in a plain directory (``cache_dir`` without ``cache_limit``), or in the node-wide
  :class:`~fastdata.storage.cache.NodeCache` under a hard byte limit, shared by every rank,
  worker and job on the node, keyed by the dataset fingerprint.

A file found in a cache was written by someone else: its hash is checked the first time
this process uses it, and a damaged copy is dropped (with a warning) and fetched again;
in the node cache and in the plain directory alike. Cache entries are never symlinks
(see ``fastdata.storage.plain_cache``).
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Protocol

from fastdata import metrics
from fastdata.errors import FastdataCacheError, FastdataConfigError, FastdataIntegrityError
from fastdata.format.compression import decompress_shard
from fastdata.format.hashing import hash_file
from fastdata.format.manifest import Manifest, ShardInfo
from fastdata.reader.blocks import BlockFill, block_mode, check_sparse, fetch_meta, page_span
from fastdata.storage.download import RetryPolicy, download
from fastdata.storage.plain_cache import drop, open_plain_directory, plain_file, private_directory
from fastdata.storage.remote import Store

log = logging.getLogger(__name__)
Release = Callable[[], None]
#: Block mode: metadata sections a process keeps, so that a shard evicted and needed again
#: is re-created without a request (at most this many, each a header + index + block table).
KEPT_METAS = 256
_JUDGE_STRIPES = 64  # locks shared by shard index modulo this, so the set stays O(1)


def _nothing() -> None:
    return None


_caches: dict[tuple[str, int, int], object] = {}
_caches_lock = threading.Lock()


def node_cache(root: str, limit: int, wait_timeout: float | None = None):  # noqa: ANN201 - NodeCache, lazily
    """The process's one NodeCache for ``root``: LMDB allows a single open environment per
    file per process, so every dataset on the same root shares it (and the ``wait_timeout``
    of the first to open it; None: the cache's default)."""
    from fastdata.storage.cache import NodeCache

    key = (os.path.realpath(root), limit, os.getpid())
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            others = [k for k in _caches if k[0] == key[0] and k[2] == key[2]]
            if others:
                raise FastdataConfigError(
                    f"node cache {root} is already open in this process with cache_limit {others[0][1]}; "
                    f"use the same limit (got {limit})")
            cache = _caches[key] = (NodeCache(root, limit) if wait_timeout is None
                                    else NodeCache(root, limit, wait_timeout=wait_timeout))
        return cache


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"fastdata-{os.getuid()}")


def mismatch(where: str, expected: str, actual: str) -> FastdataIntegrityError:
    return FastdataIntegrityError(
        f"{where}: xxh3_128 is {actual}, the manifest says {expected} "
        "(the shard is corrupt or was replaced; re-pack or re-upload it)")


def check_file(path: str, size: int, digest: str, where: str) -> None:
    """Raise FastdataIntegrityError unless ``path`` has ``size`` bytes hashing to ``digest``."""
    try:
        actual_size: int | None = os.stat(path).st_size
    except FileNotFoundError:
        actual_size = None
    if actual_size != size:
        raise FastdataIntegrityError(f"{where}: size is {actual_size} bytes, the manifest says {size}")
    with metrics.stage("verify"):
        actual = hash_file(path)
    if actual != digest:
        raise mismatch(where, digest, actual)


class ShardFiles(Protocol):
    """A local file for each shard of one dataset, and when it may go."""

    #: the shards are the user's own files, read where they lie (never fetched or cached)
    in_place: bool

    def block_fill(self, index: int, path: str) -> BlockFill | None:
        """For a shard whose payload is fetched block by block, what fills its file at ``path``."""
        ...

    def acquire(self, index: int, next_use: float = float("inf"), *, ahead: bool = False
                ) -> tuple[str, Release]:
        """Path of shard ``index``'s file and the callable that unpins it; ``next_use`` is the
        step it is needed at next (eviction order), ``ahead`` marks a prefetch."""
        ...


class FastdataFiles:
    """Gives a local raw file for each fastdata shard of one dataset, and says when it may go."""

    def __init__(self, store: Store, manifest: Manifest, cache_dir: str | None = None,  # noqa: PLR0913
                 cache_limit: int | None = None, policy: RetryPolicy | None = None, *,
                 blocks: bool = False, wait_timeout: float | None = None) -> None:
        self.store, self.manifest = store, manifest
        self.policy = policy or RetryPolicy()
        self.blocks = blocks  #: fetch remote v1.1 raw shards block by block (``reader/blocks.py``)
        self.wait_timeout = wait_timeout  #: for the node cache (None: its default)
        self.in_place = store.local and manifest.compression is None
        self.namespace = manifest.fingerprint
        self.root = cache_dir or default_cache_dir()
        self.limit = cache_limit
        self._setup()

    def _setup(self) -> None:
        self._cache = None
        self._dir = None
        self._checked: set[int] = set()
        self._metas: dict[str, bytes] = {}  # block mode: metadata sections this process fetched
        self._lock = threading.Lock()
        # one thread at a time judges (and drops) a given shard's cached copy, so a damaged
        # copy is hashed, reported and dropped once, not once per thread that pinned it
        self._judging = [threading.Lock() for _ in range(_JUDGE_STRIPES)]
        if self.in_place:
            return
        if self.limit is not None:
            self._cache = node_cache(self.root, self.limit, self.wait_timeout)
            metrics.gauge("cache.used_bytes", self._cache.usage)
            metrics.gauge("cache.limit_bytes", self.limit)
        else:
            private_directory(self.root)
            self._dir = open_plain_directory(os.path.join(self.root, self.namespace))

    def __getstate__(self) -> dict:
        """Pickle the settings only: each process opens the cache and checks files itself."""
        return {k: self.__dict__[k] for k in ("store", "manifest", "policy", "in_place", "namespace",
                                              "root", "limit", "blocks", "wait_timeout")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._setup()

    def acquire(self, index: int, next_use: float = float("inf"), *, ahead: bool = False
                ) -> tuple[str, Release]:
        """Path of shard ``index``'s raw file, and the callable that unpins it.

        ``ahead`` marks a prefetch: it is counted as ``prefetch.*``, not as a cache hit or miss
        (those count what the reader found when it needed the shard).
        """
        info = self.manifest.shards[index]
        if self.in_place:  # the user's own files: their symlinks are followed here, once
            return os.path.realpath(self.store.path(info.name)), _nothing
        raw_name = info.name.removesuffix(".zst")
        if self._cache is None:
            for _ in range(2):
                path, filled = self._plain(info, raw_name)
                if filled:
                    self._mark_checked(index)
                with self._judging[index % _JUDGE_STRIPES]:
                    verdict = filled or self._verified(index, info, path)
                    if verdict is False:
                        drop(path)
                if verdict:
                    count_use(filled, ahead)
                    return path, _nothing
            raise FastdataIntegrityError(f"{self.store.describe(info.name)}: the cached copy stays damaged")
        held = page_span(0, info.meta_bytes) if self._by_block(info) else None  # grows by block
        damaged = 0
        for _ in range(4):
            fetched: list[bool] = []

            def fill(dest: str, info: ShardInfo = info, fetched: list[bool] = fetched) -> None:
                self.fill(info, dest)
                fetched.append(True)

            handle = self._cache.acquire(self.namespace, raw_name, info.raw_bytes, fill,
                                         next_use=next_use, accounted=held)
            if fetched:
                self._mark_checked(index)
            with self._judging[index % _JUDGE_STRIPES]:
                verdict = True if fetched else self._verified(index, info, handle.path)
                if not verdict:
                    handle.release()
                if verdict is False:
                    self._cache.invalidate(self.namespace, raw_name)
            if verdict:
                count_use(bool(fetched), ahead)
                return handle.path, handle.release
            if verdict is None:
                continue  # another process or thread dropped the damaged copy: take the new one
            damaged += 1
            if damaged == 2:
                break
        raise FastdataIntegrityError(f"{self.store.describe(info.name)}: the cached copy stays damaged")

    def _verified(self, index: int, info: ShardInfo, path: str) -> bool | None:
        """Whether the cached file is intact (hashed once per process); None when it vanished
        while being checked (another process found it damaged and dropped it)."""
        with self._lock:
            if index in self._checked:
                return True
        try:
            if self._by_block(info):  # its blocks are verified as they are read
                check_sparse(path, info)
            else:
                check_file(path, info.raw_bytes, info.raw_xxh3_128, path)
        except FileNotFoundError:
            return None
        except FastdataIntegrityError as e:
            log.warning("dropping damaged cached shard %s: %s", path, e)
            return False
        self._mark_checked(index)
        return True

    def _mark_checked(self, index: int) -> None:
        """Shard ``index``'s file was verified (or written) by this process."""
        with self._lock:
            self._checked.add(index)

    def _plain(self, info: ShardInfo, raw_name: str) -> tuple[str, bool]:
        """The shard's file in the plain directory, and whether it was fetched just now."""
        if self._dir is None:
            raise FastdataCacheError(f"{self.root}: no plain cache directory is open for "
                                     f"{self.store.describe(info.name)} (it is read in place or "
                                     "through the node cache)")
        return plain_file(self._dir, raw_name, info.raw_bytes, lambda dest: self.fill(info, dest))

    def fill(self, info: ShardInfo, dest: str) -> None:
        """Write shard ``info``'s verified raw bytes to ``dest`` (timed and counted as ``fetch.*``);
        for a shard fetched block by block, only its metadata (``reader/blocks.py``)."""
        if self._by_block(info):
            with metrics.stage("fetch"):
                self._metas[info.name] = fetch_meta(self.store, info, dest, self.policy,
                                                    self._metas.pop(info.name, None))
            while len(self._metas) > KEPT_METAS:  # bounded: the least recently fetched go
                self._metas.pop(next(iter(self._metas)))
            return
        counted_fill(lambda: self._fill(info, dest), 0 if self.store.local else info.stored_bytes)

    def block_fill(self, index: int, path: str) -> BlockFill | None:
        """The block filler of shard ``index``'s (pinned) file at ``path``, or None when the
        shard is read whole (local, compressed, or format v1)."""
        info = self.manifest.shards[index]
        if not self._by_block(info):
            return None
        grow = None
        if self._cache is not None:  # the node cache accounts each run's bytes before they land
            grow = functools.partial(self._cache.grow, self.namespace, info.name.removesuffix(".zst"))
        return BlockFill(self.store, info, path, self.policy, grow)

    def _by_block(self, info: ShardInfo) -> bool:
        return self.blocks and block_mode(self.store, info)

    def _fill(self, info: ShardInfo, dest: str) -> None:
        where = self.store.describe(info.name)
        if not info.compressed:
            if self.store.local:
                with open(self.store.path(info.name), "rb") as src, open(dest, "wb") as out:
                    while chunk := src.read(8 << 20):
                        out.write(chunk)
                check_file(dest, info.raw_bytes, info.raw_xxh3_128, where)
            else:
                download(self.store, info.name, dest, info.stored_bytes, info.xxh3_128, self.policy,
                         on_retry=count_retry)
            return
        with tempfile.TemporaryDirectory(prefix="fastdata-zst-") as scratch:
            packed = os.path.join(scratch, info.name)
            if self.store.local:
                packed = self.store.path(info.name)
                check_file(packed, info.stored_bytes, info.xxh3_128, where)
            else:
                download(self.store, info.name, packed, info.stored_bytes, info.xxh3_128, self.policy,
                         on_retry=count_retry)
            with metrics.stage("decompress"):
                written = decompress_shard(packed, dest, info.raw_bytes, atomic=False)
            if written.xxh3_128 != info.raw_xxh3_128:
                raise mismatch(f"{where} (decompressed)", info.raw_xxh3_128, written.xxh3_128)


def count_retry(attempt: int, error: BaseException) -> None:
    metrics.count("fetch.retries")


def counted_fill(fill: Callable[[], None], fetched_bytes: int) -> None:
    """Run ``fill()``, counted and timed as one shard fetch (``fetch.*``)."""
    started = time.perf_counter()
    try:
        with metrics.stage("fetch"):
            fill()
    except BaseException:
        metrics.count("fetch.failures")
        raise
    metrics.observe("fetch.latency", time.perf_counter() - started)
    metrics.count("fetch.shards")
    metrics.count("fetch.bytes", fetched_bytes)


def count_use(fetched: bool, ahead: bool) -> None:
    """Count one acquire: a prefetch (``ahead``), or the reader finding the shard or not."""
    if ahead:
        metrics.count("prefetch.fetched" if fetched else "prefetch.present")
    else:
        metrics.count("cache.misses" if fetched else "cache.hits")
