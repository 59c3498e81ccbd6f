"""``fastdata.open_dataset``: the one place that chooses a dataset's format from its URL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastdata.config import CacheConfig, StorageConfig, resolve
from fastdata.reader.dataset import Dataset, open_packed


def open_dataset(url: str, *, storage_options: Mapping[str, Any] | None = None,  # noqa: PLR0913
                 cache_dir: str | None = None, cache_limit: int | str | None = None,
                 storage: StorageConfig | None = None, cache: CacheConfig | None = None) -> Dataset:
    """Open the dataset at a local path or fsspec URL for reading.

    Args:
        url: a fastdata dataset (the folder holding ``manifest.json``), or a Megatron-Core
            ``<prefix>.idx`` / ``<prefix>.bin`` pair read in place (docs/megatron.md).
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
        FastdataFormatError: the manifest (or ``.idx``) is missing, incomplete or invalid.
        FastdataConfigError: a setting is invalid or given both ways.
    """
    from fastdata.megatron.source import megatron_prefix, open_megatron  # megatron builds on the reader

    storage, cache = resolve(storage, cache, storage_options=storage_options, cache_dir=cache_dir,
                             cache_limit=cache_limit)
    if megatron_prefix(url):
        return open_megatron(url, storage=storage, cache=cache)
    return open_packed(url, storage=storage, cache=cache)
