"""The zstd shard wrapper (``*.fds.zst``): independent frames with recorded raw sizes.

Compressing cuts a raw shard into blocks of at most ``block_size`` bytes, each an
independent zstd frame, so decompression is bounded block by block: a frame never
produces more than its recorded raw size, the total never exceeds the manifest's
``raw_bytes``, and the decoder refuses windows larger than the block size. Wrapper
version 2 (format v1.1) also records the xxh3-128 of each frame's raw bytes, so a frame can
be verified alone (``fastdata.format.blocks``) and is verified as it is decompressed. See
``docs/format.md``.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

import xxhash
import zstandard

from fastdata._testing import disk_point
from fastdata.atomic import atomic_output
from fastdata.errors import FastdataFormatError, FastdataIntegrityError
from fastdata.format.hashing import new_hasher
from fastdata.format.spec import (
    ZSTD_BLOCK_ENTRY,
    ZSTD_HASHED_ENTRY,
    ZSTD_HEADER,
    ZSTD_HEADER_SIZE,
    ZSTD_MAGIC,
    ZSTD_VERSION,
    ZSTD_VERSION_HASHED,
)
from fastdata.format.writer import WrittenFile

DEFAULT_BLOCK_SIZE = 4 << 20
MAX_BLOCK_SIZE = 64 << 20


def compress_shard(raw_path: str, out_path: str, *, level: int = 3,
                   block_size: int = DEFAULT_BLOCK_SIZE, frame_hashes: bool = True) -> WrittenFile:
    """Write the zstd wrapper of the raw shard at ``raw_path`` to ``out_path`` atomically.

    With ``frame_hashes`` (the default) the wrapper is version 2 (format v1.1): each table
    entry holds the xxh3-128 of the frame's raw bytes, the recorded block size is at most
    the raw size, and the result carries the metadata section's size and hash. Without, it
    is version 1.
    """
    if frame_hashes:
        block_size = min(block_size, max(os.path.getsize(raw_path), 1))
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=True)
    frames: list[bytes] = []
    entries: list[bytes] = []
    raw_size = 0
    with open(raw_path, "rb") as f:
        while block := f.read(block_size):
            frames.append(cctx.compress(block))
            raw_size += len(block)
            entries.append(ZSTD_HASHED_ENTRY.pack(len(frames[-1]), len(block), xxhash.xxh3_128_digest(block))
                           if frame_hashes else ZSTD_BLOCK_ENTRY.pack(len(frames[-1]), len(block)))
    version = ZSTD_VERSION_HASHED if frame_hashes else ZSTD_VERSION
    meta = ZSTD_HEADER.pack(ZSTD_MAGIC, version, raw_size, block_size, len(frames)) + b"".join(entries)
    hasher = new_hasher()
    size = 0
    with atomic_output(out_path) as out:
        for part in (meta, *frames):
            out.write(part)
            hasher.update(part)
            size += len(part)
    if not frame_hashes:
        return WrittenFile(size, hasher.hexdigest())
    return WrittenFile(size, hasher.hexdigest(), len(meta), xxhash.xxh3_128_hexdigest(meta), block_size)


def _read_exact(f: BinaryIO, n: int, path: str, what: str, offset: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise FastdataFormatError(
            f"{path}: truncated {what} at byte {offset}: expected {n} bytes, got {len(data)}"
        )
    return data


def _check_header(raw: bytes, path: str, raw_size: int) -> tuple[int, int, int]:
    magic, version, declared, block_size, num_blocks = ZSTD_HEADER.unpack(raw)
    if magic != ZSTD_MAGIC:
        raise FastdataFormatError(f"{path}: bad magic {magic!r} at byte 0 (not a fastdata .fds.zst)")
    if version > ZSTD_VERSION_HASHED or version < 1:
        raise FastdataFormatError(
            f"{path}: unsupported format version {version} (this fastdata reads <= {ZSTD_VERSION_HASHED})"
        )
    if declared != raw_size:
        raise FastdataFormatError(
            f"{path}: field raw_size at byte 16 is {declared}, the manifest says {raw_size}"
        )
    if not 0 < block_size <= MAX_BLOCK_SIZE:
        raise FastdataFormatError(f"{path}: field block_size at byte 24 is {block_size} "
                                  f"(limit {MAX_BLOCK_SIZE})")
    if num_blocks != -(-raw_size // block_size):
        raise FastdataFormatError(
            f"{path}: field num_blocks at byte 32 is {num_blocks}, expected "
            f"{-(-raw_size // block_size)} for raw_size {raw_size} and block_size {block_size}"
        )
    return version, block_size, num_blocks


def _decompress_frame(frame: bytes, expected: int, dctx: zstandard.ZstdDecompressor,
                      path: str, offset: int) -> bytes:
    declared = zstandard.frame_content_size(frame)
    if declared not in (-1, expected):
        raise FastdataFormatError(
            f"{path}: zstd frame at byte {offset} declares {declared} bytes, "
            f"limit is the recorded raw size {expected}"
        )
    try:
        with dctx.stream_reader(io.BytesIO(frame)) as reader:
            out = reader.read(expected + 1)
    except zstandard.ZstdError as e:
        raise FastdataFormatError(f"{path}: zstd frame at byte {offset} is invalid: {e}") from None
    if len(out) != expected:
        raise FastdataFormatError(
            f"{path}: zstd frame at byte {offset} expands to "
            f"{'more than' if len(out) > expected else 'only'} {min(len(out), expected)} bytes, "
            f"recorded raw size is {expected}"
        )
    return out


def decompress_shard(src_path: str, dst_path: str, raw_size: int, *, atomic: bool = True) -> WrittenFile:
    """Decompress ``src_path`` into a raw shard at ``dst_path``, never beyond ``raw_size``.

    With ``atomic=False`` the bytes go straight into ``dst_path``, for a caller whose
    destination is already a private temp file (the node cache publishes it itself).

    Raises:
        FastdataFormatError: the wrapper is malformed, or a frame is corrupt or would
            expand beyond its recorded size (a decompression bomb).
    """
    hasher = new_hasher()
    target = atomic_output(dst_path) if atomic else open(dst_path, "wb")
    with open(src_path, "rb") as f, target as out:
        header = _read_exact(f, ZSTD_HEADER_SIZE, src_path, "header", 0)
        version, block_size, num_blocks = _check_header(header, src_path, raw_size)
        entry = ZSTD_HASHED_ENTRY if version == ZSTD_VERSION_HASHED else ZSTD_BLOCK_ENTRY
        file_size = os.fstat(f.fileno()).st_size
        if ZSTD_HEADER_SIZE + entry.size * num_blocks > file_size:  # before any allocation
            raise FastdataFormatError(
                f"{src_path}: field num_blocks at byte 32 is {num_blocks}: its block table would end at "
                f"byte {ZSTD_HEADER_SIZE + entry.size * num_blocks}, past the end of the file "
                f"({file_size} bytes)")
        table = _read_exact(f, entry.size * num_blocks, src_path, "block table", 64)
        entries = [entry.unpack_from(table, i * entry.size) for i in range(num_blocks)]
        dctx = zstandard.ZstdDecompressor(max_window_size=max(block_size, 1 << 20) * 2)
        offset = ZSTD_HEADER_SIZE + len(table)
        remaining = raw_size
        for i, (stored, raw, *digest) in enumerate(entries):
            if raw != min(block_size, remaining) or stored > 2 * block_size + 4096:
                raise FastdataFormatError(
                    f"{src_path}: block table entry at byte {offset} is inconsistent "
                    f"(stored {stored}, raw {raw}, block_size {block_size})"
                )
            frame = _read_exact(f, stored, src_path, "zstd frame", offset)
            data = _decompress_frame(frame, raw, dctx, src_path, offset)
            if digest and xxhash.xxh3_128_digest(data) != digest[0]:
                start = raw_size - remaining
                raise FastdataIntegrityError(
                    f"{src_path}: block {i} (bytes [{offset}, {offset + stored}), raw bytes [{start}, "
                    f"{start + raw})) does not match its hash in the block table (corrupt frame)")
            disk_point("decompress", len(data))
            out.write(data)
            hasher.update(data)
            offset += stored
            remaining -= raw
        if f.read(1):
            raise FastdataFormatError(f"{src_path}: unexpected bytes after the last frame at {offset}")
    return WrittenFile(raw_size, hasher.hexdigest())
