"""The native memory-mapped shard reader: round trips, zero-copy views, refusals (E1, E4),
and the batch gather."""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from _shards import FIELDS, fix_crc, set_field, shard_bytes, write_raw_shard

from fastdata.errors import FastdataFormatError, FastdataIOError
from fastdata.format.reader import ShardView, gather, open_shard
from fastdata.format.spec import DTYPES, HEADER_SIZE, Layout

pytestmark = pytest.mark.timeout(120)


def random_docs(rng, n, dtype_code, max_len=300):
    high = 1 << (16 if dtype_code == 1 else 32)
    docs = [rng.integers(0, high, size=int(rng.integers(0, max_len)), dtype=np.int64) for _ in range(n)]
    docs[min(1, n - 1)] = np.zeros(0, np.int64)  # an empty document
    return docs


def random_masks(rng, docs):
    return [rng.integers(0, 2, size=len(d), dtype=np.uint8) for d in docs]


SMALL = [np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8]), np.array([], np.int64), np.array([9, 10, 11, 12])]


@pytest.fixture
def small_bytes():
    return bytearray(shard_bytes(SMALL, 1))


def open_bytes(tmp_path, data, name="s.fds"):
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return open_shard(path)


# --- round trip and accessors ---------------------------------------------------------------


@pytest.mark.parametrize("dtype_code", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_round_trip(tmp_path, dtype_code, masked):
    rng = np.random.default_rng(dtype_code * 10 + masked)
    docs = random_docs(rng, 40, dtype_code)
    masks = random_masks(rng, docs) if masked else None
    path = write_raw_shard(tmp_path / "s.fds", docs, dtype_code, masks)
    with open_shard(path) as shard:
        assert shard.path == path
        assert shard.num_docs == len(docs)
        assert shard.num_tokens == sum(map(len, docs))
        assert shard.dtype == {1: "uint16", 2: "uint32"}[dtype_code]
        assert shard.has_loss_mask is masked
        assert shard.file_size == os.path.getsize(path)
        offsets = shard.doc_offsets()
        assert offsets.dtype == np.uint64
        np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(list(map(len, docs)))]))
        for i, doc in enumerate(docs):
            got = shard.doc(i)
            assert got.dtype == DTYPES[dtype_code]
            np.testing.assert_array_equal(got, doc)
            assert shard.doc_bounds(i) == (int(offsets[i]), len(doc))
            if masked:
                mask = shard.doc_loss_mask(i)
                assert mask.dtype == np.uint8
                np.testing.assert_array_equal(mask, masks[i])
        everything = np.concatenate(docs)
        np.testing.assert_array_equal(shard.tokens(0, shard.num_tokens), everything)
        np.testing.assert_array_equal(shard.tokens(17, 450), everything[17:450])
        if masked:
            np.testing.assert_array_equal(shard.loss_mask(17, 450), np.concatenate(masks)[17:450])


@pytest.mark.parametrize("masked", [False, True])
def test_empty_shard(tmp_path, masked):
    path = write_raw_shard(tmp_path / "e.fds", [], 2, [] if masked else None)
    shard = open_shard(path)
    assert (shard.num_docs, shard.num_tokens, shard.has_loss_mask) == (0, 0, masked)
    np.testing.assert_array_equal(shard.doc_offsets(), [0])
    assert shard.tokens(0, 0).shape == (0,)
    with pytest.raises(IndexError):
        shard.doc(0)


def test_tokens_are_the_mapped_file_bytes(tmp_path):
    docs = random_docs(np.random.default_rng(1), 10, 2)
    path = write_raw_shard(tmp_path / "s.fds", docs, 2)
    layout = Layout.plan(len(docs), sum(map(len, docs)), 2, False)
    expected = np.fromfile(path, dtype="<u4", count=layout.num_tokens, offset=layout.tokens_offset)
    np.testing.assert_array_equal(open_shard(path).tokens(0, layout.num_tokens), expected)


def test_out_of_range_indices(tmp_path, small_bytes):
    shard = open_bytes(tmp_path, small_bytes)
    for call in (lambda: shard.doc(4), lambda: shard.doc(-1), lambda: shard.doc_bounds(4),
                 lambda: shard.tokens(3, 2), lambda: shard.tokens(0, 13), lambda: shard.tokens(-1, 2)):
        with pytest.raises(IndexError):
            call()
    assert shard.tokens(12, 12).shape == (0,)


def test_no_loss_mask_is_a_value_error(tmp_path, small_bytes):
    shard = open_bytes(tmp_path, small_bytes)
    with pytest.raises(ValueError, match="no loss_mask"):
        shard.doc_loss_mask(0)
    with pytest.raises(ValueError, match="no loss_mask"):
        shard.loss_mask(0, 1)


def test_accepts_path_like_and_reprs(tmp_path, small_bytes):
    shard = open_bytes(tmp_path, small_bytes)  # a pathlib.Path
    assert isinstance(shard, ShardView)
    assert shard.path == str(tmp_path / "s.fds")
    assert "num_docs=4" in repr(shard) and "uint16" in repr(shard)
    shard.close()
    assert "closed" in repr(shard)


# --- zero copy and lifetime -----------------------------------------------------------------


def test_views_are_zero_copy_and_read_only(tmp_path):
    docs = random_docs(np.random.default_rng(2), 5, 1)
    masks = random_masks(np.random.default_rng(3), docs)
    shard = open_shard(write_raw_shard(tmp_path / "s.fds", docs, 1, masks))
    start, length = shard.doc_bounds(2)
    doc = shard.doc(2)
    assert np.shares_memory(doc, shard.doc(2))
    assert np.shares_memory(doc, shard.tokens(start, start + length))
    assert np.shares_memory(shard.doc_loss_mask(2), shard.loss_mask(start, start + length))
    for array in (doc, shard.doc_loss_mask(2), shard.doc_offsets(), shard.tokens(0, 5)):
        assert not array.flags.writeable
        assert not array.flags.owndata
        assert array.base is not None
        with pytest.raises(ValueError):
            array[0] = 1


def test_views_survive_close_and_del(tmp_path):
    docs = random_docs(np.random.default_rng(4), 5, 2)
    masks = random_masks(np.random.default_rng(5), docs)
    shard = open_shard(write_raw_shard(tmp_path / "s.fds", docs, 2, masks))
    doc, mask, offsets = shard.doc(3), shard.doc_loss_mask(3), shard.doc_offsets()
    shard.close()
    shard.close()  # idempotent
    assert shard.closed
    with pytest.raises(ValueError, match="closed"):
        shard.doc(0)
    with pytest.raises(ValueError, match="closed"):
        _ = shard.num_docs
    del shard
    gc.collect()
    np.testing.assert_array_equal(doc, docs[3])
    np.testing.assert_array_equal(mask, masks[3])
    assert int(offsets[-1]) == sum(map(len, docs))


def test_context_manager_closes(tmp_path, small_bytes):
    with open_bytes(tmp_path, small_bytes) as shard:
        doc = shard.doc(1)
    assert shard.closed
    np.testing.assert_array_equal(doc, SMALL[1])


def test_replaced_file_keeps_old_view(tmp_path):
    """E1(b): os.replace under a live view; the view keeps the old inode's bytes."""
    path = tmp_path / "s.fds"
    old_docs = [np.arange(5000) % 65536, np.arange(3)]
    shard = open_shard(write_raw_shard(path, old_docs, 1))
    view = shard.doc(0)
    new_docs = [np.full(7000, 42), np.arange(9)]
    write_raw_shard(path, new_docs, 2)  # tmp + os.replace
    np.testing.assert_array_equal(view, old_docs[0])
    np.testing.assert_array_equal(shard.doc(1), old_docs[1])
    with open_shard(path) as fresh:
        assert fresh.dtype == "uint32"
        np.testing.assert_array_equal(fresh.doc(0), new_docs[0])
    shard.close()
    np.testing.assert_array_equal(view, old_docs[0])


# --- refusals -------------------------------------------------------------------------------


def refusal(tmp_path, data, name="bad.fds"):
    path = tmp_path / name
    path.write_bytes(bytes(data))
    with pytest.raises(FastdataFormatError) as info:
        open_shard(path)
    error = info.value
    assert str(path) in str(error)
    assert error.path == str(path)
    assert f"field '{error.field}' at byte {error.byte_offset}" in str(error)
    return error


def test_truncated_by_one_byte(tmp_path, small_bytes):
    """E1: named file, expected and actual size, at open."""
    error = refusal(tmp_path, small_bytes[:-1])
    assert (error.field, error.byte_offset) == ("file_size", 56)
    assert f"{len(small_bytes)} bytes" in str(error)
    assert f"{len(small_bytes) - 1} bytes" in str(error)


def test_header_only_file(tmp_path, small_bytes):
    error = refusal(tmp_path, small_bytes[:HEADER_SIZE])
    assert error.field == "file_size"
    assert f"{len(small_bytes)} bytes" in str(error) and f"{HEADER_SIZE} bytes" in str(error)


@pytest.mark.parametrize("size", [0, 7, 8, 127])
def test_shorter_than_header(tmp_path, small_bytes, size):
    error = refusal(tmp_path, small_bytes[:size])
    assert error.field == "header"
    assert f"file is {size} bytes" in str(error) and "128" in str(error)


def test_longer_than_declared(tmp_path, small_bytes):
    error = refusal(tmp_path, small_bytes + b"\0")
    assert error.field == "file_size"
    assert f"{len(small_bytes) + 1} bytes" in str(error)


def test_bad_magic(tmp_path, small_bytes):
    """E4."""
    small_bytes[0:8] = b"PK\x03\x04zip!"
    error = refusal(tmp_path, small_bytes)
    assert (error.field, error.byte_offset) == ("magic", 0)
    assert "bad magic" in str(error) and "PK" in str(error)


def test_newer_version(tmp_path, small_bytes):
    """E4: a newer version is refused with the documented message (CRC kept valid)."""
    set_field(small_bytes, "version", 2)
    error = refusal(tmp_path, small_bytes)
    assert (error.field, error.byte_offset) == ("version", 8)
    assert "unsupported format version 2 (this fastdata reads <= 1)" in str(error)


def test_unknown_dtype(tmp_path, small_bytes):
    """E4."""
    set_field(small_bytes, "dtype", 9)
    error = refusal(tmp_path, small_bytes)
    assert (error.field, error.byte_offset) == ("dtype", 10)
    assert "unknown dtype 9" in str(error)


def test_refusal_without_asserts(tmp_path, small_bytes):
    """E4 under ``python -O``: validation does not rely on assert statements."""
    set_field(small_bytes, "version", 2)
    path = tmp_path / "v2.fds"
    path.write_bytes(bytes(small_bytes))
    code = (
        "import sys\n"
        "from fastdata.errors import FastdataFormatError\n"
        "from fastdata.format.reader import open_shard\n"
        "assert False, 'asserts are on'\n"
        "try:\n"
        "    open_shard(sys.argv[1])\n"
        "except FastdataFormatError as e:\n"
        "    print('REFUSED', sys.flags.optimize, e)\n"
    )
    result = subprocess.run([sys.executable, "-O", "-P", "-c", code, str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("REFUSED 1 ")
    assert "unsupported format version 2 (this fastdata reads <= 1)" in result.stdout


def _index(k):
    return ("index", k)  # a CORRUPTIONS key meaning document index entry k


# (mutation, expected field, expected byte offset); the CRC is recomputed after each
# mutation so that the named check, not the CRC, is what refuses the file.
CORRUPTIONS = [
    ({"flags": 4}, "flags", 11),
    ({"flags": 2}, "block_size", 64),  # v1.1 flag on a v1 shard: its block fields are 0
    ({"flags": 1}, "mask_offset", 48),  # flag set but no mask section
    ({"mask_offset": 8192}, "mask_offset", 48),  # mask offset without the flag
    ({"index_offset": 136}, "index_offset", 32),
    ({"tokens_offset": 4096 + 8}, "tokens_offset", 40),
    ({"tokens_offset": 0}, "tokens_offset", 40),
    ({"tokens_offset": 1 << 40}, "tokens_offset", 40),
    ({"num_tokens": 13}, "num_tokens", 24),
    ({"num_tokens": 1 << 63}, "num_tokens", 24),  # count x itemsize overflows u64
    ({"num_tokens": (1 << 64) - 1}, "num_tokens", 24),
    ({"num_docs": (1 << 64) - 1}, "num_docs", 16),  # num_docs + 1 overflows
    ({"num_docs": 1 << 61}, "num_docs", 16),  # (num_docs + 1) x 8 overflows
    ({"num_docs": (1 << 63) - 1}, "num_docs", 16),
    ({"num_docs": 600}, "num_docs", 16),  # the index would run past the end of the file
    ({"num_tokens": 11}, "file_size", 56),  # the file ends after the last section
    ({_index(0): 1}, "doc_index[0]", 128),
    ({_index(2): 2}, "doc_index[2]", 144),
    ({_index(4): 11}, "doc_index[4]", 160),
    ({_index(4): 13}, "doc_index[4]", 160),
]


@pytest.mark.parametrize(("mutation", "field", "offset"), CORRUPTIONS)
def test_corruptions_name_field_and_offset(tmp_path, small_bytes, mutation, field, offset):
    for key, value in mutation.items():
        if key in FIELDS:
            set_field(small_bytes, key, value, crc=False)
        else:
            small_bytes[HEADER_SIZE + 8 * key[1]:HEADER_SIZE + 8 * key[1] + 8] = value.to_bytes(8, "little")
    fix_crc(small_bytes)
    error = refusal(tmp_path, small_bytes)
    assert (error.field, error.byte_offset) == (field, offset), str(error)


def test_reserved_byte(tmp_path, small_bytes):
    small_bytes[100] = 1
    fix_crc(small_bytes)
    error = refusal(tmp_path, small_bytes)
    assert (error.field, error.byte_offset) == ("reserved", 100)


def test_crc_mismatch(tmp_path, small_bytes):
    small_bytes[HEADER_SIZE + 8] ^= 0x40  # doc_index[1], CRC left stale
    error = refusal(tmp_path, small_bytes)
    assert (error.field, error.byte_offset) == ("header_crc32", 12)
    assert "CRC-32 mismatch" in str(error)


def test_missing_file_and_directory_are_io_errors(tmp_path):
    missing = tmp_path / "missing.fds"
    with pytest.raises(FastdataIOError) as info:
        open_shard(missing)
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == str(missing)
    with pytest.raises(FastdataIOError) as info:
        open_shard(tmp_path)
    assert info.value.errno == errno.EISDIR


# --- gather -------------------------------------------------------------------------------


@pytest.fixture
def three_shards(tmp_path):
    rng = np.random.default_rng(7)
    specs = [(1, True), (2, False), (1, False)]
    shards, docs, masks = [], [], []
    for k, (code, masked) in enumerate(specs):
        d = random_docs(rng, 20, code)
        if code == 2:  # uint32 ids that still fit int32
            d = [x % (1 << 31) for x in d]
        m = random_masks(rng, d) if masked else None
        shards.append(open_shard(write_raw_shard(tmp_path / f"{k}.fds", d, code, m)))
        docs.append(np.concatenate(d))
        masks.append(np.concatenate(m) if masked else np.ones(len(docs[-1]), np.uint8))
    return shards, docs, masks


def random_spans(rng, docs, n):
    spans = []
    for _ in range(n):
        s = int(rng.integers(0, len(docs)))
        off = int(rng.integers(0, len(docs[s]) + 1))
        spans.append((s, off, int(rng.integers(0, len(docs[s]) - off + 1))))
    return np.array(spans, dtype=np.int64).reshape(-1, 3)


@pytest.mark.parametrize("out_dtype", [np.int64, np.int32, np.uint32])
def test_gather_matches_numpy(three_shards, out_dtype):
    shards, docs, masks = three_shards
    spans = random_spans(np.random.default_rng(8), docs, 50)
    expected = np.concatenate([docs[s][o:o + n] for s, o, n in spans]).astype(out_dtype)
    expected_mask = np.concatenate([masks[s][o:o + n] for s, o, n in spans])
    out = np.full(len(expected), 77, out_dtype)
    mask_out = np.full(len(expected), 9, np.uint8)
    gather(shards, spans, out, mask_out)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(mask_out, expected_mask)
    out2 = np.zeros_like(out)
    gather(shards, spans, out2)  # without mask_out
    np.testing.assert_array_equal(out2, expected)


def test_gather_into_uint16(three_shards):
    shards, docs, _ = three_shards
    spans = np.array([[0, 5, 30], [2, 0, 10], [0, 0, 0]])
    out = np.zeros(40, np.uint16)
    gather(shards, spans, out)
    np.testing.assert_array_equal(out, np.concatenate([docs[0][5:35], docs[2][:10]]))
    with pytest.raises(ValueError, match="uint32"):
        gather(shards, np.array([[1, 0, 40]]), out)


def test_gather_accepts_lists_and_empty(three_shards):
    shards, docs, _ = three_shards
    out = np.zeros(3, np.int64)
    gather(shards, [[1, 2, 3]], out)
    np.testing.assert_array_equal(out, docs[1][2:5])
    gather(shards, np.zeros((0, 3), np.int64), np.zeros(0, np.int64))


BAD_SPANS = [
    ([[3, 0, 1]], IndexError, "shard index 3"),
    ([[-1, 0, 1]], IndexError, "shard index -1"),
    ([[0, -1, 1]], IndexError, "offset -1"),
    ([[0, 0, -1]], ValueError, "negative length"),
    ([[0, "END", 1]], IndexError, "out of range"),
    ([[0, 0, (1 << 63) - 1]], IndexError, "out of range"),
    ([[0, (1 << 63) - 1, (1 << 63) - 1]], IndexError, "out of range"),  # offset + length wraps
    ([[0, 0, 5]], ValueError, "cover 7 tokens"),  # too few for out
    ([[0, 0, 4], [1, 0, 4]], ValueError, "more tokens"),  # too many
]


@pytest.mark.parametrize(("rows", "error", "match"), BAD_SPANS)
def test_gather_validates_every_span_before_writing(three_shards, rows, error, match):
    shards, docs, _ = three_shards
    rows = [[len(docs[r[0]]) if v == "END" else v for v in r] for r in rows]
    valid = [[1, 0, 1], [2, 3, 1]]  # good spans first: nothing may be written for them either
    out = np.full(8, 55, np.int64)
    mask_out = np.full(8, 5, np.uint8)
    with pytest.raises(error, match=match):
        gather(shards, np.array(valid + rows, dtype=np.int64), out, mask_out)
    assert (out == 55).all() and (mask_out == 5).all()


def test_gather_rejects_bad_outputs(three_shards):
    shards, _, _ = three_shards
    spans = np.array([[0, 0, 4]])
    with pytest.raises(TypeError):
        gather(shards, spans, np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        gather(shards, spans, np.zeros(8, np.int64)[::2])  # not contiguous
    read_only = np.zeros(4, np.int64)
    read_only.flags.writeable = False
    with pytest.raises(ValueError):
        gather(shards, spans, read_only)
    with pytest.raises(ValueError):
        gather(shards, spans, np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError):
        gather(shards, spans, np.zeros(4, np.int64), np.zeros(3, np.uint8))
    with pytest.raises(TypeError):
        gather(shards, spans, np.zeros(4, np.int64), np.zeros(4, np.int64))
    with pytest.raises(ValueError):
        gather(shards, np.array([0, 0, 4]), np.zeros(4, np.int64))  # spans not (N, 3)
    with pytest.raises(TypeError):
        gather([shards[0], "not a shard"], spans, np.zeros(4, np.int64))
    shards[0].close()
    with pytest.raises(ValueError, match="closed"):
        gather(shards, spans, np.zeros(4, np.int64))


def test_gather_releases_the_gil(tmp_path):
    """While gather copies, another Python thread runs and sees ``out`` half written.

    With the GIL held for the whole copy no Python thread could ever observe a partially
    filled ``out``, so this cannot pass by luck; it retries only to be robust on a busy machine.
    """
    n = 1 << 24
    shard = open_shard(write_raw_shard(tmp_path / "big.fds", [np.ones(n, np.uint16)], 1))
    spans = np.array([[0, 0, n]])
    out = np.empty(n, np.int64)
    partial, done = threading.Event(), threading.Event()

    def watch():
        while not done.is_set():
            if out[0] != -1 and out[-1] == -1:
                partial.set()
                return

    for _ in range(10):
        out.fill(-1)
        done.clear()
        watcher = threading.Thread(target=watch)
        watcher.start()
        gather([shard], spans, out)
        done.set()
        watcher.join()
        assert (out == 1).all()
        if partial.is_set():
            break
    assert partial.is_set(), "no Python thread ran during gather: is the GIL released?"
