"""Reading a packed dataset back: ``fastdata.open_dataset``.

Local, uncompressed shards are memory-mapped where they lie. Shards that are remote or
compressed are first copied into a local directory (``cache_dir``), verified against the
manifest's hashes, decompressed with bounded output, and published atomically; the
node-wide cache with limits and eviction is ``TokenDataset``'s business, not this one's.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastdata import metrics
from fastdata.errors import FastdataError, FastdataFormatError
from fastdata.format.manifest import Manifest, ShardTable, TokenizerInfo, parse_manifest
from fastdata.format.reader import ShardView, gather, open_shard
from fastdata.format.spec import DTYPE_CODES, DTYPES, MANIFEST_NAME
from fastdata.shard_files import Release, ShardFiles, check_file, default_cache_dir
from fastdata.storage.download import retrying
from fastdata.storage.manifest_copies import ManifestCopies
from fastdata.storage.remote import Store
from fastdata.units import parse_size

log = logging.getLogger(__name__)


def load_manifest(store: Store, cache_root: str | None = None) -> Manifest:
    """Read and validate the manifest of the dataset at ``store``.

    Args:
        store: the dataset root.
        cache_root: a node cache root. For a remote store, the manifest (and its shard table)
            is then kept there and revalidated with one HEAD of the manifest's ETag, so the
            processes of a node download it once, and again only when it changes
            (:mod:`fastdata.storage.manifest_copies`). Local stores are read directly.

    Raises:
        FastdataFormatError: the manifest is missing, incomplete or invalid.
        FastdataDownloadError: it could not be read within the retry budget.
    """
    where = store.describe(MANIFEST_NAME)
    if store.local:
        if store.size(MANIFEST_NAME) is None:
            raise _no_manifest(where)
        return parse_manifest(store.read_bytes(MANIFEST_NAME), where, read_table=store.map_bytes)
    etag = retrying(where, lambda: _etag(store, where))  # one HEAD; also says whether it exists
    copies = ManifestCopies.at(cache_root, store.display) if cache_root and etag else None
    if copies is None:
        return parse_manifest(_fetch(store, MANIFEST_NAME), where, read_table=lambda n: _fetch(store, n))
    cached = copies.load(etag)
    if cached is None:
        with copies.locked():
            cached = copies.load(etag)  # another process of the node may have fetched it meanwhile
            if cached is None:
                return _fetch_and_keep(store, copies, etag)
    try:
        return parse_manifest(cached, where, read_table=lambda n: _kept_table(store, copies, n))
    except FastdataFormatError as e:  # a damaged copy: fetch as if there were none
        log.warning("dropping the node's copy of %s: %s", where, e)
        with copies.locked():
            return _fetch_and_keep(store, copies, etag)


def _no_manifest(where: str) -> FastdataFormatError:
    return FastdataFormatError(
        f"{where} does not exist: not a fastdata dataset, or its pack has not finished")


def _etag(store: Store, where: str) -> str:
    try:
        return store.etag(MANIFEST_NAME) or ""
    except FileNotFoundError:
        raise _no_manifest(where) from None


def _fetch(store: Store, name: str) -> bytes:
    """A small object read whole, retried like shards."""
    return retrying(store.describe(name), lambda: store.read_bytes(name))


def _fetch_and_keep(store: Store, copies: ManifestCopies, etag: str) -> Manifest:
    tables: dict[str, bytes] = {}

    def table(name: str) -> bytes:
        tables[name] = _fetch(store, name)
        return tables[name]

    text = _fetch(store, MANIFEST_NAME)  # after the ETag: a change in between is fetched again later
    manifest = parse_manifest(text, store.describe(MANIFEST_NAME), read_table=table)
    for name, data in tables.items():  # checked by parse_manifest; kept before the manifest copy
        copies.save_table(name, data)
    copies.save(etag, text)
    return manifest


def _kept_table(store: Store, copies: ManifestCopies, name: str) -> bytes:
    """The node's copy of a manifest's shard table, fetched and kept when there is none
    (parse_manifest checks its size and hash either way)."""
    data = copies.load_table(name)
    if data is None:
        data = _fetch(store, name)
        copies.save_table(name, data)
    return data


class Dataset:
    """A packed dataset opened for reading: documents and token ranges as numpy arrays.

    Use :func:`open_dataset` to make one. Arrays returned by :meth:`doc` are read-only,
    zero-copy views of the memory-mapped shards.
    """

    #: Shards kept open (memory-mapped) at once; the least recently used beyond this are
    #: dropped (arrays already handed out stay valid).
    max_open_shards = 64

    def __init__(self, store: Store, manifest: Manifest, cache_dir: str | None = None,
                 cache_limit: int | None = None) -> None:
        self.store = store
        self.manifest = manifest
        docs = manifest.shards.column("docs")
        toks = manifest.shards.column("tokens")
        self._doc_starts = np.concatenate([[0], np.cumsum(docs)])
        self._token_starts = np.concatenate([[0], np.cumsum(toks)])
        self._views: OrderedDict[int, tuple[ShardView, Release]] = OrderedDict()
        self._opening = 0  # shards being opened by other threads, counted against max_open_shards
        self._lock = threading.Lock()
        self.files = ShardFiles(store, manifest, cache_dir, cache_limit)

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

    def shard(self, index: int) -> ShardView:
        """The opened (validated, memory-mapped) shard ``index``; safe to call from threads."""
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
                view, release = self._open(index)
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
            self._views.move_to_end(index)
            dropped += self._evict(self.max_open_shards)
        _drop(dropped)
        metrics.observe("reader.open", time.perf_counter() - started)
        return view

    def _evict(self, keep: int) -> list[tuple[ShardView, Release]]:
        """Take the least recently used entries beyond ``keep`` out (call with the lock held)."""
        out = []
        while self._views and len(self._views) > max(keep, 0):
            out.append(self._views.popitem(last=False)[1])
        return out

    def _open(self, index: int) -> tuple[ShardView, Release]:
        info = self.shards[index]
        path, release = self.files.acquire(index)
        try:
            view = open_shard(path)
            if view.num_docs != info.docs or view.num_tokens != info.tokens:
                raise FastdataFormatError(
                    f"{path}: holds {view.num_docs} docs / {view.num_tokens} tokens, the manifest "
                    f"says {info.docs} / {info.tokens}"
                )
        except BaseException:
            release()
            raise
        return view, release

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without open mappings or locks (DataLoader workers reopen lazily)."""
        state = self.__dict__.copy()
        state["_views"] = OrderedDict()  # each process pins and maps for itself
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
        return self.shard(s).doc(j)

    __getitem__ = doc

    def loss_mask(self, i: int) -> np.ndarray:
        """Loss mask of document ``i`` (1 = trained); only for datasets packed from chat data."""
        s, j = self._locate(i)
        return self.shard(s).doc_loss_mask(j)

    def doc_lengths(self) -> np.ndarray:
        """Length in tokens of every document, in order."""
        parts = [np.diff(self.shard(s).doc_offsets()) for s in range(len(self.shards))]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Global tokens ``[start, stop)`` across shard boundaries, as a new array."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"token range [{start}, {stop}) outside [0, {self.num_tokens})")
        first = int(np.searchsorted(self._token_starts, start, side="right")) - 1
        spans, views, pos = [], [], start
        s = first
        while pos < stop:
            end = min(stop, int(self._token_starts[s + 1]))
            if end > pos:
                spans.append((len(views), pos - int(self._token_starts[s]), end - pos))
                views.append(self.shard(s))
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
        # unpin node-cache entries when a dataset is dropped without close()
        views = getattr(self, "_views", None)
        if views:
            for _, release in list(views.values()):
                try:
                    release()
                except Exception:  # noqa: BLE001 - never raise from a finaliser
                    pass

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset(url: str, *, storage_options: Mapping[str, Any] | None = None,
                 cache_dir: str | None = None, cache_limit: int | str | None = None) -> Dataset:
    """Open the packed dataset at a local path or fsspec URL.

    Args:
        url: dataset directory or URL prefix (the folder holding ``manifest.json``).
        storage_options: passed to fsspec for remote URLs (credentials stay out of messages).
        cache_dir: where remote or compressed shards are copied and decompressed;
            default ``$TMPDIR/fastdata-<uid>``. Local uncompressed shards are read in place.
            A remote manifest is kept there too, revalidated by its ETag on every open.
        cache_limit: bytes (or "400GB") the node cache may hold; with it, ``cache_dir`` is a
            node-wide cache shared by every process on the machine, evicting what is not in use.

    Raises:
        FastdataFormatError: the manifest is missing, incomplete or invalid.
    """
    store = Store(url, storage_options)
    limit = None if cache_limit is None else parse_size(cache_limit)
    return Dataset(store, load_manifest(store, cache_dir or default_cache_dir()), cache_dir, limit)


def _drop(entries: list[tuple[ShardView, Release]]) -> None:
    """Unpin evicted shards and let go of their views (the mapping lives on in any array
    still using it)."""
    while entries:
        entries.pop()[1]()


@dataclass(frozen=True)
class ShardProblem:
    name: str
    message: str


def verify_dataset(
    url: str, *, storage_options: Mapping[str, Any] | None = None
) -> tuple[Manifest, list[ShardProblem]]:
    """Re-hash every shard of the dataset at ``url`` and open each raw shard once.

    Returns:
        The manifest and one problem per bad shard (empty when all is well).
    """
    store = Store(url, storage_options)
    manifest = load_manifest(store)
    problems = []
    # A fresh directory, so that remote and compressed shards are fetched and re-hashed.
    with tempfile.TemporaryDirectory(prefix="fastdata-verify-") as scratch:
        dataset = Dataset(store, manifest, scratch)
        for i, info in enumerate(manifest.shards):
            try:
                if store.local:
                    check_file(store.path(info.name), info.stored_bytes, info.xxh3_128,
                               store.describe(info.name))
                dataset.shard(i)  # copies are hash-checked on the way in
            except (FastdataError, OSError) as e:
                problems.append(ShardProblem(info.name, str(e)))
        dataset.close()
    return manifest, problems
