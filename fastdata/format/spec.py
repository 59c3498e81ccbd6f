"""Shard format v1 (and its minor version v1.1): the Python mirror of ``csrc/fastdata/format.h``.

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
#: The zstd wrapper's header: magic, version, 6 reserved bytes, raw_size, block_size,
#: num_blocks, then 24 reserved bytes (docs/format.md, "Compressed shard").
ZSTD_HEADER = struct.Struct("<8sH6xQQQ24x")
ZSTD_BLOCK_ENTRY = struct.Struct("<QQ")
#: Wrapper version 2 (format v1.1): each table entry also holds the xxh3-128 of the frame's
#: raw (decompressed) bytes.
ZSTD_VERSION_HASHED = 2
ZSTD_HASHED_ENTRY = struct.Struct("<QQ16s")

FLAG_LOSS_MASK = 1
#: v1.1: the header's block fields are set and a block table follows the document index.
FLAG_BLOCK_TABLE = 2
KNOWN_FLAGS = FLAG_LOSS_MASK | FLAG_BLOCK_TABLE

#: v1.1 block table: one xxh3-128 digest per payload block.
BLOCK_ENTRY_SIZE = 16
MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 64 << 20
#: Byte offsets of the v1.1 header fields (inside v1's reserved bytes).
BLOCK_SIZE_OFFSET = 64
NUM_BLOCKS_OFFSET = 72
BLOCK_TABLE_OFFSET_OFFSET = 80
RESERVED_OFFSET = 88

#: dtype code in the header -> numpy dtype of the token payload.
DTYPES: dict[int, np.dtype] = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
DTYPE_CODES: dict[str, int] = {"uint16": 1, "uint32": 2}
DTYPE_NAMES: dict[int, str] = {code: name for name, code in DTYPE_CODES.items()}

RAW_SUFFIX = ".fds"
ZSTD_SUFFIX = ".fds.zst"
MANIFEST_NAME = "manifest.json"

# magic, version, dtype, flags, crc, num_docs, num_tokens, index_offset, tokens_offset,
# mask_offset, file_size, block_size, num_blocks, block_table_offset; then 40 reserved bytes.
# (v1 shards have zeros in the three block fields: they were reserved bytes in v1.)
_HEADER = struct.Struct("<8sHBBIQQQQQQQQQ40x")
_CRC_OFFSET = 12


def align(offset: int, to: int = PAGE) -> int:
    """Round ``offset`` up to a multiple of ``to``."""
    return (offset + to - 1) // to * to


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def largest_block_size(payload_size: int) -> int:
    """The largest block size a v1.1 shard of ``payload_size`` payload bytes may record: the
    smallest power of two that holds the whole payload, and at least ``MIN_BLOCK_SIZE``."""
    return max(MIN_BLOCK_SIZE, 1 << max(payload_size - 1, 0).bit_length())


def effective_block_size(requested: int, payload_size: int) -> int:
    """The block size a writer records for ``requested``: never above what the payload needs."""
    return min(requested, largest_block_size(payload_size))


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
    block_size: int = 0  #: v1.1 only; 0 in a v1 shard
    num_blocks: int = 0
    block_table_offset: int = 0

    @classmethod
    def plan(cls, num_docs: int, num_tokens: int, dtype_code: int, has_mask: bool,
             block_size: int | None = None) -> Layout:
        """The layout of a v1 shard, or of a v1.1 shard with blocks of at most ``block_size``."""
        itemsize = DTYPES[dtype_code].itemsize
        index_end = INDEX_OFFSET + (num_docs + 1) * 8
        tokens_bytes = num_tokens * itemsize
        # The payload (tokens, padding, mask) does not depend on where it starts: it starts
        # on a page boundary either way.
        payload = align(tokens_bytes) + num_tokens if has_mask else tokens_bytes
        table_offset = num_blocks = 0
        meta_end = index_end
        if block_size:
            block_size = effective_block_size(block_size, payload)
            num_blocks = -(-payload // block_size)
            table_offset = index_end
            meta_end = table_offset + num_blocks * BLOCK_ENTRY_SIZE
        tokens_offset = align(meta_end)
        mask_offset = tokens_offset + align(tokens_bytes) if has_mask else 0
        return cls(num_docs, num_tokens, dtype_code, has_mask, tokens_offset, mask_offset,
                   tokens_offset + payload, block_size or 0, num_blocks, table_offset)

    @property
    def meta_bytes(self) -> int:
        """Size of the metadata section (header, index, block table, padding): the payload's start."""
        return self.tokens_offset


def pack_header(layout: Layout, index_bytes: bytes, table_bytes: bytes = b"") -> bytes:
    """The 128 header bytes for ``layout``, with the CRC over the header, the document index
    and (v1.1) the block table."""
    flags = (FLAG_LOSS_MASK if layout.has_mask else 0) | (FLAG_BLOCK_TABLE if layout.block_size else 0)
    fields = (
        MAGIC, VERSION, layout.dtype_code, flags, 0, layout.num_docs, layout.num_tokens,
        INDEX_OFFSET, layout.tokens_offset, layout.mask_offset, layout.file_size,
        layout.block_size, layout.num_blocks, layout.block_table_offset,
    )
    unsigned = _HEADER.pack(*fields)
    crc = zlib.crc32(table_bytes, zlib.crc32(index_bytes, zlib.crc32(unsigned)))
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
    block_size: int
    num_blocks: int
    block_table_offset: int

    @property
    def has_block_table(self) -> bool:
        return bool(self.flags & FLAG_BLOCK_TABLE)


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
