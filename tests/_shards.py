"""Raw shards that tests build byte by byte, plus a reference validator for docs/format.md."""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Sequence

import numpy as np

from fastdata.format.spec import DTYPES, HEADER_SIZE, PAGE, Layout, pack_header

# Byte offset and struct code of each header field (docs/format.md).
FIELDS = {
    "magic": (0, "8s"), "version": (8, "H"), "dtype": (10, "B"), "flags": (11, "B"),
    "header_crc32": (12, "I"), "num_docs": (16, "Q"), "num_tokens": (24, "Q"),
    "index_offset": (32, "Q"), "tokens_offset": (40, "Q"), "mask_offset": (48, "Q"),
    "file_size": (56, "Q"), "block_size": (64, "Q"), "num_blocks": (72, "Q"),
    "block_table_offset": (80, "Q"),
}
# What every native FormatError message contains.
ERROR_RE = re.compile(r"field '([a-z_0-9]+(?:\[\d+\])?)' at byte (\d+)")


def shard_bytes(docs: Sequence[np.ndarray], dtype_code: int,
                masks: Sequence[np.ndarray] | None = None) -> bytes:
    """The bytes of a raw shard holding ``docs`` (and their loss ``masks``)."""
    lengths = [len(d) for d in docs]
    num_tokens = sum(lengths)
    layout = Layout.plan(len(docs), num_tokens, dtype_code, masks is not None)
    index = np.concatenate([[0], np.cumsum(lengths, dtype=np.uint64)]).astype("<u8").tobytes()
    data = bytearray(layout.file_size)
    data[:HEADER_SIZE] = pack_header(layout, index)
    data[HEADER_SIZE:HEADER_SIZE + len(index)] = index
    tokens = np.concatenate([np.asarray(d, dtype=np.int64) for d in docs]) if docs else np.zeros(0)
    payload = tokens.astype(DTYPES[dtype_code]).tobytes()
    data[layout.tokens_offset:layout.tokens_offset + len(payload)] = payload
    if masks is not None:
        flat = np.concatenate([np.asarray(m, dtype=np.uint8) for m in masks]) if masks else b""
        data[layout.mask_offset:layout.mask_offset + num_tokens] = bytes(flat)
    return bytes(data)


def write_raw_shard(path: str | os.PathLike[str], docs: Sequence[np.ndarray], dtype_code: int,
                    masks: Sequence[np.ndarray] | None = None) -> str:
    """Write a raw shard of ``docs`` to ``path`` (atomically) and return the path."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(shard_bytes(docs, dtype_code, masks))
    os.replace(tmp, path)
    return path


def fix_crc(data: bytearray) -> None:
    """Recompute the header CRC of ``data`` in place from its header and index fields."""
    num_docs = struct.unpack_from("<Q", data, 16)[0]
    index_end = min(len(data), HEADER_SIZE + 8 * (num_docs + 1))
    header = bytearray(data[:HEADER_SIZE])
    header[12:16] = b"\0\0\0\0"
    struct.pack_into("<I", data, 12, zlib.crc32(bytes(data[HEADER_SIZE:index_end]), zlib.crc32(header)))


def set_field(data: bytearray, name: str, value: object, crc: bool = True) -> None:
    """Overwrite header field ``name`` and, unless ``crc`` is false, refresh the CRC."""
    offset, code = FIELDS[name]
    struct.pack_into("<" + code, data, offset, value)
    if crc:
        fix_crc(data)


def reference_accepts(data: bytes) -> bool:
    """Whether docs/format.md's checks accept ``data``, written independently of the C++."""
    if len(data) < HEADER_SIZE:
        return False
    (magic, version, dtype, flags, crc, num_docs, num_tokens, index_offset, tokens_offset,
     mask_offset, file_size) = struct.unpack_from("<8sHBBIQQQQQQ", data)
    if magic != b"FDSHARD\0" or version != 1 or dtype not in DTYPES or flags & ~3:
        return False
    blocks = data[64:88] if flags & 2 else b""  # v1.1: block fields; reserved (zero) in v1
    if any(data[64 + len(blocks):HEADER_SIZE]) or file_size != len(data) or index_offset != HEADER_SIZE:
        return False
    index_end = HEADER_SIZE + 8 * (num_docs + 1)  # Python ints cannot overflow
    tokens_end = tokens_offset + num_tokens * DTYPES[dtype].itemsize
    if index_end > tokens_offset or tokens_offset % PAGE or tokens_end > file_size:
        return False
    end = tokens_end
    if flags & 1:
        if mask_offset % PAGE or mask_offset < tokens_end:
            return False
        end = mask_offset + num_tokens
    elif mask_offset != 0:
        return False
    if end != file_size:
        return False
    table = b""
    if blocks:
        block_size, num_blocks, table_offset = struct.unpack("<QQQ", blocks)
        payload = file_size - tokens_offset
        largest = max(4096, 1 << max(payload - 1, 0).bit_length())
        if not (4096 <= block_size <= 64 << 20 and block_size & (block_size - 1) == 0
                and block_size <= largest and num_blocks == -(-payload // block_size)):
            return False
        table_end = table_offset + 16 * num_blocks
        if table_offset < index_end or table_offset % 8 or table_end > tokens_offset:
            return False
        table = data[table_offset:table_end]
    header = bytearray(data[:HEADER_SIZE])
    header[12:16] = b"\0\0\0\0"
    if zlib.crc32(table, zlib.crc32(data[HEADER_SIZE:index_end], zlib.crc32(header))) != crc:
        return False
    index = np.frombuffer(data, "<u8", num_docs + 1, HEADER_SIZE)
    return bool(index[0] == 0 and index[-1] == num_tokens and np.all(index[1:] >= index[:-1]))
