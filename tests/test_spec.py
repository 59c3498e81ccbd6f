"""The format is specified once: C++ format.h, Python spec.py and docs/format.md agree."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
from _shards import shard_bytes

from fastdata import _native
from fastdata.format import spec
from fastdata.format.reader import open_shard

FIELD_ORDER = ["magic", "version", "dtype", "flags", "header_crc32", "num_docs", "num_tokens",
               "index_offset", "tokens_offset", "mask_offset", "file_size", "block_size", "num_blocks",
               "block_table_offset", "reserved"]
DOC = Path(__file__).resolve().parents[1] / "docs" / "format.md"


def python_field_offsets():
    """Offsets of spec._HEADER's fields, derived from its struct format string."""
    fmt = spec._HEADER.format
    order, codes = fmt[0], re.findall(r"\d*[a-zA-Z]", fmt[1:])
    assert len(codes) == len(FIELD_ORDER)
    return {name: struct.calcsize(order + "".join(codes[:k])) for k, name in enumerate(FIELD_ORDER)}


def doc_field_offsets():
    """Offsets from the raw shard table of docs/format.md."""
    raw = DOC.read_text(encoding="utf-8").split("## Compressed shard")[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*\d+\s*\|\s*`?([a-z_0-9]+)`?\s*\|", raw, re.MULTILINE)
    return {name: int(offset) for offset, name in rows}


def test_constants_match():
    native = _native.FORMAT
    assert native["magic"] == spec.MAGIC
    assert native["version"] == spec.VERSION
    assert native["header_size"] == spec.HEADER_SIZE == spec._HEADER.size
    assert native["page"] == spec.PAGE
    assert native["index_offset"] == spec.INDEX_OFFSET
    assert native["flag_loss_mask"] == spec.FLAG_LOSS_MASK
    assert native["known_flags"] == spec.KNOWN_FLAGS == 3
    assert native["flag_block_table"] == spec.FLAG_BLOCK_TABLE == 2
    assert native["block_entry_size"] == spec.BLOCK_ENTRY_SIZE == 16
    assert (native["min_block_size"], native["max_block_size"]) == (spec.MIN_BLOCK_SIZE, spec.MAX_BLOCK_SIZE)
    offsets = native["field_offsets"]
    assert (offsets["block_size"], offsets["num_blocks"], offsets["block_table_offset"]) == (
        spec.BLOCK_SIZE_OFFSET, spec.NUM_BLOCKS_OFFSET, spec.BLOCK_TABLE_OFFSET_OFFSET)
    assert offsets["reserved"] == spec.RESERVED_OFFSET
    assert native["dtype_codes"] == spec.DTYPE_CODES
    assert native["itemsizes"] == {code: dt.itemsize for code, dt in spec.DTYPES.items()}
    assert native["reserved_size"] == spec.HEADER_SIZE - native["field_offsets"]["reserved"]


def test_field_offsets_match_python_struct_and_docs():
    native = _native.FORMAT["field_offsets"]
    assert native == python_field_offsets()
    assert native == doc_field_offsets()


def test_python_header_is_read_the_same_by_both(tmp_path):
    docs = [np.arange(10), np.arange(3), np.arange(70000) % 65536]
    data = shard_bytes(docs, 2, masks=[np.ones(len(d), np.uint8) for d in docs])
    path = tmp_path / "s.fds"
    path.write_bytes(data)
    header = spec.unpack_header(data[: spec.HEADER_SIZE])
    with open_shard(path) as shard:  # also proves pack_header's CRC is the one C++ checks
        assert (shard.num_docs, shard.num_tokens, shard.file_size) == (
            header.num_docs, header.num_tokens, header.file_size)
        assert shard.dtype == spec.DTYPE_NAMES[header.dtype_code]
        assert shard.has_loss_mask == bool(header.flags & spec.FLAG_LOSS_MASK)


def test_v11_header_is_read_the_same_by_both(tmp_path):
    """A v1.1 shard (block table after the index, CRC over it too) opens natively; the Python
    header fields are where C++ and the docs say."""
    from fastdata.format.writer import write_shard

    tokens = (np.arange(30_000) * 7) % 60_000
    mask = (np.arange(30_000) % 3 == 0).astype(np.uint8)
    path = tmp_path / "b.fds"
    written = write_shard(str(path), tokens, np.array([10_000, 20_000]), mask, "uint16", block_size=8192)
    data = path.read_bytes()
    header = spec.unpack_header(data[: spec.HEADER_SIZE])
    payload = header.file_size - header.tokens_offset
    assert header.flags == spec.FLAG_LOSS_MASK | spec.FLAG_BLOCK_TABLE
    assert (header.block_size, header.num_blocks) == (8192, -(-payload // 8192))
    assert header.block_table_offset == spec.INDEX_OFFSET + 3 * 8
    table_end = header.block_table_offset + 16 * header.num_blocks
    assert header.tokens_offset == written.meta_bytes == spec.align(table_end)
    with open_shard(path) as shard:
        assert (shard.num_docs, shard.num_tokens, shard.file_size, shard.has_loss_mask) == (
            2, 30_000, header.file_size, True)
        assert np.array_equal(np.asarray(shard.tokens(0, 30_000)), tokens)


ZSTD_FIELD_ORDER = ["magic", "version", "raw_size", "block_size", "num_blocks"]


def test_zstd_header_struct_matches_docs():
    """spec.ZSTD_HEADER (the one struct compression.py and blocks.py use) is the wrapper header
    of docs/format.md: its size, and every named field at the documented offset and size."""
    fmt = spec.ZSTD_HEADER.format
    order, codes = fmt[0], re.findall(r"\d*[a-zA-Z]", fmt[1:])
    fields = [c for c in codes if not c.endswith("x")]
    assert len(fields) == len(ZSTD_FIELD_ORDER)
    offsets, at = {}, 0
    for code in codes:
        if not code.endswith("x"):
            offsets[ZSTD_FIELD_ORDER[len(offsets)]] = (at, struct.calcsize(order + code))
        at += struct.calcsize(order + code)
    section = DOC.read_text(encoding="utf-8").split("## Compressed shard")[1].split("\n## ")[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*`([a-z_]+)`\s*\|", section, re.MULTILINE)
    assert offsets == {name: (int(offset), int(size)) for offset, size, name in rows}
    assert offsets == {"magic": (0, 8), "version": (8, 2), "raw_size": (16, 8), "block_size": (24, 8),
                       "num_blocks": (32, 8)}
    assert spec.ZSTD_HEADER.size == spec.ZSTD_HEADER_SIZE == 64
    packed = spec.ZSTD_HEADER.pack(spec.ZSTD_MAGIC, spec.ZSTD_VERSION_HASHED, 1000, 512, 2)
    assert packed[:10] == spec.ZSTD_MAGIC + b"\x02\x00" and packed[10:16] == bytes(6)
    assert packed[40:] == bytes(24)
