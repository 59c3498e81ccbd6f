"""Manifest validation: corrupt manifests (E5), unsafe names (G2 manifest side), codecs (G1b)."""

from __future__ import annotations

import json

import pytest

from fastdata.errors import FastdataFormatError
from fastdata.format.manifest import Manifest, ShardInfo, TokenizerInfo, parse_manifest

pytestmark = pytest.mark.timeout(30)

H = "0" * 32


def good_doc(**changes):
    m = Manifest(
        dtype="uint16", has_loss_mask=False, compression=None,
        tokenizer=TokenizerInfo("bytes", "bytes", 258, 256, 257, "f" * 32),
        shards=(ShardInfo("shard-00000.fds", 10, 10, 1, 3, H, H),
                ShardInfo("shard-00001.fds", 20, 20, 2, 5, "1" * 32, "1" * 32)),
    )
    doc = json.loads(m.to_json())
    doc.update(changes)
    return doc


def parse(doc, **kw):
    return parse_manifest(json.dumps(doc), "/data/ds/manifest.json", **kw)


def test_round_trip_and_totals():
    m = parse(good_doc())
    assert m.num_docs == 3 and m.num_tokens == 8
    assert parse_manifest(m.to_json(), "x").fingerprint == m.fingerprint
    assert json.loads(m.to_json())["totals"] == {"shards": 2, "docs": 3, "tokens": 8,
                                                 "stored_bytes": 30, "raw_bytes": 30}


@pytest.mark.parametrize(("text", "needle"), [
    ("", "invalid manifest JSON at line 1 column 1"),
    ('{"format": "fastdata", "shards": [', "invalid manifest JSON at line 1"),
    ("[1, 2]", "must be a JSON object"),
    ('{"format": "other"}', "field 'format'"),
])
def test_corrupt_json_names_path_and_position(text, needle):
    with pytest.raises(FastdataFormatError) as err:
        parse_manifest(text, "/data/ds/manifest.json")
    assert "/data/ds/manifest.json" in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize("field", ["format_version", "complete", "dtype", "has_loss_mask",
                                   "tokenizer", "shards"])
def test_missing_fields(field):
    doc = good_doc()
    del doc[field]
    doc.pop("fingerprint")
    with pytest.raises(FastdataFormatError, match="manifest.json"):
        parse(doc)


def test_shard_field_errors():
    doc = good_doc()
    doc["shards"][1]["tokens"] = -5
    with pytest.raises(FastdataFormatError, match=r"shards\[1\]: field 'tokens' is negative \(-5\)"):
        parse(doc)
    doc = good_doc()
    del doc["shards"][0]["xxh3_128"]
    with pytest.raises(FastdataFormatError, match=r"shards\[0\]: missing field 'xxh3_128'"):
        parse(doc)
    doc = good_doc()
    doc["shards"][0]["docs"] = True
    with pytest.raises(FastdataFormatError, match="'docs' has invalid value True"):
        parse(doc)


def test_duplicate_shard_names():
    doc = good_doc()
    doc["shards"][1]["name"] = doc["shards"][0]["name"]
    with pytest.raises(FastdataFormatError, match="duplicate shard name 'shard-00000.fds'"):
        parse(doc)


@pytest.mark.parametrize("name", [
    "../x.fds", "a/../../x.fds", "/etc/passwd", "C:\\x.fds", "x\0y.fds", ".", "..",
    "manifest.json", "x" * 5000 + ".fds", "https://evil.example/x.fds", "file:///etc/shadow",
    "az://other-container/x.fds", ".hidden.fds", "noext", "a\nb.fds",
])
def test_unsafe_names_rejected_and_quoted(name):
    doc = good_doc()
    doc["shards"][0]["name"] = name
    doc.pop("fingerprint")
    with pytest.raises(FastdataFormatError) as err:
        parse(doc)
    msg = str(err.value)
    assert "shards[0]" in msg and "shard name" in msg
    assert "\0" not in msg and "\n" not in msg  # quoted with escapes
    assert len(msg) < 600


@pytest.mark.parametrize("codec", ["pkl", "gzip", "lz4"])
def test_unknown_codec_rejected(codec):
    with pytest.raises(FastdataFormatError, match=f"unknown compression codec '{codec}'"):
        parse(good_doc(compression=codec))


def test_newer_version_and_incomplete():
    newer = r"unsupported format version 2 \(this fastdata reads <= 1\)"
    with pytest.raises(FastdataFormatError, match=newer):
        parse(good_doc(format_version=2))
    with pytest.raises(FastdataFormatError, match="marked incomplete"):
        parse(good_doc(complete=False))
    assert parse(good_doc(complete=False), allow_incomplete=True).complete is False


def test_tampered_manifest_fails_fingerprint():
    doc = good_doc()
    doc["shards"][0]["xxh3_128"] = doc["shards"][0]["raw_xxh3_128"] = "a" * 32
    with pytest.raises(FastdataFormatError, match="field 'fingerprint'"):
        parse(doc)


def test_compression_must_match_shard_names():
    doc = good_doc(compression="zstd")
    doc.pop("fingerprint")
    with pytest.raises(FastdataFormatError, match="does not match compression"):
        parse(doc)
