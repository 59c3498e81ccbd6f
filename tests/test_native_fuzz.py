"""E2: mutated shards either open consistently or are refused naming a field and its byte
offset; the native reader never crashes or reads out of bounds. Gather spans likewise."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from _shards import ERROR_RE, FIELDS, fix_crc, reference_accepts, shard_bytes, write_raw_shard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastdata.errors import FastdataFormatError
from fastdata.format.reader import gather, open_shard
from fastdata.format.spec import DTYPES, HEADER_SIZE

pytestmark = pytest.mark.timeout(120)

U64 = (1 << 64) - 1
EDGES = [0, 1, 2, 7, 8, 127, 128, 129, 4095, 4096, 4097, 8192, 12288, (1 << 31) - 1, 1 << 31,
         (1 << 32) - 1, 1 << 32, 1 << 61, (1 << 62) + 1, (1 << 63) - 1, 1 << 63, (1 << 63) + 1,
         U64 // 2 + 1, U64 // 4 + 1, U64 - 1, U64]
FIELD_NAMES = [name for name in FIELDS if name != "magic"]


def expected_offset(field):
    """Byte offset that a refusal naming ``field`` must report (None: depends on the byte)."""
    if field.startswith("doc_index["):
        return HEADER_SIZE + 8 * int(field[len("doc_index["):-1])
    if field == "header":
        return 0
    if field == "reserved":
        return None
    return FIELDS[field][0]


values = st.one_of(st.sampled_from(EDGES), st.integers(0, U64), st.integers(0, 20000))
mutations = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(FIELD_NAMES), values),
    st.tuples(st.just("index"), st.integers(0, 8), values),
    st.tuples(st.just("flip"), st.integers(0, HEADER_SIZE + 80), st.integers(0, 7)),
    st.tuples(st.just("byte"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("resize"), st.integers(-5000, 5000), st.just(0)),
)


@st.composite
def shards(draw):
    code = draw(st.sampled_from([1, 2]))
    lengths = draw(st.lists(st.integers(0, 40), max_size=6))
    docs = [np.arange(n, dtype=np.int64) + 1000 * k for k, n in enumerate(lengths)]
    masks = [np.arange(n) % 2 for n in lengths] if draw(st.booleans()) else None
    data = bytearray(shard_bytes(docs, code, masks))
    for kind, where, value in draw(st.lists(mutations, min_size=1, max_size=3)):
        if kind == "field" and len(data) >= HEADER_SIZE:
            offset, fmt = FIELDS[where]
            struct.pack_into("<" + fmt, data, offset, value % (1 << (8 * struct.calcsize(fmt))))
        elif kind == "index" and HEADER_SIZE + 8 * where + 8 <= len(data):
            struct.pack_into("<Q", data, HEADER_SIZE + 8 * where, value)
        elif kind == "flip" and where < len(data):
            data[where] ^= 1 << value
        elif kind == "byte" and where < len(data):
            data[where] = value
        elif kind == "resize":
            data = data[:max(0, len(data) + where)] if where < 0 else data + bytes(where)
    if len(data) >= HEADER_SIZE and draw(st.integers(0, 3)) > 0:
        fix_crc(data)  # mostly, so that checks after the CRC are reached too
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def check_consistent(shard, data):
    num_docs, num_tokens = struct.unpack_from("<QQ", data, 16)
    tokens_offset, mask_offset = struct.unpack_from("<QQ", data, 40)
    dtype = DTYPES[data[10]]
    assert (shard.num_docs, shard.num_tokens, shard.file_size) == (num_docs, num_tokens, len(data))
    index = np.frombuffer(data, "<u8", num_docs + 1, HEADER_SIZE)
    tokens = np.frombuffer(data, dtype, num_tokens, tokens_offset)
    np.testing.assert_array_equal(shard.doc_offsets(), index)
    np.testing.assert_array_equal(shard.tokens(0, num_tokens), tokens)
    for i in range(num_docs):
        a, b = int(index[i]), int(index[i + 1])
        assert shard.doc_bounds(i) == (a, b - a)
        np.testing.assert_array_equal(shard.doc(i), tokens[a:b])
        if shard.has_loss_mask:
            mask = np.frombuffer(data, np.uint8, b - a, mask_offset + a)
            np.testing.assert_array_equal(shard.doc_loss_mask(i), mask)
    with pytest.raises(IndexError):
        shard.doc(num_docs)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=shards())
def test_mutated_shards_open_consistently_or_are_refused(fuzz_dir, data):
    path = os.path.join(fuzz_dir, "fuzz.fds")
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)  # never truncate a file that a live mapping may use
    accepted = reference_accepts(data)
    try:
        shard = open_shard(path)
    except FastdataFormatError as error:
        assert not accepted, f"valid shard refused: {error}"
        match = ERROR_RE.search(str(error))
        assert match, str(error)
        assert (match.group(1), int(match.group(2))) == (error.field, error.byte_offset)
        offset = expected_offset(error.field)
        if offset is None:
            assert HEADER_SIZE // 2 <= error.byte_offset < HEADER_SIZE
        else:
            assert error.byte_offset == offset, str(error)
        assert error.path == path and str(error).startswith(path)
        return
    assert accepted, "the native reader accepted a shard docs/format.md refuses"
    with shard:
        check_consistent(shard, data)


@pytest.fixture(scope="module")
def gather_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("gather")
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 60000, 300), rng.integers(0, 1 << 31, 200), rng.integers(0, 9, 0)]
    masks = [rng.integers(0, 2, 300, dtype=np.uint8), None, None]
    shards = [open_shard(write_raw_shard(root / f"{k}.fds", [d], code, None if m is None else [m]))
              for k, (d, m, code) in enumerate(zip(docs, masks, [1, 2, 1]))]
    return shards, docs, [np.ones(len(d), np.uint8) if m is None else m for d, m in zip(docs, masks)]


span_rows = st.lists(st.tuples(st.integers(-1, 3), st.integers(-2, 320), st.integers(-2, 320)), max_size=6)


@settings(max_examples=400, deadline=None)
@given(rows=span_rows, extra=st.integers(-1, 1),
       out_dtype=st.sampled_from(["int64", "int32", "uint32", "uint16"]))
def test_random_spans_gather_like_numpy_or_raise_untouched(gather_shards, rows, extra, out_dtype):
    shards, docs, masks = gather_shards
    valid = all(0 <= s < 3 and 0 <= o <= len(docs[s]) and 0 <= n <= len(docs[s]) - o for s, o, n in rows)
    valid = valid and not (out_dtype == "uint16" and any(s == 1 for s, _, _ in rows))
    covered = sum(max(n, 0) for _, _, n in rows)
    size = max(covered + extra, 0)
    out = np.full(size, 123, out_dtype)
    mask_out = np.full(size, 7, np.uint8)
    spans = np.array(rows, dtype=np.int64).reshape(-1, 3)
    if valid and size == covered:
        gather(shards, spans, out, mask_out)
        pieces = [docs[s][o:o + n] for s, o, n in rows]
        expected = np.concatenate(pieces) if pieces else np.zeros(0)
        np.testing.assert_array_equal(out, expected.astype(out_dtype))
        expected_mask = np.concatenate([masks[s][o:o + n] for s, o, n in rows]) if rows else np.zeros(0)
        np.testing.assert_array_equal(mask_out, expected_mask)
    else:
        with pytest.raises((IndexError, ValueError)):
            gather(shards, spans, out, mask_out)
        assert (out == 123).all() and (mask_out == 7).all()
