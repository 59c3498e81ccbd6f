"""Storage and cache settings, grouped: the frozen objects ``TokenDataset``, ``open_dataset``
and ``open_megatron`` take as ``storage=`` and ``cache=``.

Each is validated once, here, with a typed error naming the field. The loose keywords
(``storage_options``, ``cache_dir``, ``cache_limit``) stay accepted and mean the same;
:func:`resolve` turns either form into these objects, and refuses both at once. No
environment variable is read here (those are read in :mod:`fastdata.environment` only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fastdata.errors import FastdataConfigError
from fastdata.storage.download import RetryPolicy
from fastdata.units import parse_size


@dataclass(frozen=True)
class StorageConfig:
    """How a remote dataset is reached."""

    #: fsspec options for the URL's filesystem (credentials, an emulator's connection
    #: string, ``allow_insecure``); kept out of every repr, message and log.
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: retries, backoff and ranged reads of every object (``fastdata.storage.download``)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not isinstance(self.options, Mapping):
            raise FastdataConfigError(
                f"StorageConfig.options must be a mapping, got {type(self.options).__name__}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        r = self.retry
        if r.attempts < 1 or r.parallel < 1 or r.range_bytes < 1 or not 0 <= r.base_backoff <= r.max_backoff:
            raise FastdataConfigError(
                "StorageConfig.retry needs attempts >= 1, parallel >= 1, range_bytes >= 1 and "
                f"0 <= base_backoff <= max_backoff, got {r}")

    def __repr__(self) -> str:
        return f"StorageConfig(options=<{len(self.options)} keys>, retry={self.retry})"


@dataclass(frozen=True)
class CacheConfig:
    """Where fetched and decompressed shards are kept on this node."""

    #: the directory; default ``$TMPDIR/fastdata-<uid>``. Without ``limit`` a plain
    #: directory private to this user; with it the node-wide cache of every process.
    dir: str | None = None
    #: bytes (or "400GB") the node cache may hold, temp files included; None: no node cache
    limit: int | None = None
    #: seconds a process waits for another's fetch of the same shard, or for room
    wait_timeout: float = 120.0
    #: fetch remote format-v1.1 raw shards block by block: a shard's metadata first, then
    #: the blocks each batch (or the prefetcher) needs, each verified (``reader/blocks.py``).
    #: Off by default for now: shards are fetched whole.
    blocks: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None:
            limit = parse_size(self.limit)
            if limit <= 0:
                raise FastdataConfigError(f"CacheConfig.limit must be positive, got {self.limit!r}")
            object.__setattr__(self, "limit", limit)
        if not (isinstance(self.wait_timeout, (int, float)) and math.isfinite(self.wait_timeout)
                and self.wait_timeout >= 0):
            raise FastdataConfigError(
                f"CacheConfig.wait_timeout must be >= 0 seconds, got {self.wait_timeout!r}")
        if self.dir is not None and not isinstance(self.dir, str):
            object.__setattr__(self, "dir", str(self.dir))


def resolve(storage: StorageConfig | None, cache: CacheConfig | None, *,
            storage_options: Mapping[str, Any] | None = None, cache_dir: str | None = None,
            cache_limit: int | str | None = None) -> tuple[StorageConfig, CacheConfig]:
    """The config objects for either form of the settings.

    Raises:
        FastdataConfigError: a setting is given both ways, or is invalid.
    """
    if storage is not None and storage_options is not None:
        raise FastdataConfigError("give storage=StorageConfig(...) or storage_options=..., not both")
    if cache is not None and (cache_dir is not None or cache_limit is not None):
        raise FastdataConfigError("give cache=CacheConfig(...) or cache_dir=/cache_limit=..., not both")
    if storage is None:
        storage = StorageConfig(options=storage_options or {})
    if cache is None:
        limit = None if cache_limit is None else parse_size(cache_limit)
        cache = CacheConfig(dir=None if cache_dir is None else str(cache_dir), limit=limit)
    return storage, cache
