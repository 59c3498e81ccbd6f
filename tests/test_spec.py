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
               "index_offset", "tokens_offset", "mask_offset", "file_size", "reserved"]
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
    assert native["known_flags"] == spec.KNOWN_FLAGS
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
