"""The zstd wrapper: round trip, and decompression bombs are bounded (G5)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import zstandard

from fastdata.errors import FastdataFormatError
from fastdata.format.compression import compress_shard, decompress_shard
from fastdata.format.hashing import hash_file
from fastdata.format.spec import ZSTD_MAGIC
from fastdata.format.writer import write_shard

pytestmark = pytest.mark.timeout(60)


def raw_shard(path, n=50_000):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 300, n, dtype=np.uint32)
    lengths = np.array([n // 2, n - n // 2])
    return write_shard(str(path), tokens, lengths, None, "uint16")


def wrapper(frames, raw_sizes, raw_size, block_size):
    header = struct.pack("<8sH6xQQQ24x", ZSTD_MAGIC, 1, raw_size, block_size, len(frames))
    table = b"".join(struct.pack("<QQ", len(f), r) for f, r in zip(frames, raw_sizes))
    return header + table + b"".join(frames)


def test_round_trip_small_blocks(tmp_path):
    raw = raw_shard(tmp_path / "a.fds")
    z = compress_shard(str(tmp_path / "a.fds"), str(tmp_path / "a.fds.zst"), block_size=8192)
    assert z.size == os.path.getsize(tmp_path / "a.fds.zst") < raw.size
    out = decompress_shard(str(tmp_path / "a.fds.zst"), str(tmp_path / "b.fds"), raw.size)
    assert out.xxh3_128 == raw.xxh3_128 == hash_file(str(tmp_path / "b.fds"))


def test_wrong_raw_size_refused(tmp_path):
    raw = raw_shard(tmp_path / "a.fds")
    compress_shard(str(tmp_path / "a.fds"), str(tmp_path / "a.fds.zst"))
    with pytest.raises(FastdataFormatError, match="field raw_size at byte 16"):
        decompress_shard(str(tmp_path / "a.fds.zst"), str(tmp_path / "b.fds"), raw.size + 1)
    assert not (tmp_path / "b.fds").exists()


def test_frame_declaring_huge_content_size(tmp_path):
    """A frame whose header declares 1 TiB is refused before decompressing anything."""
    big = _frame_with_declared_size(1 << 40)
    src = tmp_path / "bomb.fds.zst"
    src.write_bytes(wrapper([big], [4096], 4096, 4096))
    with pytest.raises(FastdataFormatError, match=r"bomb\.fds\.zst: zstd frame at byte 80 declares"):
        decompress_shard(str(src), str(tmp_path / "out.fds"), 4096)
    assert not (tmp_path / "out.fds").exists()


ZSTD_FRAME_MAGIC = struct.pack("<I", 0xFD2FB528)
RAW_LAST_BLOCK = struct.pack("<I", (16 << 3) | 1)[:3] + b"y" * 16  # last block, raw, 16 bytes


def _frame_with_declared_size(size: int) -> bytes:
    """A zstd frame whose header declares ``size`` bytes (8-byte field, single segment)."""
    fhd = bytes([0b11 << 6 | 1 << 5])
    return ZSTD_FRAME_MAGIC + fhd + struct.pack("<Q", size) + RAW_LAST_BLOCK


def test_frame_without_declared_size_expanding_past_record(tmp_path):
    """No declared size, 1000:1 expansion: reading stops at the recorded size + 1 byte."""
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    bomb = cctx.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in a few KB
    src = tmp_path / "bomb.fds.zst"
    src.write_bytes(wrapper([bomb], [65536], 65536, 65536))
    code = (
        "import resource, sys\n"
        "from fastdata.format.compression import decompress_shard\n"
        "from fastdata.errors import FastdataFormatError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"try:\n    decompress_shard({str(src)!r}, {str(tmp_path / 'o.fds')!r}, 65536)\n"
        "except FastdataFormatError as e:\n    print('ERR', e)\n"
        "print('GROWTH_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert "expands to more than 65536 bytes, recorded raw size is 65536" in proc.stdout, proc.stderr
    growth_kb = int(proc.stdout.split("GROWTH_KB")[1])
    assert growth_kb < 32 * 1024  # far below the 64 MiB the frame would expand to
    assert not (tmp_path / "o.fds").exists()


def test_huge_window_refused(tmp_path):
    """A frame asking for a 2 GiB window (windowLog 31) is refused, not allocated."""
    window_descriptor = bytes([(31 - 10) << 3])
    frame = ZSTD_FRAME_MAGIC + bytes([0]) + window_descriptor + RAW_LAST_BLOCK
    src = tmp_path / "w.fds.zst"
    src.write_bytes(wrapper([frame], [16], 16, 65536))
    with pytest.raises(FastdataFormatError, match="w.fds.zst: zstd frame at byte 80 is invalid"):
        decompress_shard(str(src), str(tmp_path / "o.fds"), 16)


def test_truncated_and_trailing_bytes(tmp_path):
    raw = raw_shard(tmp_path / "a.fds")
    compress_shard(str(tmp_path / "a.fds"), str(tmp_path / "a.fds.zst"), block_size=16384)
    data = (tmp_path / "a.fds.zst").read_bytes()
    (tmp_path / "t.fds.zst").write_bytes(data[:-10])
    with pytest.raises(FastdataFormatError, match="truncated zstd frame"):
        decompress_shard(str(tmp_path / "t.fds.zst"), str(tmp_path / "o.fds"), raw.size)
    (tmp_path / "x.fds.zst").write_bytes(data + b"junk")
    with pytest.raises(FastdataFormatError, match="unexpected bytes after the last frame"):
        decompress_shard(str(tmp_path / "x.fds.zst"), str(tmp_path / "o.fds"), raw.size)
    (tmp_path / "m.fds.zst").write_bytes(b"NOTZSTD!" + data[8:])
    with pytest.raises(FastdataFormatError, match="bad magic"):
        decompress_shard(str(tmp_path / "m.fds.zst"), str(tmp_path / "o.fds"), raw.size)
    assert not (tmp_path / "o.fds").exists()


def test_block_table_bomb_is_refused_before_allocating(tmp_path):
    """A 1-byte block size with a 2^40-byte raw size would need a 16 TiB block table: refused
    from the file's size, naming the field, before anything of that size is allocated."""
    raw_size = 1 << 40
    path = tmp_path / "bomb.fds.zst"
    path.write_bytes(struct.pack("<8sH6xQQQ24x", ZSTD_MAGIC, 1, raw_size, 1, raw_size) + b"\0" * 64)
    code = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))\n"
            "from fastdata.format.compression import decompress_shard\n"
            "try:\n    decompress_shard(sys.argv[1], sys.argv[2], 1 << 40)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-P", "-c", code, str(path), str(tmp_path / "out.fds")],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("FastdataFormatError"), out.stdout + out.stderr
    assert "field num_blocks at byte 32" in out.stdout and "past the end of the file" in out.stdout
