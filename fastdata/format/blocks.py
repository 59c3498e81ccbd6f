"""Per-block integrity of format v1.1: the block table, read from a shard's metadata alone.

A v1.1 raw shard (``*.fds``) cuts its payload, bytes ``[tokens_offset, file_size)``, into
blocks of ``block_size`` bytes (the last one shorter) and keeps the xxh3-128 of each in a
block table inside its metadata section ``[0, tokens_offset)``; a v1.1 zstd shard
(``*.fds.zst``, wrapper version 2) keeps the xxh3-128 of each frame's raw bytes in its
frame table, its metadata section being header plus table. The manifest records each
shard's ``meta_bytes`` and ``meta_xxh3_128``, so one ranged read of ``[0, meta_bytes)``,
checked with :func:`check_meta`, is enough to verify any block alone (:func:`verify_block`).
See ``docs/format.md``.

Everything here is pure: bytes in, :class:`BlockTable` or an exception out. Every check
of a value read from the file happens before anything sized by that value is allocated.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import xxhash
import zstandard

from fastdata.errors import FastdataFormatError, FastdataIntegrityError
from fastdata.format import spec
from fastdata.format.shard_table import ShardInfo

_MAX_FRAME_SLACK = 4096  # a frame may be this much larger than twice its block


@dataclass(frozen=True)
class BlockTable:
    """Where each block of one shard lies and what it must hash to.

    ``offsets``/``lengths`` are byte ranges of the stored file (what to fetch);
    ``raw_offsets``/``raw_lengths`` are the ranges of the raw shard that the hashes cover
    (the same for a raw shard; the decompressed frames of a zstd shard).
    """

    name: str
    block_size: int
    meta_bytes: int
    offsets: np.ndarray
    lengths: np.ndarray
    raw_offsets: np.ndarray
    raw_lengths: np.ndarray
    hashes: np.ndarray  #: one 16-byte xxh3-128 digest (``V16``) per block
    compressed: bool = False

    def __len__(self) -> int:
        return len(self.lengths)

    def byte_range(self, i: int) -> tuple[int, int]:
        """``[start, end)`` of block ``i`` in the stored file."""
        start = int(self.offsets[i])
        return start, start + int(self.lengths[i])


@dataclass(frozen=True)
class BadBlock:
    """A block of a local file that does not match its table entry."""

    index: int
    start: int  #: first byte in the stored file
    end: int  #: one past the last byte
    message: str


def block_hashes(parts: Iterable[bytes | memoryview], block_size: int) -> bytes:
    """The block table of a payload given as consecutive ``parts``: the xxh3-128 digest of
    every ``block_size`` bytes (the last block shorter), concatenated. No copy of the payload."""
    out = []
    h = xxhash.xxh3_128()
    filled = 0
    for part in parts:
        view = memoryview(part).cast("B")
        pos = 0
        while pos < len(view):
            take = min(block_size - filled, len(view) - pos)
            h.update(view[pos:pos + take])
            filled += take
            pos += take
            if filled == block_size:
                out.append(h.digest())
                h, filled = xxhash.xxh3_128(), 0
    if filled:
        out.append(h.digest())
    return b"".join(out)


def _fail(name: str, field: str, offset: int, message: str) -> FastdataFormatError:
    return FastdataFormatError(f"{name}: field '{field}' at byte {offset}: {message}")


def parse_block_table(meta: bytes | memoryview, name: str, *, file_size: int | None = None,
                      raw_size: int | None = None) -> BlockTable:
    """The block table of a v1.1 shard from its metadata bytes (at least ``[0, meta_bytes)``).

    Args:
        meta: the first bytes of the stored shard; more than the metadata is ignored.
        name: the shard, for messages.
        file_size: the stored file's real size, when known (checked against the header).
        raw_size: for a zstd shard, the raw size the manifest records.

    Raises:
        FastdataFormatError: a v1 shard (no table), or a field that is out of range or
            inconsistent; the message names the shard, the field and its byte offset.
    """
    meta = memoryview(meta).cast("B")
    if bytes(meta[:8]) == spec.ZSTD_MAGIC:
        return _parse_zstd(meta, name, file_size, raw_size)
    return _parse_raw(meta, name, file_size)


def _parse_raw(meta: memoryview, name: str, file_size: int | None) -> BlockTable:
    h = spec.unpack_header(bytes(meta[:spec.HEADER_SIZE]), name)
    if not h.has_block_table:
        raise _fail(name, "flags", 11, "no block table (a v1 shard: verify it whole)")
    if file_size is not None and h.file_size != file_size:
        raise _fail(name, "file_size", 56, f"is {h.file_size}, the file is {file_size} bytes")
    if not spec.INDEX_OFFSET < h.tokens_offset <= h.file_size or h.tokens_offset % spec.PAGE:
        raise _fail(name, "tokens_offset", 40, f"is {h.tokens_offset}, must be a multiple of "
                    f"{spec.PAGE} inside the {h.file_size}-byte file")
    payload = h.file_size - h.tokens_offset
    bs = h.block_size
    if not spec.is_power_of_two(bs) or not spec.MIN_BLOCK_SIZE <= bs <= spec.MAX_BLOCK_SIZE:
        raise _fail(name, "block_size", spec.BLOCK_SIZE_OFFSET, f"is {bs}, must be a power of two "
                    f"from {spec.MIN_BLOCK_SIZE} to {spec.MAX_BLOCK_SIZE}")
    if bs > spec.largest_block_size(payload):
        raise _fail(name, "block_size", spec.BLOCK_SIZE_OFFSET,
                    f"is {bs}, larger than the shard: its {payload}-byte payload needs at most "
                    f"{spec.largest_block_size(payload)}")
    if h.num_blocks != -(-payload // bs):
        raise _fail(name, "num_blocks", spec.NUM_BLOCKS_OFFSET,
                    f"is {h.num_blocks}, but the {payload}-byte payload [{h.tokens_offset}, "
                    f"{h.file_size}) holds {-(-payload // bs)} blocks of {bs} bytes")
    index_end = spec.INDEX_OFFSET + (h.num_docs + 1) * 8
    start = h.block_table_offset
    end = start + h.num_blocks * spec.BLOCK_ENTRY_SIZE
    where = spec.BLOCK_TABLE_OFFSET_OFFSET
    if start > h.file_size or end > h.file_size:
        raise _fail(name, "block_table_offset", where, f"the table [{start}, {end}) ends past the "
                    f"end of the {h.file_size}-byte file")
    if end > h.tokens_offset:
        raise _fail(name, "block_table_offset", where, f"the table [{start}, {end}) runs into the "
                    f"payload, which starts at byte {h.tokens_offset}")
    if start < index_end or start % 8:
        raise _fail(name, "block_table_offset", where, f"is {start}, must be a multiple of 8 at or "
                    f"after the end of the document index (byte {index_end})")
    if len(meta) < h.tokens_offset:
        raise _fail(name, "tokens_offset", 40, f"the metadata section is [0, {h.tokens_offset}) but "
                    f"only {len(meta)} bytes were given")
    header = bytearray(meta[:spec.HEADER_SIZE])
    header[12:16] = bytes(4)
    crc = zlib.crc32(meta[start:end], zlib.crc32(meta[spec.INDEX_OFFSET:index_end], zlib.crc32(header)))
    if crc != h.crc32:
        raise FastdataIntegrityError(
            f"{name}: field 'header_crc32' at byte 12: CRC-32 mismatch: stored {h.crc32:#x}, "
            f"computed {crc:#x} over the header, document index and block table (the file is corrupt)")
    hashes = np.frombuffer(meta, dtype="V16", count=h.num_blocks, offset=start)
    offsets = h.tokens_offset + np.arange(h.num_blocks, dtype=np.int64) * bs
    lengths = np.minimum(bs, h.file_size - offsets)
    return BlockTable(name, bs, h.tokens_offset, offsets, lengths, offsets, lengths, hashes)


def _parse_zstd(meta: memoryview, name: str, file_size: int | None,
                raw_size: int | None) -> BlockTable:
    if len(meta) < spec.ZSTD_HEADER_SIZE:
        raise _fail(name, "header", 0, f"only {len(meta)} of the {spec.ZSTD_HEADER_SIZE} header bytes")
    _, version, declared, bs, num_blocks = spec.ZSTD_HEADER.unpack_from(meta)
    if version != spec.ZSTD_VERSION_HASHED:
        state = "no frame hashes (wrapper version 1: verify it whole)" if version == 1 else \
            f"unsupported wrapper version {version} (this fastdata reads <= {spec.ZSTD_VERSION_HASHED})"
        raise _fail(name, "version", 8, state)
    if raw_size is not None and declared != raw_size:
        raise _fail(name, "raw_size", 16, f"is {declared}, the manifest says {raw_size}")
    if not 0 < bs <= spec.MAX_BLOCK_SIZE:
        raise _fail(name, "block_size", 24, f"is {bs}, must be from 1 to {spec.MAX_BLOCK_SIZE}")
    if bs > max(declared, 1):
        raise _fail(name, "block_size", 24, f"is {bs}, larger than the {declared}-byte raw shard")
    if num_blocks != -(-declared // bs):
        raise _fail(name, "num_blocks", 32, f"is {num_blocks}, but raw_size {declared} holds "
                    f"{-(-declared // bs)} blocks of {bs} bytes")
    meta_bytes = spec.ZSTD_HEADER_SIZE + num_blocks * spec.ZSTD_HASHED_ENTRY.size
    if file_size is not None and meta_bytes > file_size:
        raise _fail(name, "num_blocks", 32, f"its table would end at byte {meta_bytes}, past the end "
                    f"of the {file_size}-byte file")
    if len(meta) < meta_bytes:
        raise _fail(name, "num_blocks", 32, f"its table ends at byte {meta_bytes} but only "
                    f"{len(meta)} bytes were given")
    table = np.frombuffer(meta, dtype=[("stored", "<u8"), ("raw", "<u8"), ("hash", "V16")],
                          count=num_blocks, offset=spec.ZSTD_HEADER_SIZE)
    raw_lengths = np.minimum(bs, declared - np.arange(num_blocks, dtype=np.int64) * bs)
    bad = np.flatnonzero((table["raw"].astype(np.int64) != raw_lengths)
                         | (table["stored"] > 2 * bs + _MAX_FRAME_SLACK))
    if len(bad):
        i = int(bad[0])
        raise _fail(name, f"block_table[{i}]", spec.ZSTD_HEADER_SIZE + i * spec.ZSTD_HASHED_ENTRY.size,
                    f"stored {int(table['stored'][i])}, raw {int(table['raw'][i])} bytes is "
                    f"inconsistent with block_size {bs}")
    lengths = table["stored"].astype(np.int64)
    offsets = meta_bytes + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    end = meta_bytes + int(lengths.sum())
    if file_size is not None and end != file_size:
        raise _fail(name, "block_table", spec.ZSTD_HEADER_SIZE, f"the frames end at byte {end}, "
                    f"the file is {file_size} bytes")
    raw_offsets = np.arange(num_blocks, dtype=np.int64) * bs
    return BlockTable(name, bs, meta_bytes, offsets, lengths, raw_offsets, raw_lengths,
                      table["hash"].copy(), compressed=True)


def check_meta(meta: bytes | memoryview, entry: ShardInfo) -> BlockTable:
    """Check the metadata section of the shard ``entry`` against the manifest, then parse it.

    Raises:
        FastdataIntegrityError: ``meta`` is not ``entry.meta_bytes`` long or does not hash to
            ``entry.meta_xxh3_128``.
        FastdataFormatError: the manifest has no metadata record for this shard (v1), or the
            table is malformed.
    """
    if not entry.meta_bytes:
        raise FastdataFormatError(f"{entry.name}: the manifest has no block table for this shard "
                                  "(format v1: verify it whole)")
    if len(meta) != entry.meta_bytes:
        raise FastdataIntegrityError(f"{entry.name}: metadata section is {len(meta)} bytes, the "
                                     f"manifest's field 'meta_bytes' says {entry.meta_bytes}")
    actual = xxhash.xxh3_128_hexdigest(meta)
    if actual != entry.meta_xxh3_128:
        raise FastdataIntegrityError(
            f"{entry.name}: metadata section [0, {entry.meta_bytes}) hashes to {actual}, the "
            f"manifest's field 'meta_xxh3_128' says {entry.meta_xxh3_128} (block table corrupt or "
            "from another dataset)")
    table = parse_block_table(meta, entry.name, file_size=entry.stored_bytes, raw_size=entry.raw_bytes)
    if table.block_size != entry.block_size or table.meta_bytes != entry.meta_bytes:
        raise FastdataFormatError(f"{entry.name}: block_size {table.block_size} in the shard, "
                                  f"{entry.block_size} in the manifest's field 'block_size'")
    return table


def verify_block(table: BlockTable, i: int, data: bytes | memoryview) -> None:
    """Check block ``i``'s raw bytes (for a zstd shard: the decompressed frame).

    Raises:
        IndexError: there is no block ``i``.
        FastdataIntegrityError: wrong length or hash; names the shard, block and byte range.
    """
    if not 0 <= i < len(table):
        raise IndexError(f"{table.name}: block {i} out of range ({len(table)} blocks)")
    start, end = table.byte_range(i)
    where = f"{table.name}: block {i} (bytes [{start}, {end})"
    if table.compressed:
        raw = int(table.raw_offsets[i])
        where += f", raw bytes [{raw}, {raw + int(table.raw_lengths[i])})"
    if len(data) != int(table.raw_lengths[i]):
        raise FastdataIntegrityError(f"{where}) is {len(data)} bytes, expected {int(table.raw_lengths[i])}")
    actual = xxhash.xxh3_128_digest(data)
    if actual != bytes(table.hashes[i]):
        raise FastdataIntegrityError(f"{where}) hashes to {actual.hex()}, the block table says "
                                     f"{bytes(table.hashes[i]).hex()} (corrupt block: fetch it again)")


def _decompress(frame: bytes, expected: int) -> bytes:
    """A frame's raw bytes, never more than ``expected`` + 1."""
    with zstandard.ZstdDecompressor(max_window_size=max(expected, 1 << 20) * 2).stream_reader(
            frame) as reader:
        return reader.read(expected + 1)


#: verify_blocks reads up to this many bytes at a time (whole blocks).
READ_BYTES = 64 << 20


def raw_block(table: BlockTable, i: int, stored: bytes | memoryview) -> bytes | memoryview:
    """Block ``i``'s raw bytes from its stored bytes (``table.byte_range(i)`` of the file),
    verified: a zstd frame is decompressed (never beyond its recorded raw size) first.

    Raises:
        FastdataIntegrityError: the bytes are not the block (bad frame, length or hash);
            names the shard, the block and its byte range.
    """
    data = stored
    if table.compressed:
        start, end = table.byte_range(i)
        try:
            data = _decompress(bytes(stored), int(table.raw_lengths[i]))
        except zstandard.ZstdError as e:
            raise FastdataIntegrityError(f"{table.name}: block {i} (bytes [{start}, {end})) is not "
                                         f"a valid zstd frame: {e}") from None
    verify_block(table, i, data)
    return data


def _check_one(table: BlockTable, i: int, data: bytes) -> BadBlock | None:
    try:
        raw_block(table, i, data)
    except FastdataIntegrityError as e:
        start, end = table.byte_range(i)
        return BadBlock(i, start, end, str(e))
    return None


def verify_blocks(source: str | Callable[[int, int], bytes], table: BlockTable) -> list[BadBlock]:
    """Check every block of a shard; the blocks that do not match, in order.

    Args:
        source: the local file's path, or ``read(start, end)`` returning those bytes of the
            stored shard (a ranged GET); called for runs of whole blocks of at most
            ``READ_BYTES`` (one block when a block is larger).
        table: the shard's block table (:func:`check_meta`).
    """
    if isinstance(source, str):
        with open(source, "rb") as f:
            return verify_blocks(lambda a, b: os.pread(f.fileno(), b - a, a), table)
    bad = []
    i = 0
    while i < len(table):
        j = i + 1
        while j < len(table) and table.byte_range(j)[1] - table.byte_range(i)[0] <= READ_BYTES:
            j += 1
        base = table.byte_range(i)[0]
        data = source(base, table.byte_range(j - 1)[1])
        for k in range(i, j):
            start, end = table.byte_range(k)
            problem = _check_one(table, k, data[start - base:end - base])
            if problem is not None:
                bad.append(problem)
        i = j
    return bad


def read_meta(path: str, entry: ShardInfo) -> BlockTable:
    """Read the metadata section of the local shard at ``path`` and check it (:func:`check_meta`)."""
    with open(path, "rb") as f:
        return check_meta(f.read(entry.meta_bytes), entry)


__all__ = ["BadBlock", "BlockTable", "block_hashes", "check_meta", "parse_block_table", "raw_block",
           "read_meta", "verify_block", "verify_blocks"]
