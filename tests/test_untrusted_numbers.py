"""Numbers read from a manifest or shards.bin are bounded before use: a FastdataFormatError
naming the field, never an OverflowError or an allocation sized by the bad value."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fastdata
from fastdata.format.manifest import MAX_COUNT, Manifest, ShardInfo, TokenizerInfo
from fastdata.format.shard_table import RECORD, TABLE_NAME, ShardTable

pytestmark = pytest.mark.timeout(30)
H = "0" * 32
TOKENIZER = TokenizerInfo("bytes", "bytes", 258, 256, 257, "f" * 32)


def manifest_doc(n: int = 2) -> dict:
    shards = tuple(ShardInfo(f"shard-{i:05d}.fds", 10, 10, 1, 3, H, H) for i in range(n))
    return json.loads(Manifest("uint16", False, None, TOKENIZER, shards).to_json())


def write(root, doc: dict) -> str:
    root.mkdir(exist_ok=True)
    doc.pop("fingerprint", None)
    (root / "manifest.json").write_text(json.dumps(doc))
    return str(root)


@pytest.mark.parametrize("field", ["tokens", "docs", "stored_bytes", "raw_bytes"])
@pytest.mark.parametrize("value", [1 << 64, (1 << 63) - 1, MAX_COUNT + 1])
def test_huge_shard_field_is_a_format_error_naming_it(tmp_path, field, value):
    doc = manifest_doc()
    doc["shards"][1][field] = value
    with pytest.raises(fastdata.FastdataFormatError, match=rf"shards\[1\].*'{field}'.*{value}"):
        fastdata.open_dataset(write(tmp_path / "ds", doc))


def test_largest_accepted_value_still_parses(tmp_path):
    doc = manifest_doc()
    doc["shards"][0]["tokens"] = MAX_COUNT
    from fastdata.format.manifest import parse_manifest

    assert parse_manifest(json.dumps(doc), "m").num_tokens == MAX_COUNT + 3


def test_binary_table_record_out_of_range_names_record_and_byte(tmp_path):
    n = 40
    records = np.zeros(n, dtype=RECORD)
    records["stored_bytes"] = records["raw_bytes"] = 10
    records["docs"], records["tokens"] = 1, 3
    manifest = Manifest("uint16", False, None, TOKENIZER, ShardTable(records, None, False))
    text, _ = manifest.serialize(inline_limit=4)
    records["tokens"][7] = 1 << 63
    table = records.tobytes()
    doc = json.loads(text)
    import xxhash

    doc["shard_table"]["xxh3_128"] = xxhash.xxh3_128_hexdigest(table)
    root = tmp_path / "ds"
    root.mkdir()
    (root / TABLE_NAME).write_bytes(table)
    byte = 7 * RECORD.itemsize + RECORD.fields["tokens"][1]
    with pytest.raises(fastdata.FastdataFormatError, match=rf"record 7 \(byte {byte}\).*'tokens'"):
        fastdata.open_dataset(write(root, doc))


def test_totals_that_would_overflow_are_refused(tmp_path):
    n = 1 << 15  # 2^15 shards of 2^48 tokens: the int64 sum would wrap
    records = np.zeros(n, dtype=RECORD)
    records["stored_bytes"] = records["raw_bytes"] = 10
    records["docs"], records["tokens"] = 1, MAX_COUNT
    from fastdata.errors import FastdataFormatError
    from fastdata.format.manifest import parse_manifest

    manifest = Manifest("uint16", False, None, TOKENIZER, ShardTable(records, None, False))
    text, table = manifest.serialize(inline_limit=4)
    with pytest.raises(FastdataFormatError, match="'tokens' add up to"):
        parse_manifest(text, "m", read_table=lambda name: table)


@pytest.mark.parametrize(("field", "value"), [("epoch", 1 << 22 | 1), ("epoch", 1 << 64), ("step", 1 << 63),
                                              ("step", -1)])
def test_state_integers_are_bounded(field, value):
    from fastdata.errors import FastdataStateError
    from fastdata.loader.state import parse_state

    state = {"version": 1, "epoch": 0, "step": 0, "identity": {}}
    state[field] = value
    with pytest.raises(FastdataStateError, match=rf"state field '{field}' must be an integer from"):
        parse_state(state)
