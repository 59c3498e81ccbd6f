"""Shard format v1: the Python mirror of ``csrc/fastdata/format.h``.

The layout is documented in ``docs/format.md``. ``tests/test_spec.py`` checks that these
constants and the C++ ones agree, so change both together.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from fastdata.errors import FastdataFormatError

MAGIC = b"FDSHARD\x00"
VERSION = 1
HEADER_SIZE = 128
PAGE = 4096
INDEX_OFFSET = HEADER_SIZE

ZSTD_MAGIC = b"FDZSTD\x00\x00"
ZSTD_VERSION = 1
ZSTD_HEADER_SIZE = 64
ZSTD_BLOCK_ENTRY = struct.Struct("<QQ")

FLAG_LOSS_MASK = 1
KNOWN_FLAGS = FLAG_LOSS_MASK

#: dtype code in the header -> numpy dtype of the token payload.
DTYPES: dict[int, np.dtype] = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
DTYPE_CODES: dict[str, int] = {"uint16": 1, "uint32": 2}
DTYPE_NAMES: dict[int, str] = {code: name for name, code in DTYPE_CODES.items()}

RAW_SUFFIX = ".fds"
ZSTD_SUFFIX = ".fds.zst"
MANIFEST_NAME = "manifest.json"

# magic, version, dtype, flags, crc, num_docs, num_tokens, index_offset, tokens_offset,
# mask_offset, file_size; then 64 reserved bytes.
_HEADER = struct.Struct("<8sHBBIQQQQQQ64x")
_CRC_OFFSET = 12


def align(offset: int, to: int = PAGE) -> int:
    """Round ``offset`` up to a multiple of ``to``."""
    return (offset + to - 1) // to * to


def dtype_for_vocab(vocab_size: int) -> str:
    """The narrowest payload dtype that holds every id below ``vocab_size``."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


@dataclass(frozen=True)
class Layout:
    """Where each section of a raw shard lies, computed from its counts."""

    num_docs: int
    num_tokens: int
    dtype_code: int
    has_mask: bool
    tokens_offset: int
    mask_offset: int
    file_size: int

    @classmethod
    def plan(cls, num_docs: int, num_tokens: int, dtype_code: int, has_mask: bool) -> Layout:
        itemsize = DTYPES[dtype_code].itemsize
        tokens_offset = align(INDEX_OFFSET + (num_docs + 1) * 8)
        tokens_end = tokens_offset + num_tokens * itemsize
        mask_offset = align(tokens_end) if has_mask else 0
        file_size = mask_offset + num_tokens if has_mask else tokens_end
        return cls(num_docs, num_tokens, dtype_code, has_mask, tokens_offset, mask_offset, file_size)


def pack_header(layout: Layout, index_bytes: bytes) -> bytes:
    """The 128 header bytes for ``layout``, with the CRC over header and document index."""
    flags = FLAG_LOSS_MASK if layout.has_mask else 0
    fields = (
        MAGIC, VERSION, layout.dtype_code, flags, 0, layout.num_docs, layout.num_tokens,
        INDEX_OFFSET, layout.tokens_offset, layout.mask_offset, layout.file_size,
    )
    unsigned = _HEADER.pack(*fields)
    crc = zlib.crc32(index_bytes, zlib.crc32(unsigned))
    return unsigned[:_CRC_OFFSET] + struct.pack("<I", crc) + unsigned[_CRC_OFFSET + 4 :]


@dataclass(frozen=True)
class Header:
    """A parsed raw-shard header (no validation beyond the magic and version)."""

    version: int
    dtype_code: int
    flags: int
    crc32: int
    num_docs: int
    num_tokens: int
    index_offset: int
    tokens_offset: int
    mask_offset: int
    file_size: int


def unpack_header(data: bytes, path: str = "<bytes>") -> Header:
    """Parse the first 128 bytes of a raw shard.

    Raises:
        FastdataFormatError: the data is too short, the magic is wrong or the version is
            newer than this fastdata reads.
    """
    if len(data) < HEADER_SIZE:
        raise FastdataFormatError(
            f"{path}: file is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    magic, *rest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FastdataFormatError(f"{path}: bad magic {magic!r} at byte 0 (not a fastdata shard)")
    header = Header(*rest)
    if header.version > VERSION:
        raise FastdataFormatError(
            f"{path}: unsupported format version {header.version} (this fastdata reads <= {VERSION})"
        )
    return header
