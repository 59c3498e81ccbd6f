"""Where each virtual shard of a Megatron ``.bin`` is read from.

* A local ``.bin`` is read in place: a virtual shard is a byte range of it, mapped alone.
* A remote ``.bin`` is fetched one virtual shard at a time, with ranged reads, into the
  node cache (``cache_limit``: the shared :class:`~fastdata.storage.cache.NodeCache`) or a
  plain directory (``cache_dir`` alone), as a file of its own read from byte 0.

Megatron datasets carry no checksums: a cached range is checked by its size only.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from fastdata.errors import FastdataCacheError
from fastdata.reader.files import count_retry, count_use, counted_fill, default_cache_dir, node_cache
from fastdata.storage.download import RetryPolicy, download
from fastdata.storage.plain_cache import open_plain_directory, plain_file, private_directory
from fastdata.storage.remote import Store

Release = Callable[[], None]


def _nothing() -> None:
    return None


class MegatronFiles:
    """Local file and byte offset of each virtual shard, and when it may go.

    Args:
        store: the directory (or URL prefix) holding the ``.bin``.
        bin_name: the ``.bin``'s name in ``store``.
        names: one cache file name per virtual shard.
        byte_ranges: int64 ``[start, end)`` of each virtual shard in the ``.bin``, shape (N, 2).
        namespace: the dataset's identity (its node-cache directory).
        cache_dir: where remote ranges are kept; default ``$TMPDIR/fastdata-<uid>``.
        cache_limit: with it, ``cache_dir`` is the node-wide cache under this byte limit.
    """

    def __init__(self, store: Store, bin_name: str, names: list[str], byte_ranges: np.ndarray,  # noqa: PLR0913
                 namespace: str, cache_dir: str | None = None, cache_limit: int | None = None) -> None:
        self.store, self.bin_name, self.names = store, bin_name, names
        self.byte_ranges = byte_ranges
        self.in_place = store.local
        self.namespace = namespace
        self.root = cache_dir or default_cache_dir()
        self.limit = cache_limit
        self.policy = RetryPolicy()
        self._setup()

    def _setup(self) -> None:
        self._cache = None
        self._dir = None
        if self.in_place:
            return
        if self.limit is not None:
            self._cache = node_cache(self.root, self.limit)
        else:
            private_directory(self.root)
            self._dir = open_plain_directory(os.path.join(self.root, self.namespace))

    def __getstate__(self) -> dict:
        """Pickle the settings only: each process opens the cache itself."""
        keep = ("store", "bin_name", "names", "byte_ranges", "in_place", "namespace", "root", "limit",
                "policy")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._setup()

    def block_fill(self, index: int, path: str) -> None:
        """Megatron ranges are fetched whole: no block-by-block filling."""
        return None

    def size(self, index: int) -> int:
        start, end = self.byte_ranges[index]
        return int(end - start)

    def byte_offset(self, index: int) -> int:
        """Where shard ``index``'s tokens start in the file :meth:`acquire` gives."""
        return int(self.byte_ranges[index][0]) if self.in_place else 0

    def acquire(self, index: int, next_use: float = float("inf"), *, ahead: bool = False
                ) -> tuple[str, Release]:
        """Path of the file holding shard ``index``, and the callable that unpins it.

        ``ahead`` marks a prefetch (counted as ``prefetch.*``, not as a cache hit or miss).
        """
        if self.in_place:  # the user's own file: a symlink is followed here (the reader never does)
            return os.path.realpath(self.store.path(self.bin_name)), _nothing
        name = self.names[index]
        if self._cache is None:
            path, filled = self._plain(index, name)
            count_use(filled, ahead)
            return path, _nothing
        fetched: list[bool] = []

        def fill(dest: str) -> None:
            self.fill(index, dest)
            fetched.append(True)

        handle = self._cache.acquire(self.namespace, name, self.size(index), fill, next_use=next_use)
        count_use(bool(fetched), ahead)
        return handle.path, handle.release

    def _plain(self, index: int, name: str) -> tuple[str, bool]:
        if self._dir is None:
            raise FastdataCacheError(f"{self.root}: no plain cache directory is open for "
                                     f"{self.store.describe(self.bin_name)} (it is read in place or "
                                     "through the node cache)")
        return plain_file(self._dir, name, self.size(index), lambda dest: self.fill(index, dest))

    def fill(self, index: int, dest: str) -> None:
        """Write shard ``index``'s bytes of the ``.bin`` to ``dest`` (counted as ``fetch.*``)."""
        counted_fill(lambda: self._fill(index, dest), 0 if self.store.local else self.size(index))

    def _fill(self, index: int, dest: str) -> None:
        """Parallel ranged reads of the shard's ``.bin`` bytes, retried, checked for their length
        and for one version of the object (``fastdata.storage.download``, as for fastdata shards)."""
        start, end = (int(x) for x in self.byte_ranges[index])
        download(self.store, self.bin_name, dest, end - start, None, self.policy, on_retry=count_retry,
                 offset=start)
