"""Large manifests keep their shard list in a memory-mapped binary table (F7)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from _corpus import make_docs, write_jsonl

import fastdata
from fastdata.format.manifest import Manifest
from fastdata.format.shard_table import RECORD, TABLE_NAME, ShardTable
from fastdata.format.writer import write_shard
from fastdata.pack.tokenizers import BytesTokenizer

pytestmark = pytest.mark.timeout(120)


def pack_cli(src, out, *extra):
    subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", src, "-o", str(out),
                    "--shard-size", "2KB", "-q", *extra], check=True, timeout=90)


def test_pack_writes_a_table_above_the_limit(tmp_path, monkeypatch):
    src = write_jsonl(str(tmp_path / "c.jsonl"), make_docs(200, seed=2))
    pack_cli(src, tmp_path / "inline")
    code = ("import sys, fastdata.format.shard_table as t, fastdata.cli.main as m; "
            "t.INLINE_LIMIT = 3; sys.exit(m.main(sys.argv[1:]))")
    subprocess.run([sys.executable, "-P", "-c", code, "pack", src, "-o", str(tmp_path / "table"),
                    "--shard-size", "2KB", "-q"], check=True, timeout=90)
    doc = json.loads((tmp_path / "table" / "manifest.json").read_text())
    assert "shards" not in doc and doc["shard_table"]["name"] == TABLE_NAME
    # pack writes format v1.1: 96-byte records with each shard's metadata section
    assert doc["shard_table"]["record_bytes"] == 96
    assert (tmp_path / "table" / TABLE_NAME).stat().st_size == doc["shard_table"]["count"] * 96
    with fastdata.open_dataset(str(tmp_path / "inline")) as a, \
            fastdata.open_dataset(str(tmp_path / "table")) as b:
        assert a.manifest.fingerprint == b.manifest.fingerprint  # same content, same identity
        assert len(b.shards) > 3
        assert a.num_docs == b.num_docs
        assert all(a.doc(i).tolist() == b.doc(i).tolist() for i in range(a.num_docs))
    assert subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "verify",
                           str(tmp_path / "table")], capture_output=True, timeout=60).returncode == 0
    data = bytearray((tmp_path / "table" / TABLE_NAME).read_bytes())
    data[5] ^= 1
    (tmp_path / "table" / TABLE_NAME).write_bytes(bytes(data))
    with pytest.raises(fastdata.FastdataFormatError, match="shards.bin hashes to"):
        fastdata.open_dataset(str(tmp_path / "table"))
    (tmp_path / "table" / TABLE_NAME).write_bytes(bytes(data[:-64]))
    with pytest.raises(fastdata.FastdataFormatError, match="shards.bin has"):
        fastdata.open_dataset(str(tmp_path / "table"))


def test_f7_million_shard_manifest(tmp_path):
    """10⁶ shards / 10⁹ packed samples: open, construct TokenDataset and read the first
    batch in < 2 s with < 200 MB more RSS (run in a fresh process to measure it alone)."""
    root = tmp_path / "huge"
    root.mkdir()
    tokens = np.arange(1001, dtype=np.uint32) % 250
    w = write_shard(str(tmp_path / "one.fds"), tokens, np.array([1001]), None, "uint16")
    n = 1_000_000
    records = np.zeros(n, dtype=RECORD)
    records["stored_bytes"] = records["raw_bytes"] = w.size
    records["docs"], records["tokens"] = 1, 1001
    records["xxh3_128"] = records["raw_xxh3_128"] = np.frombuffer(bytes.fromhex(w.xxh3_128), "V16")[0]
    manifest = Manifest("uint16", False, None, BytesTokenizer().info, ShardTable(records, None, False))
    text, table = manifest.serialize()
    (root / TABLE_NAME).write_bytes(table)
    (root / "manifest.json").write_text(text)
    code = f"""
import json, resource, time, numpy as np
t0 = time.perf_counter(); r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import fastdata, torch, shutil
from fastdata.sampling.order import Stripe
t1 = time.perf_counter(); r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ds = fastdata.TokenDataset({str(root)!r}, seq_len=1, seed=1, batch_size=8)
world = ds.resolved_world()
order = ds.epoch_order(0, world)
ids = order.slots(0, 0, order.config.global_batch)
for s in np.unique(order.shards_of(ids[ids >= 0])):  # only the first batch's shards exist
    shutil.copy({str(tmp_path / "one.fds")!r}, f"{str(root)}/shard-{{s:05d}}.fds")
for s in np.unique(order.shards_of(ids[ids >= 0]) + 1):
    shutil.copy({str(tmp_path / "one.fds")!r}, f"{str(root)}/shard-{{s:05d}}.fds")
batch = next(iter(fastdata.DataLoader(ds, batch_size=8, num_workers=0)))
t2 = time.perf_counter(); r2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"samples": ds.space.num_samples, "seconds": t2 - t1, "rss_mb": (r2 - r1) / 1024,
                  "shape": list(batch["input_ids"].shape)}}))
"""
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["samples"] >= 10**9 and result["shape"] == [8, 1]
    assert result["seconds"] < 2.0, result
    assert result["rss_mb"] < 200, result
    shutil.rmtree(root)
