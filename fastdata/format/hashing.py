"""The content hash of shards: xxh3-128, hex encoded."""

from __future__ import annotations

import xxhash

CHUNK = 8 << 20


def new_hasher() -> xxhash.xxh3_128:
    return xxhash.xxh3_128()


def hash_file(path: str) -> str:
    """xxh3-128 of the file at ``path``, read in 8 MiB chunks."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
