"""A Megatron-Core ``.bin``/``.idx`` pair opened as a fastdata :class:`~fastdata.reader.dataset.Dataset`.

A fastdata document is a Megatron *sequence* (``IndexedDataset[i]``). The one big ``.bin``
is presented as virtual shards: runs of whole sequences of about ``shard_bytes`` each
(:func:`~fastdata.megatron.index.plan_shards`), each a native raw-token view of its byte
range. The loader's sample plan, gather and node cache then work on it unchanged. The
``.idx`` is read once per opening process (remote: into a local copy that DataLoader
workers map); remote ``.bin`` ranges come through :class:`~fastdata.megatron.files.MegatronFiles`.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import xxhash

from fastdata.atomic import write_bytes_atomic
from fastdata.config import CacheConfig, StorageConfig, resolve
from fastdata.errors import FastdataConfigError, FastdataFormatError
from fastdata.format.manifest import Manifest, TokenizerInfo
from fastdata.format.reader import ShardView, open_token_range
from fastdata.format.shard_table import RECORD, ShardTable
from fastdata.megatron.files import MegatronFiles, Release
from fastdata.megatron.index import MegatronIndex, parse_index, plan_shards
from fastdata.reader.dataset import Dataset
from fastdata.reader.files import default_cache_dir
from fastdata.storage.download import RetryPolicy, retrying
from fastdata.storage.remote import Store, is_local
from fastdata.units import parse_size

#: Bytes of the ``.bin`` per virtual shard (and per shard of ``fastdata import megatron``).
SHARD_BYTES = 64 << 20
SUFFIXES = (".idx", ".bin")
_WIDER: dict[str, np.dtype] = {"uint8": np.dtype(np.uint16), "int8": np.dtype(np.int32),
                                "int16": np.dtype(np.int32)}


def megatron_prefix(url: str) -> tuple[str, str] | None:
    """(root URL, file stem) when ``url`` names a Megatron dataset, else None.

    A Megatron dataset is named by its ``.idx`` or ``.bin`` file (any store), or, for a
    local path, by the bare prefix when ``<prefix>.idx`` exists and ``<prefix>`` is not a
    fastdata dataset directory.
    """
    parts = urlsplit(url)
    scheme_is_path = not parts.scheme or len(parts.scheme) == 1
    path = url.split("?", 1)[0] if scheme_is_path else parts.path
    stem = next((path[: -len(s)] for s in SUFFIXES if path.endswith(s)), None)
    if stem is None:
        local = is_local(url) and not url.startswith("file://")
        if not (local and os.path.isfile(path + ".idx") and not os.path.isdir(path)):
            return None
        stem = path
    root, name = posixpath.split(stem)
    if scheme_is_path:
        return root or ".", name
    return urlunsplit((parts.scheme, parts.netloc, root, parts.query, "")), name


class MegatronDataset(Dataset):
    """A Megatron ``.bin``/``.idx`` pair as virtual shards; use :func:`open_megatron`.

    The shard table lists each virtual shard's sequences (``docs``), tokens and ``.bin``
    bytes; there are no checksums (Megatron writes none), so the dataset's identity is the
    xxh3-128 of the ``.idx`` bytes and the ``.bin`` size.
    """

    def __init__(self, store: Store, stem: str, index: MegatronIndex, index_path: str,  # noqa: PLR0913
                 shard_bytes: int, cache_dir: str | None = None, cache_limit: int | None = None,
                 policy: RetryPolicy | None = None) -> None:
        self.stem, self.index, self.index_path, self.shard_bytes = stem, index, index_path, shard_bytes
        self.bounds = plan_shards(index.lengths, index.dtype.itemsize, shard_bytes)
        manifest, byte_ranges = _manifest(stem, index, self.bounds)
        names = [manifest.shards.name(i) for i in range(len(manifest.shards))]
        self.megatron_files = MegatronFiles(store, stem + ".bin", names, byte_ranges, manifest.fingerprint,
                                            cache_dir, cache_limit)
        if policy is not None:
            self.megatron_files.policy = policy
        super().__init__(store, manifest, cache_dir, cache_limit, files=self.megatron_files)

    def __repr__(self) -> str:
        return (f"MegatronDataset({self.store.describe(self.stem)!r}, dtype={self.index.dtype.name}, "
                f"shards={len(self.shards)}, sequences={self.num_docs}, tokens={self.num_tokens})")

    @property
    def dtype(self) -> np.dtype:
        """The dtype :meth:`tokens` returns: the ``.bin``'s, widened where the gather has no
        output of that type (uint8 to uint16; int8 and int16 to int32). :meth:`doc` returns
        the ``.bin``'s own dtype, as Megatron's reader does."""
        return _WIDER.get(self.index.dtype.name, self.index.dtype)

    def _open(self, index: int) -> tuple[ShardView, Release, None]:
        """Map virtual shard ``index``: a raw-token view of its ``.bin`` range (pinned while open)."""
        lo, hi = (int(b) for b in self.bounds[index : index + 2])
        offsets = np.zeros(hi - lo + 1, dtype=np.uint64)
        np.cumsum(self.index.lengths[lo:hi], out=offsets[1:])
        path, release = self.files.acquire(index)
        try:
            at = self.megatron_files.byte_offset(index)
            view = open_token_range(path, at, self.index.dtype.name, offsets)
        except BaseException:
            release()
            raise
        return view, release, None  # a .bin range has no blocks to fetch apart

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the index arrays: a worker maps the local ``.idx`` (or its copy) again."""
        state = super().__getstate__()
        del state["index"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.index = _parse_local(self.index_path, self.store.describe(self.stem + ".idx"),
                                  self.store.describe(self.stem + ".bin"),
                                  int(self.shards.column("raw_bytes").sum()))


def _manifest(stem: str, index: MegatronIndex, bounds: np.ndarray) -> tuple[Manifest, np.ndarray]:
    cum = np.concatenate([[0], np.cumsum(index.lengths, dtype=np.int64)])
    tokens = np.diff(cum[bounds])
    starts = cum[bounds[:-1]] * index.dtype.itemsize
    byte_ranges = np.stack([starts, starts + tokens * index.dtype.itemsize], axis=1).astype(np.int64)
    records = np.zeros(len(tokens), dtype=RECORD)
    records["stored_bytes"] = records["raw_bytes"] = byte_ranges[:, 1] - byte_ranges[:, 0]
    records["docs"] = np.diff(bounds)
    records["tokens"] = tokens
    tokenizer = TokenizerInfo(kind="pretokenized", name=f"megatron:{stem}", vocab_size=0, eos_id=None,
                              bos_id=None, fingerprint=index.identity)
    # node-cache file names: one path component, no leading dot, well under 255 bytes
    label = stem.lstrip(".")[:100] or "megatron"
    names = [f"{label}.bin.{int(a)}-{int(b)}" for a, b in byte_ranges]
    provenance = {"megatron": {"stem": stem, "dtype": index.dtype.name, "sequences": index.num_sequences,
                               "documents": len(index.document_indices) - 1,
                               "multimodal": index.multimodal}}
    manifest = Manifest(dtype=index.dtype.name, has_loss_mask=False, compression=None, tokenizer=tokenizer,
                        shards=ShardTable(records, names, False), provenance=provenance)
    return manifest, byte_ranges


def _parse_local(path: str, idx_where: str, bin_where: str, bin_size: int) -> MegatronIndex:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
    data = np.memmap(path, dtype=np.uint8, mode="r") if size else b""
    return parse_index(data, idx_where, bin_where, bin_size)


def read_index(store: Store, stem: str, cache_dir: str | None = None) -> tuple[MegatronIndex, str]:
    """Read and validate ``<stem>.idx`` against ``<stem>.bin`` in ``store``.

    A remote ``.idx`` is fetched once (retried) into ``<cache_dir>/megatron-index/``, keyed by
    its URL, size and ETag, and mapped from there by every process that opens it later.

    Returns:
        The index and the local path it is mapped from.

    Raises:
        FastdataFormatError: a file is missing, or the pair is malformed or mismatched.
        FastdataDownloadError: the remote ``.idx`` could not be read.
    """
    idx_name, bin_name = stem + ".idx", stem + ".bin"
    sizes: dict[str, int] = {}
    for name in (idx_name, bin_name):
        size = store.size(name)
        if size is None:
            raise FastdataFormatError(f"{store.describe(name)} does not exist: a Megatron dataset needs both "
                                      f"{idx_name} and {bin_name}")
        sizes[name] = size
    if store.local:
        path = store.path(idx_name)
    else:
        etag = retrying(store.describe(idx_name), lambda: (store.etag(idx_name) or "").encode())
        key = xxhash.xxh3_128_hexdigest(f"{store.describe(idx_name)}|{sizes[idx_name]}|".encode() + etag)
        path = os.path.join(cache_dir or default_cache_dir(), "megatron-index", f"{key}.idx")
        if not (os.path.isfile(path) and os.path.getsize(path) == sizes[idx_name]):
            data = retrying(store.describe(idx_name), lambda: store.read_bytes(idx_name))
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_bytes_atomic(path, data)
    index = _parse_local(path, store.describe(idx_name), store.describe(bin_name), int(sizes[bin_name]))
    return index, path


def open_megatron(url: str, *, storage_options: Mapping[str, Any] | None = None,  # noqa: PLR0913
                  cache_dir: str | None = None, cache_limit: int | str | None = None,
                  shard_bytes: int | str | None = None, storage: StorageConfig | None = None,
                  cache: CacheConfig | None = None) -> MegatronDataset:
    """Open the Megatron-Core dataset named by ``url`` for reading in place.

    Args:
        url: ``<prefix>.idx`` or ``<prefix>.bin``, locally or under any fsspec URL; or a
            local bare ``<prefix>`` (see :func:`megatron_prefix`).
        storage_options: fsspec options for a remote ``url`` (never logged).
        cache_dir: where a remote ``.idx`` copy and the fetched ``.bin`` ranges are kept.
        cache_limit: bytes (or "400GB") of the node-wide cache for the ``.bin`` ranges.
        shard_bytes: ``.bin`` bytes per virtual shard (default :data:`SHARD_BYTES`, 64 MiB).
        storage: :class:`~fastdata.config.StorageConfig` (options and retries), instead of
            ``storage_options``.
        cache: :class:`~fastdata.config.CacheConfig`, instead of ``cache_dir``/``cache_limit``.

    Raises:
        FastdataConfigError: ``url`` does not name a Megatron dataset.
        FastdataFormatError: a file is missing, malformed, or the two disagree.
    """
    found = megatron_prefix(url)
    if found is None:
        raise FastdataConfigError(f"{url.split('?', 1)[0]} does not name a Megatron dataset: give its .idx "
                                  "or .bin file, or a local prefix whose .idx exists")
    root, stem = found
    storage, cache = resolve(storage, cache, storage_options=storage_options, cache_dir=cache_dir,
                             cache_limit=cache_limit)
    store = Store(root, storage.options)
    index, path = read_index(store, stem, cache.dir)
    size = parse_size(SHARD_BYTES if shard_bytes is None else shard_bytes)
    if size < 1:
        raise FastdataConfigError(f"shard_bytes must be positive, got {shard_bytes!r}")
    return MegatronDataset(store, stem, index, path, size, cache.dir, cache.limit, storage.retry)
