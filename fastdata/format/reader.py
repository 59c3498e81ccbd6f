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
            length is the sum of the span lengths. Tokens are widened to its dtype;
            uint32 tokens into uint16 are refused, and uint32 tokens >= 2**31 wrap in
            int32 (as ``astype`` does).
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


__all__ = ["ShardView", "gather", "open_shard", "permute"]
