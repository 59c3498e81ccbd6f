"""Block-granular shard files: the remote path for format v1.1 raw shards.

A cached v1.1 shard starts as a *sparse* file of its full size holding only its metadata
section (header, document index, block table; one ranged GET, checked against the
manifest's ``meta_xxh3_128``), so it can be opened and mapped at once. The payload blocks
are fetched when a batch (or the prefetcher) needs them:

* the blocks that a gather's token ranges touch are found from the header (``tokens_offset``,
  ``mask_offset``) and the block size;
* a block counts as present in this process once its bytes on disk hash to its table entry
  (a hole reads as zeros and fails, unless the block *is* zeros); nothing else records
  presence, so a block torn by a killed process, or flipped on disk, is simply fetched again;
* missing blocks are fetched in runs of adjacent blocks (one ranged GET each, at most
  ``RetryPolicy.range_bytes``), each block verified before it is written, under an
  open-file-description lock on the run's byte range: one fetch per block per node, shared
  by every process and thread, and released by the kernel if a holder dies.

A node cache accounts such a file at the pages written into it: its metadata when it is
created, then each run's pages just before they are written (``NodeCache.grow``, which
evicts other unpinned files to make room), so a partly fetched shard takes only its share
of the limit. Eviction stays per file: a shard's present blocks go together. A remote block
whose bytes never match its hash ends in
``FastdataIntegrityError`` naming the shard, the block and its byte range.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import xxhash

from fastdata import metrics
from fastdata._testing import disk_point
from fastdata.errors import FastdataCacheError, FastdataIntegrityError
from fastdata.format.blocks import BlockTable, check_meta, verify_block
from fastdata.format.shard_table import ShardInfo
from fastdata.format.spec import DTYPES, unpack_header
from fastdata.storage.cache import PAGE
from fastdata.storage.download import RetryPolicy, retrying
from fastdata.storage.remote import Store

log = logging.getLogger(__name__)

_FLOCK = struct.Struct("@hhqqi4x")  # struct flock: l_type, l_whence, l_start, l_len, l_pid
_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", 38)


def block_mode(store: Store, info: ShardInfo) -> bool:
    """Whether shard ``info`` is fetched block by block: remote, raw and format v1.1."""
    return not store.local and not info.compressed and info.meta_bytes > 0


def fetch_meta(store: Store, info: ShardInfo, dest: str, policy: RetryPolicy,
               known: bytes | None = None) -> bytes:
    """Make ``dest`` the sparse cache file of shard ``info``: its checked metadata section,
    holes for the payload (the cache's fill for a block-mode shard). ``known`` is a copy this
    process fetched before (an evicted shard coming back costs no request); returns it."""
    meta = known
    if meta is None:
        where = store.describe(info.name)
        meta = retrying(f"{where} bytes 0-{info.meta_bytes - 1}",
                        lambda: store.read_range(info.name, 0, info.meta_bytes), policy)
        metrics.count("fetch.requests")
        metrics.count("fetch.bytes", len(meta))
    check_meta(meta, info)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _write(fd, meta, 0, dest)
        os.ftruncate(fd, info.raw_bytes)
    finally:
        os.close(fd)
    return meta


def check_sparse(path: str, info: ShardInfo) -> None:
    """A cached block-mode file found on disk: its size and metadata section are right (its
    blocks are checked one by one as they are read).

    Raises:
        FastdataIntegrityError: it is damaged (drop it and fetch the metadata again).
        FileNotFoundError: it vanished meanwhile.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size != info.raw_bytes:
            raise FastdataIntegrityError(f"{path}: size is {size} bytes, the manifest says "
                                         f"{info.raw_bytes}")
        check_meta(f.read(info.meta_bytes), info)


class BlockFill:
    """The payload blocks of one opened block-mode shard file, fetched on demand.

    Args:
        store: the dataset's store.
        info: the shard's manifest entry.
        path: its sparse file in the cache (pinned by the caller while this is used).
        policy: retries and the largest ranged GET.
        grow: accounts bytes about to be written into the file (a node cache's ``grow`` for
            it), or None (a plain cache directory).
    """

    def __init__(self, store: Store, info: ShardInfo, path: str, policy: RetryPolicy,  # noqa: PLR0913
                 grow: Callable[[int], None] | None = None) -> None:
        self.store, self.info, self.path, self.policy = store, info, path, policy
        self._grow = grow
        self._fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            meta = os.pread(self._fd, info.meta_bytes, 0)
            self.table: BlockTable = check_meta(meta, info)  # a damaged copy raises: fetched again
        except BaseException:
            os.close(self._fd)
            raise
        header = unpack_header(meta, path)
        self.tokens_offset, self.mask_offset = header.tokens_offset, header.mask_offset
        self.itemsize = DTYPES[header.dtype_code].itemsize
        self._present = np.zeros(len(self.table), dtype=bool)
        self.complete = len(self.table) == 0  #: every block verified here: gathers skip the bookkeeping
        self._lock = threading.Lock()

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()

    # ------------------------------------------------------------------ which blocks

    def blocks_of(self, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Blocks that tokens ``[start, start + length)`` of this shard lie in (and their loss
        mask bytes, when the shard has one), sorted, unique."""
        keep = lengths > 0
        starts, ends = starts[keep].astype(np.int64), (starts + lengths)[keep].astype(np.int64)
        ranges = [(self.tokens_offset + starts * self.itemsize, self.tokens_offset + ends * self.itemsize)]
        if self.mask_offset:
            ranges.append((self.mask_offset + starts, self.mask_offset + ends))
        bs, base = self.table.block_size, self.tokens_offset
        out = []
        for lo, hi in ranges:
            first, last = (lo - base) // bs, (hi - 1 - base) // bs
            for f, e in zip(first.tolist(), last.tolist()):
                out.append(np.arange(f, e + 1, dtype=np.int64))
        return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)

    # ------------------------------------------------------------------ making them present

    def ensure(self, blocks: np.ndarray) -> None:
        """Make ``blocks`` present and verified in the file (fetching the missing ones)."""
        with self._lock:
            wanted = blocks[~self._present[blocks]]
        if not len(wanted):
            metrics.count("cache.block_hits", len(blocks))
            return
        metrics.count("cache.block_hits", len(blocks) - len(wanted))
        for run in self._runs(wanted):
            self._ensure_run(run)

    def ensure_present(self, blocks: np.ndarray) -> bool:
        """Whether :meth:`ensure` has work for ``blocks`` (False: all verified here already,
        counted as block hits)."""
        with self._lock:
            known = bool(self._present[blocks].all())
        if known:
            metrics.count("cache.block_hits", len(blocks))
        return not known

    def ensure_all(self) -> None:
        """Every block (a prefetch of the whole shard)."""
        self.ensure(np.arange(len(self.table), dtype=np.int64))

    def _runs(self, blocks: np.ndarray) -> Iterator[np.ndarray]:
        """Consecutive blocks, cut so that no run spans more than ``range_bytes``."""
        per_run = max(1, self.policy.range_bytes // self.table.block_size)
        cuts = np.flatnonzero(np.diff(blocks) != 1) + 1
        for run in np.split(blocks, cuts):
            for i in range(0, len(run), per_run):
                yield run[i : i + per_run]

    def _ensure_run(self, run: np.ndarray) -> None:
        lo, hi = self._span(run)
        with self._locked(lo, hi):  # another process (or thread) filling these waits, then finds them
            missing = [int(b) for b in run if not self._on_disk(int(b))]
            metrics.count("cache.block_hits", len(run) - len(missing))
            subs = list(self._runs(np.asarray(missing, dtype=np.int64))) if missing else []
            if self._grow is not None and subs:
                self._grow(sum(page_span(*self._span(sub)) for sub in subs))
            for sub in subs:
                self._fetch(sub)
        with self._lock:
            self._present[run] = True
            self.complete = bool(self._present.all())

    def _span(self, run: np.ndarray) -> tuple[int, int]:
        first, last = int(run[0]), int(run[-1])
        offsets, lengths = self.table.raw_offsets, self.table.raw_lengths
        return int(offsets[first]), int(offsets[last] + lengths[last])

    def _on_disk(self, block: int) -> bool:
        start, length = int(self.table.raw_offsets[block]), int(self.table.raw_lengths[block])
        with metrics.stage("verify"):
            data = os.pread(self._fd, length, start)
            return len(data) == length and xxhash.xxh3_128_digest(data) == bytes(self.table.hashes[block])

    def _fetch(self, run: np.ndarray) -> None:
        """One ranged GET for ``run``, each block verified before it is written; a block that
        does not match is fetched again alone (up to the policy's attempts), then named."""
        bad = self._get(run)
        for attempt in range(2, self.policy.attempts + 1):
            if not bad:
                return
            log.warning("%s (attempt %d of %d); fetching it again", bad[0][1], attempt - 1,
                        self.policy.attempts)
            bad = [miss for block, _ in bad for miss in self._get(np.asarray([block], dtype=np.int64))]
        if bad:
            metrics.count("fetch.failures")
            raise FastdataIntegrityError(f"{bad[0][1]}; after {self.policy.attempts} attempts the stored "
                                         "object stays damaged: re-upload or re-pack it")

    def _get(self, run: np.ndarray) -> list[tuple[int, FastdataIntegrityError]]:
        """Fetch ``run`` (adjacent blocks) with one ranged GET; write the blocks that verify,
        return the others with their errors."""
        lo, hi = self._span(run)
        where = self.store.describe(self.info.name)
        with metrics.stage("fetch"):
            data = retrying(f"{where} bytes {lo}-{hi - 1}",
                            lambda: self.store.read_range(self.info.name, lo, hi), self.policy)
        metrics.count("fetch.requests")
        metrics.count("fetch.bytes", len(data))
        if len(data) != hi - lo:
            short = FastdataIntegrityError(f"{where}: bytes {lo}-{hi - 1} came back as {len(data)} "
                                           f"bytes, expected {hi - lo} (truncated or replaced object)")
            return [(int(b), short) for b in run]
        bad = []
        for b in run.tolist():
            start = int(self.table.raw_offsets[b]) - lo
            block = memoryview(data)[start : start + int(self.table.raw_lengths[b])]
            try:
                with metrics.stage("verify"):
                    verify_block(self.table, b, block)
            except FastdataIntegrityError as e:
                bad.append((b, e))
                continue
            _write(self._fd, block, lo + start, self.path)
            metrics.count("fetch.blocks")
        return bad

    @contextmanager
    def _locked(self, lo: int, hi: int) -> Iterator[None]:
        """An exclusive open-file-description lock on bytes ``[lo, hi)`` of the file: per open
        file, so it excludes other threads' descriptors too, and is never dropped by another
        descriptor of this process closing."""
        fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.fcntl(fd, _OFD_SETLKW, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, lo, hi - lo, 0))
            yield
        finally:
            os.close(fd)  # drops the lock


def page_span(lo: int, hi: int) -> int:
    """Bytes of the file-system pages that bytes ``[lo, hi)`` of a file touch: what writing
    them can add to a sparse file's disk usage (so the accounting never undercounts)."""
    return 0 if hi <= lo else (-(-hi // PAGE) - lo // PAGE) * PAGE


def _write(fd: int, data: bytes | memoryview, offset: int, where: str = "") -> None:
    """All of ``data`` at ``offset``; a full disk is a FastdataCacheError naming the file."""
    view = memoryview(data)
    try:
        disk_point("download", len(view))
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise FastdataCacheError(f"no space left writing {len(view)} bytes of "
                                     f"{where or 'a cached shard'} at byte {offset}: free space on "
                                     "the cache's disk or lower cache_limit") from None
        raise
