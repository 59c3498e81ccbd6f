"""Writing raw shards (``*.fds``) atomically, hashing the bytes as they are written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastdata._testing import pause_point
from fastdata.atomic import atomic_output
from fastdata.errors import FastdataConfigError
from fastdata.format.hashing import new_hasher
from fastdata.format.spec import DTYPE_CODES, DTYPES, INDEX_OFFSET, Layout, pack_header


@dataclass(frozen=True)
class WrittenFile:
    """Size and xxh3-128 of a file just published."""

    size: int
    xxh3_128: str


def write_shard(
    path: str, tokens: np.ndarray, doc_lengths: np.ndarray, mask: np.ndarray | None, dtype: str
) -> WrittenFile:
    """Publish one raw shard at ``path`` (temp file, fsync, rename).

    Args:
        path: final local path of the shard.
        tokens: every document's tokens, concatenated; any integer dtype whose values fit
            ``dtype`` (the caller has checked the range).
        doc_lengths: number of tokens of each document, in order.
        mask: per-token loss mask (0/1), or None for a shard without one.
        dtype: "uint16" or "uint32".

    Returns:
        The size and hash of the published file.
    """
    if dtype not in DTYPE_CODES:
        raise FastdataConfigError(f"unknown shard dtype {dtype!r}; use one of {sorted(DTYPE_CODES)}")
    code = DTYPE_CODES[dtype]
    offsets = np.zeros(len(doc_lengths) + 1, dtype="<u8")
    np.cumsum(doc_lengths, out=offsets[1:])
    if int(offsets[-1]) != len(tokens) or (mask is not None and len(mask) != len(tokens)):
        raise FastdataConfigError("document lengths, tokens and mask disagree in length")
    layout = Layout.plan(len(doc_lengths), len(tokens), code, mask is not None)
    index = offsets.tobytes()
    payload = np.ascontiguousarray(tokens, dtype=DTYPES[code])
    sections: list[tuple[int, bytes | memoryview]] = [
        (0, pack_header(layout, index)),
        (INDEX_OFFSET, index),
        (layout.tokens_offset, memoryview(payload).cast("B")),
    ]
    if mask is not None:
        sections.append((layout.mask_offset, memoryview(np.ascontiguousarray(mask, np.uint8))))
    hasher = new_hasher()
    pos = 0
    with atomic_output(path) as f:
        for offset, data in sections:
            if offset > pos:
                gap = bytes(offset - pos)
                f.write(gap)
                hasher.update(gap)
            f.write(data)
            hasher.update(data)
            pos = offset + len(data)
            pause_point("mid_shard")
    return WrittenFile(layout.file_size, hasher.hexdigest())
