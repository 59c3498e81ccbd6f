"""Format v1.1: per-block hashes in the shard's metadata section, checked against the manifest.

One ranged read of ``[0, meta_bytes)`` verifies any block alone; bad tables are refused
naming the shard, the field and its byte offset before anything sized by them is allocated;
v1 shards and datasets stay exactly what they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import xxhash
from _corpus import make_docs, write_jsonl
from _shards import shard_bytes

import fastdata
from fastdata.errors import FastdataConfigError, FastdataFormatError, FastdataIntegrityError
from fastdata.format import spec
from fastdata.format.blocks import (
    check_meta,
    parse_block_table,
    raw_block,
    read_meta,
    verify_block,
    verify_blocks,
)
from fastdata.format.compression import compress_shard, decompress_shard
from fastdata.format.manifest import Manifest, TokenizerInfo, parse_manifest
from fastdata.format.reader import open_shard
from fastdata.format.shard_table import ShardInfo
from fastdata.format.writer import write_shard
from fastdata.pack.config import parse_block_size
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.pipeline import PackConfig, pack
from fastdata.pack.sources import ReadOptions
from fastdata.pack.tokenizers import TokenizerSpec

pytestmark = pytest.mark.timeout(120)

N = 30_000
TOKENS = (np.arange(N, dtype=np.int64) * 7919) % 60_000
LENGTHS = np.array([1, 9_999, 20_000])
MASK = (np.arange(N) % 3 == 0).astype(np.uint8)
# The committed fixtures' corpus (tests/_loader.packed_dataset) packed as format v1 had this
# identity and this A2 order before v1.1 existed (tests/data/golden_order.json at that time).
V1_FINGERPRINT = "4eed08d3aab17219e20c6426dcab06c8"
V1_GOLDEN_SHA256 = "b122930ca881a2c43d3a0c76a55c7d416e78f9a7877d633a31b03a26ec586225"


def info_of(name: str, w, raw=None, docs=3, tokens=N) -> ShardInfo:
    raw = raw or w
    return ShardInfo(name, w.size, raw.size, docs, tokens, w.xxh3_128, raw.xxh3_128, w.meta_bytes,
                     w.meta_xxh3_128, w.block_size)


@pytest.fixture()
def v11(tmp_path):
    """A v1.1 raw shard with a loss mask and 4 KiB blocks: (path, ShardInfo)."""
    path = str(tmp_path / "shard-00000.fds")
    w = write_shard(path, TOKENS, LENGTHS, MASK, "uint16", block_size=4096)
    return path, info_of("shard-00000.fds", w)


def recrc(data: bytearray) -> None:
    """Recompute the header CRC over header, index and (when it lies inside) block table."""
    num_docs = struct.unpack_from("<Q", data, 16)[0]
    block_size, num_blocks, table = struct.unpack_from("<QQQ", data, 64)
    header = bytearray(data[:128])
    header[12:16] = bytes(4)
    crc = zlib.crc32(data[128:128 + 8 * (num_docs + 1)], zlib.crc32(header))
    if data[11] & 2 and table + 16 * num_blocks <= len(data):
        crc = zlib.crc32(data[table:table + 16 * num_blocks], crc)
    struct.pack_into("<I", data, 12, crc)


# -- layout and round trip ---------------------------------------------------------------

def test_v11_layout_and_every_block_verifies_alone(v11):
    path, info = v11
    data = Path(path).read_bytes()
    h = spec.unpack_header(data[:128])
    payload = h.file_size - h.tokens_offset
    assert (h.block_size, h.num_blocks, h.block_table_offset) == (4096, -(-payload // 4096), 128 + 4 * 8)
    assert info.meta_bytes == h.tokens_offset == 4096 and info.block_size == 4096
    assert info.meta_xxh3_128 == xxhash.xxh3_128_hexdigest(data[:info.meta_bytes])
    assert info.xxh3_128 == xxhash.xxh3_128_hexdigest(data)  # the whole-shard hash stays
    table = check_meta(data[:info.meta_bytes], info)
    assert len(table) == h.num_blocks
    ranges = [table.byte_range(i) for i in range(len(table))]
    assert ranges[0] == (4096, 8192) and ranges[-1] == (4096 * len(table), h.file_size)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    for i, (a, b) in enumerate(ranges):
        verify_block(table, i, data[a:b])  # each block alone, with only the metadata read
        assert bytes(table.hashes[i]) == xxhash.xxh3_128_digest(data[a:b])
    assert verify_blocks(path, table) == []
    with open_shard(path) as shard:  # the native reader accepts v1.1 and reads it as v1
        assert np.array_equal(np.asarray(shard.tokens(0, N)), TOKENS)
        assert np.array_equal(np.asarray(shard.loss_mask(0, N)), MASK)


def test_flipped_byte_names_exactly_that_block_and_its_range(v11):
    path, info = v11
    table = read_meta(path, info)
    data = bytearray(Path(path).read_bytes())
    start, end = table.byte_range(5)
    data[start + 100] ^= 0x40
    Path(path).write_bytes(data)
    bad = verify_blocks(path, table)
    assert [(b.index, b.start, b.end) for b in bad] == [(5, start, end)]
    assert f"shard-00000.fds: block 5 (bytes [{start}, {end})) hashes to" in bad[0].message
    with pytest.raises(FastdataIntegrityError, match=rf"block 5 \(bytes \[{start}, {end}\)\)"):
        verify_block(table, 5, bytes(data[start:end]))
    with pytest.raises(FastdataIntegrityError, match="is 4095 bytes, expected 4096"):
        verify_block(table, 4, bytes(data[start - 4096:start - 1]))


def test_v1_writer_is_byte_for_byte_unchanged_and_has_no_table(tmp_path):
    docs = [TOKENS[:1], TOKENS[1:10_000], TOKENS[10_000:]]
    masks = [MASK[:1], MASK[1:10_000], MASK[10_000:]]
    path = str(tmp_path / "v1.fds")
    w = write_shard(path, TOKENS, LENGTHS, MASK, "uint16")
    assert Path(path).read_bytes() == shard_bytes(docs, 1, masks)  # the v1 layout, independently built
    assert (w.meta_bytes, w.meta_xxh3_128, w.block_size) == (0, "", 0)
    with pytest.raises(FastdataFormatError, match=r"v1\.fds: field 'flags' at byte 11: no block table"):
        parse_block_table(Path(path).read_bytes()[:4096], "v1.fds")
    with open_shard(path) as shard:
        assert shard.num_tokens == N


def test_small_payload_records_the_block_size_it_needs(tmp_path):
    w = write_shard(str(tmp_path / "s.fds"), TOKENS[:3000], np.array([3000]), None, "uint16",
                    block_size=1 << 20)
    assert w.block_size == 8192  # 6000 payload bytes: the smallest power of two >= 4096 holding them
    table = read_meta(str(tmp_path / "s.fds"), info_of("s.fds", w, docs=1, tokens=3000))
    assert len(table) == 1 and table.byte_range(0) == (4096, 4096 + 6000)
    with pytest.raises(FastdataConfigError, match="power of two"):
        write_shard(str(tmp_path / "t.fds"), TOKENS, LENGTHS, None, "uint16", block_size=12288)


# -- zstd: frames are the blocks ---------------------------------------------------------

def test_zstd_frames_verify_alone_and_a_bad_frame_is_named(tmp_path, v11):
    path, raw = v11
    z = compress_shard(path, str(tmp_path / "z.fds.zst"), block_size=16384)
    info = ShardInfo("z.fds.zst", z.size, raw.stored_bytes, 3, N, z.xxh3_128, raw.xxh3_128,
                     z.meta_bytes, z.meta_xxh3_128, z.block_size)
    nframes = -(-raw.stored_bytes // 16384)
    assert (z.block_size, z.meta_bytes) == (16384, 64 + 32 * nframes)
    zdata = bytearray(Path(tmp_path / "z.fds.zst").read_bytes())
    table = check_meta(bytes(zdata[:z.meta_bytes]), info)
    rdata = Path(path).read_bytes()
    assert [int(x) for x in table.raw_offsets] == list(range(0, raw.stored_bytes, 16384))
    assert verify_blocks(str(tmp_path / "z.fds.zst"), table) == []
    start, end = table.byte_range(2)
    assert table.byte_range(1)[1] == start and table.byte_range(len(table) - 1)[1] == z.size
    verify_block(table, 2, rdata[2 * 16384:3 * 16384])
    for i in range(len(table)):  # each frame alone: fetched, decompressed, verified
        a, b = table.byte_range(i)
        assert raw_block(table, i, bytes(zdata[a:b])) == rdata[i * 16384:(i + 1) * 16384]
    zdata[start + (end - start) // 2] ^= 0xFF
    Path(tmp_path / "z.fds.zst").write_bytes(zdata)
    bad = verify_blocks(str(tmp_path / "z.fds.zst"), table)
    assert [(b.index, b.start, b.end) for b in bad] == [(2, start, end)]
    with pytest.raises(FastdataIntegrityError, match=rf"z\.fds\.zst: block 2 \(bytes \[{start}, {end}\)"):
        raw_block(table, 2, bytes(zdata[start:end]))
    with pytest.raises(FastdataFormatError, match=r"block 2|frame at byte"):
        decompress_shard(str(tmp_path / "z.fds.zst"), str(tmp_path / "out.fds"), raw.stored_bytes)
    assert not (tmp_path / "out.fds").exists()


def test_zstd_version_1_still_decompresses_and_has_no_frame_hashes(tmp_path, v11):
    path, raw = v11
    z = compress_shard(path, str(tmp_path / "z.fds.zst"), block_size=16384, frame_hashes=False)
    data = Path(tmp_path / "z.fds.zst").read_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 1 and z.meta_bytes == 0
    assert decompress_shard(str(tmp_path / "z.fds.zst"), str(tmp_path / "o.fds"), raw.stored_bytes).xxh3_128 \
        == raw.xxh3_128
    with pytest.raises(FastdataFormatError, match="field 'version' at byte 8: no frame hashes"):
        parse_block_table(data, "z.fds.zst")


# -- bad input ---------------------------------------------------------------------------

def _refusals(data: bytes, tmp_path, name="shard-00000.fds"):
    """(parse error, native error) for ``data``."""
    with pytest.raises(FastdataFormatError) as py:
        parse_block_table(data, name, file_size=len(data))
    path = tmp_path / "bad.fds"
    path.write_bytes(data)
    with pytest.raises(FastdataFormatError) as native:
        open_shard(str(path))
    return str(py.value), native.value


BAD_TABLES = [  # (header field offset, value, field named, message part)
    (64, 0, "block_size", "must be a power of two"),
    (64, 12288, "block_size", "must be a power of two"),
    (64, 1 << 30, "block_size", "must be a power of two"),
    (64, 1 << 20, "block_size", "larger than the shard"),
    (72, 7, "num_blocks", "holds 23 blocks"),
    (72, 1 << 40, "num_blocks", "holds 23 blocks"),
    (80, 1 << 40, "block_table_offset", "past the end of the"),
    (80, 95536 - 16, "block_table_offset", "past the end of the"),
    (80, 4096 - 8 * 23, "block_table_offset", "runs into the payload"),
    (80, 128, "block_table_offset", "after the end of the document index"),
    (80, 164, "block_table_offset", "multiple of 8"),
]


@pytest.mark.parametrize(("offset", "value", "field", "message"), BAD_TABLES)
def test_bad_block_fields_are_refused_by_both_readers(tmp_path, v11, offset, value, field, message):
    path, _ = v11
    data = bytearray(Path(path).read_bytes())
    assert len(data) == 95536  # the sizes in BAD_TABLES assume this layout (23 blocks)
    struct.pack_into("<Q", data, offset, value)
    recrc(data)  # so that the field check, not the CRC, refuses it
    py, native = _refusals(bytes(data), tmp_path)
    assert py.startswith(f"shard-00000.fds: field '{field}' at byte {offset}: ") and message in py, py
    assert (native.field, native.byte_offset) == (field, offset), str(native)


def test_a_damaged_block_table_fails_the_crc_natively_and_the_manifest_hash(tmp_path, v11):
    path, info = v11
    data = bytearray(Path(path).read_bytes())
    data[160 + 5] ^= 1  # a byte of block 0's hash
    with pytest.raises(FastdataIntegrityError,
                       match=r"metadata section \[0, 4096\) hashes to [0-9a-f]{32}, the manifest's field "
                             "'meta_xxh3_128' says"):
        check_meta(bytes(data[:4096]), info)
    py, native = _refusals(bytes(data), tmp_path)
    assert "field 'header_crc32' at byte 12" in py and "block table" in py
    assert (native.field, native.byte_offset) == ("header_crc32", 12)
    with pytest.raises(FastdataIntegrityError, match="'meta_bytes' says 4096"):
        check_meta(bytes(data[:4000]), info)


def test_huge_values_are_refused_before_any_allocation():
    """A header claiming a 1 PiB payload of 4 KiB blocks has a consistent num_blocks
    (2^38): the 4 TiB table is refused (it cannot fit before the payload) without
    allocating it; likewise a zstd table whose num_blocks runs past the file."""
    size = 1 << 50
    fields = (spec.MAGIC, 1, 1, 2, 0, 0, 0, 128, 4096, 0, size, 4096, (size - 4096) // 4096, 136)
    header = struct.pack("<8sHBBIQQQQQQQQQ40x", *fields) + bytes(8) + bytes(4096 - 136)
    zheader = struct.pack("<8sH6xQQQ24x", spec.ZSTD_MAGIC, 2, 1 << 46, 4096, 1 << 34)
    tracemalloc.start()
    try:
        with pytest.raises(FastdataFormatError, match="field 'block_table_offset' at byte 80: .*runs into"):
            parse_block_table(header, "huge.fds")
        with pytest.raises(FastdataFormatError, match="field 'num_blocks' at byte 32: .*past the end"):
            parse_block_table(zheader, "huge.fds.zst", file_size=64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_bad_zstd_fields_name_field_and_offset(tmp_path, v11):
    path, raw = v11
    z = compress_shard(path, str(tmp_path / "z.fds.zst"), block_size=16384)
    good = Path(tmp_path / "z.fds.zst").read_bytes()
    for offset, value, field in [(24, 0, "block_size"), (24, 1 << 20, "block_size"),
                                 (32, 3, "num_blocks"), (16, 5, "raw_size")]:
        data = bytearray(good)
        struct.pack_into("<Q", data, offset, value)
        with pytest.raises(FastdataFormatError, match=rf"z\.fds\.zst: field '{field}' at byte {offset}: "):
            parse_block_table(bytes(data), "z.fds.zst", file_size=z.size, raw_size=raw.stored_bytes)
    data = bytearray(good)
    struct.pack_into("<Q", data, 64 + 32 + 8, 99)  # frame 1's raw size
    with pytest.raises(FastdataFormatError, match=r"field 'block_table\[1\]' at byte 96"):
        parse_block_table(bytes(data), "z.fds.zst", file_size=z.size)


# -- manifest ----------------------------------------------------------------------------

def test_manifest_records_inline_and_in_shards_bin(v11):
    _, info = v11
    v1 = ShardInfo("shard-00001.fds", 10, 10, 1, 3, "1" * 32, "1" * 32)
    tok = TokenizerInfo("bytes", "bytes", 258, 256, None, "f" * 32)
    m = Manifest(dtype="uint16", has_loss_mask=True, compression=None, tokenizer=tok, shards=(info, v1))
    doc = json.loads(m.to_json())
    assert doc["shards"][0]["meta_bytes"] == 4096 and doc["shards"][0]["block_size"] == 4096
    assert "meta_bytes" not in doc["shards"][1]  # a v1 entry is written as v1 wrote it
    assert list(parse_manifest(m.to_json(), "m").shards) == [info, v1]
    text, table = m.serialize(inline_limit=1)
    assert json.loads(text)["shard_table"]["record_bytes"] == 96 and len(table) == 192
    back = parse_manifest(text, "m", read_table=lambda name: table)
    assert list(back.shards) == [info, v1] and back.fingerprint == m.fingerprint
    bad = json.loads(m.to_json())
    bad["shards"][0]["meta_bytes"] = info.stored_bytes + 1
    with pytest.raises(FastdataFormatError, match=r"shards\[0\]: field 'meta_bytes' is"):
        parse_manifest(json.dumps(bad), "m")
    v1_only = Manifest(dtype="uint16", has_loss_mask=True, compression=None, tokenizer=tok, shards=(v1,))
    text, table = v1_only.serialize(inline_limit=0)
    assert "record_bytes" not in json.loads(text)["shard_table"] and len(table) == 64


# -- pack --------------------------------------------------------------------------------

def _pack(tmp_path, name, **kw):
    src = write_jsonl(str(tmp_path / "c.jsonl"), make_docs(400, seed=0, long_every=97))
    encode = EncodeOptions(ReadOptions(), TokenizerSpec("bytes"))
    out = str(tmp_path / name)
    return out, pack(PackConfig(inputs=(src,), output=out, encode=encode, shard_size=4096, **kw))


def test_v1_pack_keeps_its_identity_and_order(tmp_path):
    """The fixtures' corpus packed as v1 is the dataset the old fixtures were made from: same
    fingerprint, same A2 order (the order did not drift; only the dataset identity changed)."""
    out, result = _pack(tmp_path, "v1", block_size=None)
    assert result.fingerprint == V1_FINGERPRINT
    assert all(not s.has_block_table for s in result.manifest.shards)
    ds = fastdata.TokenDataset(out, seq_len=8, seed=1234)
    ids = [int(i) for b in fastdata.DataLoader(ds, batch_size=8, num_workers=0) for i in b["sample_ids"]]
    assert hashlib.sha256(json.dumps(ids[:4096]).encode()).hexdigest() == V1_GOLDEN_SHA256
    golden = json.loads((Path(__file__).parent / "data" / "golden_order.json").read_text())
    _, v11 = _pack(tmp_path, "v11")  # the default: what tests/_loader.packed_dataset packs now
    assert v11.fingerprint == golden["dataset_fingerprint"] != V1_FINGERPRINT


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_pack_records_each_shards_metadata(tmp_path, compression):
    out, result = _pack(tmp_path, "ds", block_size=4096, compression=compression)
    shards = list(result.manifest.shards)
    assert len(shards) > 10 and all(s.has_block_table for s in shards)
    for s in shards:
        path = os.path.join(out, s.name)
        table = read_meta(path, s)
        assert verify_blocks(path, table) == []
        assert s.block_size == table.block_size <= 4096
    with fastdata.open_dataset(out) as ds:
        assert list(ds.manifest.shards) == shards


def test_block_size_option_and_cli(tmp_path):
    assert parse_block_size("1MB") == parse_block_size("1MiB") == 1 << 20
    assert parse_block_size("64KB") == 65536 and parse_block_size(None) is None
    assert parse_block_size("none") is None and parse_block_size(4096) == 4096
    with pytest.raises(FastdataConfigError, match="not a power of two"):
        parse_block_size("3000")
    with pytest.raises(FastdataConfigError, match="power of two from 4096"):
        PackConfig(inputs=(), output="x", encode=EncodeOptions(ReadOptions(), TokenizerSpec("bytes")),
                   block_size=1024)
    assert PackConfig(inputs=(), output="x", encode=EncodeOptions(ReadOptions(), TokenizerSpec("bytes"))
                      ).block_size == 1 << 20
    src = write_jsonl(str(tmp_path / "c.jsonl"), make_docs(50, seed=1))
    for flag, expect in (("8KiB", 8192), ("none", None)):
        out = tmp_path / f"o{expect}"
        subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", src, "-o", str(out),
                        "--shard-size", "8KB", "--block-size", flag, "-q"], check=True, timeout=90)
        doc = json.loads((out / "manifest.json").read_text())
        assert len(doc["shards"]) > 1 and doc["provenance"]["pack_args"]["block_size"] == expect
        if expect is None:
            assert not any("block_size" in s for s in doc["shards"])
            assert all((out / s["name"]).read_bytes()[11] & 2 == 0 for s in doc["shards"])
        else:  # 8 KB shards: the full ones have 8 KiB blocks, a short last one may need fewer
            assert doc["shards"][0]["block_size"] == 8192
            assert all(4096 <= s["block_size"] <= 8192 for s in doc["shards"])


# -- fastdata verify ---------------------------------------------------------------------

def _corrupt_block(path: Path, block: int, table) -> tuple[int, int]:
    start, end = table.byte_range(block)
    data = bytearray(path.read_bytes())
    data[start + (end - start) // 3] ^= 0x10
    path.write_bytes(bytes(data))
    return start, end


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_verify_names_the_bad_block_and_its_byte_range(tmp_path, compression):
    out, result = _pack(tmp_path, "ds", block_size=4096, compression=compression)
    cli = [sys.executable, "-P", "-m", "fastdata.cli.main", "verify", out]
    ok = subprocess.run(cli, capture_output=True, text=True, timeout=90)
    n = len(result.manifest.shards)
    assert ok.returncode == 0 and f"{n} of {n} shards OK" in ok.stdout
    victim = next(s for s in result.manifest.shards if len(read_meta(os.path.join(out, s.name), s)) >= 2)
    table = read_meta(os.path.join(out, victim.name), victim)
    start, end = _corrupt_block(Path(out) / victim.name, 1, table)
    bad = subprocess.run(cli, capture_output=True, text=True, timeout=90)
    assert bad.returncode == 1 and bad.stdout.count("BAD ") == 1
    line = next(x for x in bad.stdout.splitlines() if x.startswith("BAD "))
    assert line.startswith(f"BAD {victim.name}: 1 of {len(table)} blocks are bad: {victim.name}: block 1 "
                           f"(bytes [{start}, {end})"), line
    assert victim.xxh3_128 in line  # the whole-shard mismatch is reported too


def test_verify_refuses_a_block_table_that_disagrees_with_the_manifest(tmp_path):
    out, result = _pack(tmp_path, "ds", block_size=4096)
    victim = result.manifest.shards[3]
    path = Path(out) / victim.name
    data = bytearray(path.read_bytes())
    data[spec.unpack_header(bytes(data[:128])).block_table_offset] ^= 1
    path.write_bytes(bytes(data))
    from fastdata.reader.verify import verify_dataset

    _, problems = verify_dataset(out)
    assert [p.name for p in problems] == [victim.name]
    assert f"metadata section [0, {victim.meta_bytes}) hashes to" in problems[0].message
    assert "'meta_xxh3_128'" in problems[0].message


def test_verify_over_http_names_the_bad_block_with_ranged_reads(tmp_path):
    from _rangeserver import RangeServer

    from fastdata.reader.verify import verify_dataset

    out, result = _pack(tmp_path, "ds", block_size=4096)
    victim = result.manifest.shards[2]
    table = read_meta(os.path.join(out, victim.name), victim)
    start, end = _corrupt_block(Path(out) / victim.name, len(table) - 1, table)
    with RangeServer(str(tmp_path)) as server:
        _, problems = verify_dataset(f"http://127.0.0.1:{server.port}/ds",
                                     storage_options={"allow_insecure": True})
    assert [p.name for p in problems] == [victim.name]
    assert f"block {len(table) - 1} (bytes [{start}, {end})) hashes to" in problems[0].message


def test_a_v1_dataset_still_verifies_whole(tmp_path):
    from fastdata.reader.verify import verify_dataset

    out, result = _pack(tmp_path, "v1", block_size=None)
    assert verify_dataset(out)[1] == []
    victim = result.manifest.shards[1]
    path = Path(out) / victim.name
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    _, problems = verify_dataset(out)
    assert [p.name for p in problems] == [victim.name] and victim.xxh3_128 in problems[0].message
    assert "block" not in problems[0].message


def test_an_empty_payload_has_no_blocks(tmp_path):
    path = str(tmp_path / "e.fds")
    w = write_shard(path, np.zeros(0, np.int64), np.array([0, 0]), None, "uint32", block_size=1 << 20)
    assert (w.size, w.meta_bytes, w.block_size) == (4096, 4096, 4096)
    table = read_meta(path, info_of("e.fds", w, docs=2, tokens=0))
    assert len(table) == 0 and verify_blocks(path, table) == []
    with open_shard(path) as shard:
        assert (shard.num_docs, shard.num_tokens) == (2, 0)
