"""Reading a packed dataset back: :class:`Dataset`, made by ``fastdata.open_dataset``.

Local, uncompressed shards are memory-mapped where they lie. Shards that are remote or
compressed are first copied into a local directory (``cache_dir``), verified against the
manifest's hashes, decompressed with bounded output, and published atomically; the
node-wide cache with limits and eviction is ``TokenDataset``'s business, not this one's.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from fastdata import metrics
from fastdata.config import CacheConfig, StorageConfig, resolve
from fastdata.daemon_pool import DaemonPool
from fastdata.errors import FastdataFormatError
from fastdata.format.manifest import Manifest, ShardTable, TokenizerInfo
from fastdata.format.reader import ShardView, gather, open_shard
from fastdata.format.spec import DTYPE_CODES, DTYPES
from fastdata.reader.blocks import BlockFill
from fastdata.reader.files import FastdataFiles, Release, ShardFiles, default_cache_dir
from fastdata.reader.manifest import load_manifest
from fastdata.storage import cache_db
from fastdata.storage.remote import Store

log = logging.getLogger(__name__)


#: Shards whose missing blocks one gather fetches at once.
BLOCK_FETCHES = 8


class Dataset:
    """A packed dataset opened for reading: documents and token ranges as numpy arrays.

    Use :func:`open_dataset` to make one. Arrays returned by :meth:`doc` are read-only,
    zero-copy views of the memory-mapped shards.
    """

    #: Shards kept open (memory-mapped) at once by default; the least recently used beyond
    #: the dataset's ``max_open_shards`` are dropped (arrays already handed out stay valid).
    MAX_OPEN_SHARDS = 64

    def __init__(self, store: Store, manifest: Manifest, cache_dir: str | None = None,  # noqa: PLR0913
                 cache_limit: int | None = None, *, files: ShardFiles | None = None,
                 max_open_shards: int = MAX_OPEN_SHARDS) -> None:
        self.store = store
        #: with a node cache each open shard is pinned: ``TokenDataset`` sets this from the
        #: cache fit (``fastdata.loader.cache_fit``) through :meth:`keep_open`
        self.max_open_shards = max_open_shards
        self.manifest = manifest
        docs = manifest.shards.column("docs")
        toks = manifest.shards.column("tokens")
        self._doc_starts = np.concatenate([[0], np.cumsum(docs)])
        self._token_starts = np.concatenate([[0], np.cumsum(toks)])
        self._views: OrderedDict[int, tuple[ShardView, Release]] = OrderedDict()
        self._fills: dict[int, BlockFill] = {}  # open block-mode shards (reader/blocks.py)
        self._opening = 0  # shards being opened by other threads, counted against max_open_shards
        self._lock = threading.Lock()
        self.files: ShardFiles = files or FastdataFiles(store, manifest, cache_dir, cache_limit)

    def __repr__(self) -> str:
        return (f"Dataset({self.store.display!r}, shards={len(self.shards)}, docs={self.num_docs}, "
                f"tokens={self.num_tokens})")

    @property
    def shards(self) -> ShardTable:
        return self.manifest.shards

    @property
    def num_docs(self) -> int:
        return int(self._doc_starts[-1])

    @property
    def num_tokens(self) -> int:
        return int(self._token_starts[-1])

    @property
    def tokenizer(self) -> TokenizerInfo:
        return self.manifest.tokenizer

    @property
    def dtype(self) -> np.dtype:
        return DTYPES[DTYPE_CODES[self.manifest.dtype]]

    def __len__(self) -> int:
        return self.num_docs

    def keep_open(self, shards: int) -> None:
        """Keep at most ``shards`` shards mapped (and, with a node cache, pinned) at once."""
        if shards < 1:
            raise ValueError(f"keep_open needs at least 1 shard, got {shards}")
        with self._lock:
            self.max_open_shards = shards
            dropped = self._evict(shards)
        _drop(dropped)

    def shard(self, index: int) -> ShardView:
        """The opened (validated, memory-mapped) shard ``index``; safe to call from threads."""
        if not _UNPINS.empty():
            _drain_unpins()
        with self._lock:
            entry = self._views.get(index)
            if entry is not None:
                self._views.move_to_end(index)
                return entry[0]
            # Room first, then map (and pin): never more than max_open_shards mappings and
            # pins, not even for a moment (ACCEPTANCE F3; the node cache's minimum counts on it).
            dropped = self._evict(self.max_open_shards - 1 - self._opening)
            self._opening += 1
        _drop(dropped)
        started = time.perf_counter()
        try:
            with metrics.stage("fetch"):  # the download, or the wait for another's (docs/metrics.md)
                view, release, fill = self._open(index)
        except BaseException:
            with self._lock:
                self._opening -= 1
            raise
        with self._lock:
            self._opening -= 1
            if index in self._views:  # another thread opened it meanwhile
                dropped.append((view, release))
                view = self._views[index][0]
            else:
                self._views[index] = (view, release)
                if fill is not None:
                    self._fills[index] = fill
            self._views.move_to_end(index)
            dropped += self._evict(self.max_open_shards)
        _drop(dropped)
        metrics.observe("reader.open", time.perf_counter() - started)
        return view

    def _evict(self, keep: int) -> list[tuple[ShardView, Release]]:
        """Take the least recently used entries beyond ``keep`` out (call with the lock held)."""
        out = []
        while self._views and len(self._views) > max(keep, 0):
            index, entry = self._views.popitem(last=False)
            self._fills.pop(index, None)
            out.append(entry)
        return out

    def _open(self, index: int) -> tuple[ShardView, Release, BlockFill | None]:
        info = self.shards[index]
        path, unpin = self.files.acquire(index)
        fill = None
        try:
            fill = self.files.block_fill(index, path)
            view = open_shard(path)
            if view.num_docs != info.docs or view.num_tokens != info.tokens:
                raise FastdataFormatError(
                    f"{path}: holds {view.num_docs} docs / {view.num_tokens} tokens, the manifest "
                    f"says {info.docs} / {info.tokens}"
                )
        except BaseException:
            if fill is not None:
                fill.close()
            unpin()
            raise
        if fill is None:
            return view, unpin, None

        def release(fill: BlockFill = fill) -> None:
            fill.close()
            unpin()

        return view, release, fill

    def ready(self, index: int, starts: np.ndarray, lengths: np.ndarray) -> None:
        """Make tokens ``[start, start + length)`` of shard ``index`` readable: for a shard
        fetched block by block, fetch and verify the blocks they lie in (``reader/blocks.py``);
        for any other shard nothing to do. Call after :meth:`shard`, before reading."""
        if not self._fills:
            return
        with self._lock:
            fill = self._fills.get(index)
        if fill is None or fill.complete:
            return
        fill.ensure(fill.blocks_of(np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)))

    def ready_rows(self, shards: np.ndarray, spans: np.ndarray) -> None:
        """:meth:`ready` for gather rows ``spans`` of (index into ``shards``, start, length);
        the shards' blocks are fetched in parallel (each one's runs in order)."""
        if not self._fills:
            return
        jobs = []
        for i, shard in enumerate(shards.tolist()):
            with self._lock:
                fill = self._fills.get(int(shard))
            if fill is not None and not fill.complete:
                rows = spans[spans[:, 0] == i]
                blocks = fill.blocks_of(rows[:, 1], rows[:, 2])
                if fill.ensure_present(blocks):  # some are missing (or not yet verified here)
                    jobs.append((fill, blocks))
        if len(jobs) == 1:
            jobs[0][0].ensure(jobs[0][1])
        elif jobs:
            with DaemonPool(min(len(jobs), BLOCK_FETCHES), "fastdata-blocks") as pool:
                for future in [pool.submit(fill.ensure, blocks) for fill, blocks in jobs]:
                    future.result()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without open mappings or locks (DataLoader workers reopen lazily)."""
        state = self.__dict__.copy()
        state["_views"] = OrderedDict()  # each process pins and maps for itself
        state["_fills"] = {}
        state["_opening"] = 0
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _locate(self, i: int) -> tuple[int, int]:
        if not -self.num_docs <= i < self.num_docs:
            raise IndexError(f"document {i} out of range for a dataset of {self.num_docs}")
        i %= max(self.num_docs, 1)
        s = int(np.searchsorted(self._doc_starts, i, side="right")) - 1
        return s, i - int(self._doc_starts[s])

    def doc(self, i: int) -> np.ndarray:
        """Tokens of document ``i`` (zero-copy, read-only)."""
        s, j = self._locate(i)
        view = self.shard(s)
        start, length = view.doc_bounds(j)
        self.ready(s, np.array([start]), np.array([length]))
        return view.doc(j)

    __getitem__ = doc

    def loss_mask(self, i: int) -> np.ndarray:
        """Loss mask of document ``i`` (1 = trained); only for datasets packed from chat data."""
        s, j = self._locate(i)
        view = self.shard(s)
        start, length = view.doc_bounds(j)
        self.ready(s, np.array([start]), np.array([length]))
        return view.doc_loss_mask(j)

    def doc_lengths(self) -> np.ndarray:
        """Length in tokens of every document, in order."""
        parts = [np.diff(self.shard(s).doc_offsets()) for s in range(len(self.shards))]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Global tokens ``[start, stop)`` across shard boundaries, as a new array."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"token range [{start}, {stop}) outside [0, {self.num_tokens})")
        first = int(np.searchsorted(self._token_starts, start, side="right")) - 1
        spans: list[tuple[int, int, int]] = []
        views: list[ShardView] = []
        pos = start
        s = first
        while pos < stop:
            end = min(stop, int(self._token_starts[s + 1]))
            if end > pos:
                spans.append((len(views), pos - int(self._token_starts[s]), end - pos))
                views.append(self.shard(s))
                self.ready(s, np.array([spans[-1][1]]), np.array([end - pos]))
            pos, s = end, s + 1
        out = np.empty(stop - start, dtype=self.dtype)
        if spans:
            gather(views, np.array(spans, dtype=np.int64), out)
        return out

    def close(self) -> None:
        with self._lock:
            entries = list(self._views.values())
            self._views.clear()
        for _, release in entries:
            release()

    def __del__(self) -> None:
        # Unpin node-cache entries when a dataset is dropped without close(). On a thread of its
        # own: the cyclic GC may run this finaliser in a thread that is inside a node-cache
        # transaction, whose (non-reentrant) lock an unpin takes. At interpreter exit no thread
        # starts; the process's lease then ends and its pins with it.
        views = getattr(self, "_views", None)
        if views:
            try:
                releases = [release for _, release in list(views.values())]
                if cache_db.gate.acquire(blocking=False):  # no transaction is running: unpin now
                    cache_db.gate.release()
                    _release_quietly(releases)
                else:  # maybe this very thread's: SimpleQueue.put is safe here, the next open drains
                    _UNPINS.put(releases)
            except Exception:  # noqa: BLE001 - never raise from a finaliser
                pass

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_packed(url: str, *, storage_options: Mapping[str, Any] | None = None,  # noqa: PLR0913
                cache_dir: str | None = None, cache_limit: int | str | None = None,
                storage: StorageConfig | None = None, cache: CacheConfig | None = None) -> Dataset:
    """Open the fastdata dataset at a local path or fsspec URL (``fastdata.open_dataset``
    chooses between this and a Megatron pair).

    Args:
        url: dataset directory or URL prefix (the folder holding ``manifest.json``).
        storage_options: passed to fsspec for remote URLs (credentials stay out of messages).
        cache_dir: where remote or compressed shards are copied and decompressed;
            default ``$TMPDIR/fastdata-<uid>``. Local uncompressed shards are read in place.
            A remote manifest is kept there too, revalidated by its ETag on every open.
        cache_limit: bytes (or "400GB") the node cache may hold; with it, ``cache_dir`` is a
            node-wide cache shared by every process on the machine, evicting what is not in use.
        storage: :class:`~fastdata.config.StorageConfig` (options and retries), instead of
            ``storage_options``.
        cache: :class:`~fastdata.config.CacheConfig`, instead of ``cache_dir``/``cache_limit``.

    Raises:
        FastdataFormatError: the manifest is missing, incomplete or invalid.
        FastdataConfigError: a setting is invalid or given both ways.
    """
    storage, cache = resolve(storage, cache, storage_options=storage_options, cache_dir=cache_dir,
                             cache_limit=cache_limit)
    store = Store(url, storage.options)
    manifest = load_manifest(store, cache.dir or default_cache_dir())
    files = FastdataFiles(store, manifest, cache.dir, cache.limit, storage.retry, blocks=cache.blocks,
                          wait_timeout=cache.wait_timeout)
    return Dataset(store, manifest, cache.dir, cache.limit, files=files)


#: Releases a finaliser could not run at once (the node cache's lock was taken, perhaps by the
#: very thread the GC ran it in): run by the next shard open or close, in an ordinary context.
_UNPINS: queue.SimpleQueue[list[Release]] = queue.SimpleQueue()


def _release_quietly(releases: list[Release]) -> None:
    for release in releases:
        try:
            release()
        except Exception:  # noqa: BLE001 - a finaliser's work: nothing to report to
            pass


def _drain_unpins() -> None:
    while True:
        try:
            releases = _UNPINS.get_nowait()
        except queue.Empty:
            return
        _release_quietly(releases)


def _drop(entries: list[tuple[ShardView, Release]]) -> None:
    """Unpin evicted shards and let go of their views (the mapping lives on in any array
    still using it)."""
    while entries:
        entries.pop()[1]()
