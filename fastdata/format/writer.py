"""Writing raw shards (``*.fds``) atomically, hashing the bytes as they are written.

With a ``block_size`` the shard is format v1.1: its payload is cut into blocks whose
xxh3-128 digests form a block table in the metadata section (``fastdata.format.blocks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xxhash

from fastdata._testing import pause_point
from fastdata.atomic import atomic_output
from fastdata.errors import FastdataConfigError
from fastdata.format.blocks import block_hashes
from fastdata.format.hashing import new_hasher
from fastdata.format.spec import (
    DTYPE_CODES,
    DTYPES,
    MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
    Layout,
    align,
    is_power_of_two,
    pack_header,
)


@dataclass(frozen=True)
class WrittenFile:
    """Size and xxh3-128 of a file just published, and (format v1.1) its metadata section."""

    size: int
    xxh3_128: str
    meta_bytes: int = 0  #: size of the metadata section; 0 for a v1 file
    meta_xxh3_128: str = ""
    block_size: int = 0


def check_block_size(block_size: int) -> int:
    """``block_size`` if it is a valid v1.1 block size (a power of two, 4 KiB to 64 MiB)."""
    if not (is_power_of_two(block_size) and MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE):
        raise FastdataConfigError(f"block size must be a power of two from {MIN_BLOCK_SIZE} to "
                                  f"{MAX_BLOCK_SIZE} bytes, got {block_size}")
    return block_size


def write_shard(
    path: str, tokens: np.ndarray, doc_lengths: np.ndarray, mask: np.ndarray | None, dtype: str,
    block_size: int | None = None,
) -> WrittenFile:
    """Publish one raw shard at ``path`` (temp file, fsync, rename).

    Args:
        path: final local path of the shard.
        tokens: every document's tokens, concatenated; any integer dtype whose values fit
            ``dtype`` (the caller has checked the range).
        doc_lengths: number of tokens of each document, in order.
        mask: per-token loss mask (0/1), or None for a shard without one.
        dtype: "uint16" or "uint32".
        block_size: write format v1.1 with blocks of at most this many bytes (a power of two;
            a shard whose payload is smaller records the smallest power of two that holds it);
            None writes format v1 (no block table).

    Returns:
        The size and hash of the published file (and of its metadata section, for v1.1).
    """
    if block_size is not None:
        check_block_size(block_size)
    if dtype not in DTYPE_CODES:
        raise FastdataConfigError(f"unknown shard dtype {dtype!r}; use one of {sorted(DTYPE_CODES)}")
    code = DTYPE_CODES[dtype]
    offsets = np.zeros(len(doc_lengths) + 1, dtype="<u8")
    np.cumsum(doc_lengths, out=offsets[1:])
    if int(offsets[-1]) != len(tokens) or (mask is not None and len(mask) != len(tokens)):
        raise FastdataConfigError("document lengths, tokens and mask disagree in length")
    layout = Layout.plan(len(doc_lengths), len(tokens), code, mask is not None, block_size)
    index = offsets.tobytes()
    tokens_view = np.ascontiguousarray(tokens, dtype=DTYPES[code]).data.cast("B")
    payload: list[bytes | memoryview] = [tokens_view]
    if mask is not None:
        payload.append(bytes(align(len(tokens_view)) - len(tokens_view)))
        payload.append(np.ascontiguousarray(mask, np.uint8).data.cast("B"))
    table = block_hashes(payload, layout.block_size) if layout.block_size else b""
    head = pack_header(layout, index, table) + index + table
    meta = head + bytes(layout.tokens_offset - len(head))
    hasher = new_hasher()
    with atomic_output(path) as f:
        for data in (meta, *payload):
            f.write(data)
            hasher.update(data)
            pause_point("mid_shard")
    if not layout.block_size:
        return WrittenFile(layout.file_size, hasher.hexdigest())
    return WrittenFile(layout.file_size, hasher.hexdigest(), len(meta),
                       xxhash.xxh3_128_hexdigest(meta), layout.block_size)
