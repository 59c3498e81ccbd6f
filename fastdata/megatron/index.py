"""The Megatron-Core ``.idx`` file, parsed and checked against its ``.bin``.

The layout (``docs/megatron.md``; written by ``megatron.core.datasets.indexed_dataset``):
a 34-byte little-endian header (magic, version, dtype code, sequence count, document
count), then the sequence lengths (int32), the sequences' byte offsets in the ``.bin``
(int64), the document indices (int64) and, for multimodal datasets only, one int8 mode per
sequence. Megatron's own reader checks the header with ``assert``; here every field is
validated and a bad one raises :class:`FastdataFormatError` naming the file, the field and
its byte offset. Pure numpy: no I/O happens in this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import xxhash

from fastdata.errors import FastdataFormatError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER = struct.Struct("<9sQBQQ")
HEADER_SIZE = HEADER.size  # 34
FIELD_OFFSETS = {"magic": 0, "version": 9, "dtype": 17, "sequence_count": 18, "document_count": 26}

#: Megatron's ``DType`` codes (indexed_dataset.py) that hold token ids.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<u1"), 2: np.dtype("<i1"), 3: np.dtype("<i2"), 4: np.dtype("<i4"),
    5: np.dtype("<i8"), 8: np.dtype("<u2"),
}
FLOAT_CODES = {6: "float64", 7: "float32"}

#: Sequences checked at a time, so validating a huge index needs bounded memory.
_CHUNK = 1 << 22


def format_error(path: str, field: str, byte_offset: int, message: str) -> FastdataFormatError:
    """A FastdataFormatError worded and annotated like the native reader's."""
    error = FastdataFormatError(f"{path}: field '{field}' at byte {byte_offset}: {message}")
    error.path, error.field, error.byte_offset = path, field, byte_offset
    return error


@dataclass(frozen=True)
class MegatronIndex:
    """A validated ``.idx``: zero-copy arrays over its bytes."""

    path: str  #: where it was read from (for messages)
    dtype: np.dtype  #: token dtype of the ``.bin``
    lengths: np.ndarray  #: int32 tokens per sequence
    pointers: np.ndarray  #: int64 byte offset of each sequence in the ``.bin``
    document_indices: np.ndarray  #: int64; document k is sequences [d[k], d[k+1])
    multimodal: bool  #: whether per-sequence modes follow (fastdata ignores them)
    identity: str  #: xxh3-128 over the ``.idx`` bytes and the ``.bin`` size

    @property
    def num_sequences(self) -> int:
        return len(self.lengths)

    @property
    def bin_size(self) -> int:
        """Bytes the ``.bin`` must have: the end of the last sequence."""
        if not len(self.lengths):
            return 0
        return int(self.pointers[-1]) + int(self.lengths[-1]) * self.dtype.itemsize


def parse_index(data: bytes | memoryview | np.ndarray, path: str, bin_path: str, bin_size: int
                ) -> MegatronIndex:
    """Parse and validate the ``.idx`` bytes ``data`` against the ``.bin``'s size.

    Args:
        data: the whole ``.idx`` file (bytes or a memory map; arrays are views of it).
        path: the ``.idx`` file, for messages.
        bin_path: the ``.bin`` file, for messages.
        bin_size: the ``.bin``'s size in bytes.

    Returns:
        The parsed index.

    Raises:
        FastdataFormatError: bad magic, version or dtype, counts that do not match the
            file size, a negative length, sequences that are not back to back in the
            ``.bin``, document indices that are not a non-decreasing run from 0 to the
            sequence count, or a ``.bin`` whose size differs from what the index needs.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    size = len(buf)
    if size >= len(MAGIC) and bytes(buf[: len(MAGIC)]) != MAGIC:
        raise format_error(path, "magic", 0, f"bad magic {bytes(buf[:len(MAGIC)])!r}, expected {MAGIC!r} "
                           "(not a Megatron-Core .idx file)")
    if size < HEADER_SIZE:
        raise format_error(path, "header", 0, f"file is {size} bytes, shorter than the {HEADER_SIZE}-byte "
                           "header (truncated?)")
    _, version, code, num_seq, num_docs = HEADER.unpack_from(bytes(buf[:HEADER_SIZE]))
    if version != VERSION:
        raise format_error(path, "version", FIELD_OFFSETS["version"],
                           f"version {version} is not supported (this fastdata reads {VERSION})")
    if code in FLOAT_CODES:
        raise format_error(path, "dtype", FIELD_OFFSETS["dtype"],
                           f"dtype code {code} ({FLOAT_CODES[code]}) holds floats, not token ids")
    if code not in DTYPES:
        known = ", ".join(f"{c} = {d.name}" for c, d in sorted(DTYPES.items()))
        raise format_error(path, "dtype", FIELD_OFFSETS["dtype"],
                           f"unknown dtype code {code} (known: {known})")
    dtype = DTYPES[code]
    base = HEADER_SIZE + 12 * num_seq + 8 * num_docs
    if size not in (base, base + num_seq):
        raise format_error(
            path, "sequence_count", FIELD_OFFSETS["sequence_count"],
            f"{num_seq} sequences and {num_docs} document indices need {base} bytes "
            f"({base + num_seq} with modes), but the file has {size} (truncated, or not a Megatron index)")
    lengths = np.frombuffer(buf, "<i4", num_seq, HEADER_SIZE)
    pointers = np.frombuffer(buf, "<i8", num_seq, HEADER_SIZE + 4 * num_seq)
    documents = np.frombuffer(buf, "<i8", num_docs, HEADER_SIZE + 12 * num_seq)
    _check_sequences(path, lengths, pointers, dtype.itemsize)
    _check_documents(path, documents, num_seq, HEADER_SIZE + 12 * num_seq)
    index = MegatronIndex(path, dtype, lengths, pointers, documents, size != base,
                          _identity(buf, bin_size))
    if index.bin_size != bin_size:
        last = max(num_seq - 1, 0)
        raise format_error(
            bin_path, "size", min(bin_size, index.bin_size),
            f"the .bin is {bin_size} bytes but {path} (field 'sequence_pointers[{last}]' at byte "
            f"{HEADER_SIZE + 4 * num_seq + 8 * last}) says its last sequence ends at byte {index.bin_size} "
            "(a truncated .bin, or an .idx written for another .bin)")
    return index


def _check_sequences(path: str, lengths: np.ndarray, pointers: np.ndarray, itemsize: int) -> None:
    """Lengths are >= 0 and every sequence starts where the previous one ends, from byte 0."""
    n = len(lengths)
    lengths_at, pointers_at = HEADER_SIZE, HEADER_SIZE + 4 * n
    expected_next = 0
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        chunk = lengths[lo:hi].astype(np.int64)
        bad = np.flatnonzero(chunk < 0)
        if len(bad):
            i = lo + int(bad[0])
            raise format_error(path, f"sequence_lengths[{i}]", lengths_at + 4 * i,
                               f"sequence length {int(lengths[i])} is negative")
        ends = np.cumsum(chunk * itemsize) + expected_next
        expected = np.concatenate([[expected_next], ends[:-1]])
        bad = np.flatnonzero(pointers[lo:hi] != expected)
        if len(bad):
            i = lo + int(bad[0])
            raise format_error(
                path, f"sequence_pointers[{i}]", pointers_at + 8 * i,
                f"sequence {i} starts at byte {int(pointers[i])} of the .bin, but the sequences before "
                f"it end at byte {int(expected[i - lo])} (Megatron writes sequences back to back)")
        expected_next = int(ends[-1])


def _check_documents(path: str, documents: np.ndarray, num_seq: int, at: int) -> None:
    """Document indices run from 0 to the sequence count without decreasing."""
    if not len(documents):
        raise format_error(path, "document_count", FIELD_OFFSETS["document_count"],
                           "document count is 0; a Megatron index holds at least the leading 0")
    if int(documents[0]) != 0:
        raise format_error(path, "document_indices[0]", at, f"is {int(documents[0])}, must be 0")
    bad = np.flatnonzero(np.diff(documents) < 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise format_error(path, f"document_indices[{i}]", at + 8 * i,
                           f"is {int(documents[i])}, smaller than the one before ({int(documents[i - 1])})")
    last = len(documents) - 1
    if int(documents[last]) != num_seq:
        raise format_error(path, f"document_indices[{last}]", at + 8 * last,
                           f"the last document index is {int(documents[last])}, must equal the sequence "
                           f"count ({num_seq})")


def _identity(buf: np.ndarray, bin_size: int) -> str:
    h = xxhash.xxh3_128(b"megatron-indexed-dataset/1/")
    h.update(str(bin_size).encode() + b"/")
    h.update(buf.data)  # ndarray.data is memoryview(buf)
    return h.hexdigest()


def plan_shards(lengths: np.ndarray, itemsize: int, shard_bytes: int) -> np.ndarray:
    """Cut the sequences into runs of about ``shard_bytes`` bytes of the ``.bin``.

    Like ``fastdata pack``, a shard ends with the sequence that brings it to at least
    ``shard_bytes``; the last shard takes the rest. Reading in place and ``fastdata import
    megatron`` use the same cut, so both give the same shard table.

    Returns:
        int64 sequence boundaries: shard ``j`` is sequences ``[b[j], b[j+1])``.
    """
    target = max(1, -(-shard_bytes // itemsize))
    cum = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    n = len(lengths)
    bounds = [0]
    while bounds[-1] < n:
        start = bounds[-1]
        end = int(np.searchsorted(cum, cum[start] + target, side="left"))
        bounds.append(min(max(end, start + 1), n))
    return np.asarray(bounds, dtype=np.int64)
