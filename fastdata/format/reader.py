"""Reading raw shards: the Python face of the native memory-mapped reader.

This is the only module that imports ``fastdata._native``. A :class:`ShardView` maps one
raw shard (``*.fds``, see ``docs/format.md``) and validates it once, when opened; arrays
it returns are read-only, zero-copy views of the mapping that stay valid after
``close()``. Format errors raised by the native code are
:class:`~fastdata.errors.FastdataFormatError` with extra ``path``, ``field`` and
``byte_offset`` attributes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fastdata import _native

ShardView = _native.ShardView


def open_shard(path: str | os.PathLike[str]) -> ShardView:
    """Map and validate the raw shard at ``path``.

    Args:
        path: a local ``*.fds`` file.

    Returns:
        The opened shard; use it as a context manager or call ``close()``.

    Raises:
        FastdataFormatError: the file is not a valid shard (truncated, bad magic, newer
            version, corrupt header or index); the message names the file, field and
            byte offset.
        FastdataIOError: the file cannot be opened or mapped.
    """
    return _native.ShardView(path)


def open_token_range(
    path: str | os.PathLike[str], byte_offset: int, dtype: str, doc_offsets: npt.ArrayLike
) -> ShardView:
    """Map raw tokens with no fastdata header: a range of a Megatron ``.bin``.

    Args:
        path: the local file (a whole ``.bin``, or a cached copy of one range).
        byte_offset: where the range starts; a multiple of the token size.
        dtype: numpy name of the tokens: uint8, int8, int16, uint16, int32, uint32 or int64.
        doc_offsets: ``num_docs + 1`` token offsets from 0, never decreasing; the range
            holds ``doc_offsets[-1]`` tokens. Only the range is mapped.

    Returns:
        A shard view without a loss mask; ``gather`` reads it like any shard.

    Raises:
        FastdataFormatError: malformed offsets, a misaligned offset, or a file that ends
            before the range does (a truncated ``.bin``).
        FastdataIOError: the file cannot be opened or mapped.
        ValueError: an unknown dtype.
    """
    offsets = np.ascontiguousarray(doc_offsets, dtype=np.uint64)
    return _native.ShardView.from_tokens(path, byte_offset, dtype, offsets)


def gather(
    shards: Sequence[ShardView],
    spans: npt.ArrayLike,
    out: np.ndarray,
    mask_out: np.ndarray | None = None,
) -> None:
    """Copy token spans from several shards into ``out``, back to back, without the GIL.

    Args:
        shards: the open shards that span rows refer to by position.
        spans: int64 array of shape ``(N, 3)``; each row is ``(shard index, token offset,
            length)``.
        out: writeable, C-contiguous 1-D array of int64, int32, uint16 or uint32 whose
            length is the sum of the span lengths. Tokens are converted to its dtype;
            only uint8 and uint16 tokens go into uint16, and tokens that do not fit an
            int32 or uint32 output wrap (as ``astype`` does).
        mask_out: optional uint8 array of the same length that receives the loss masks;
            tokens of shards without a mask get 1.

    Raises:
        IndexError: a shard index or token range lies outside its shard.
        ValueError: negative length, lengths not summing to ``len(out)``, a closed shard,
            or an ``out``/``mask_out`` that is not a writeable contiguous vector.
        TypeError: ``out`` or ``mask_out`` has an unsupported dtype.

    Every span is checked before anything is written, so on error ``out`` is untouched.
    """
    _native.gather(shards, spans, out, mask_out)


def permute(index: np.ndarray, size: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Native ``fastdata.sampling.permute.permute_reference``: the same values, GIL released.

    Raises:
        ValueError: some ``index[i]`` lies outside ``[0, size[i])``.
    """
    return _native.permute(index, size, key)


__all__ = ["ShardView", "gather", "open_shard", "open_token_range", "permute"]
