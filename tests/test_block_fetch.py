"""Block-granular remote reads (``CacheConfig(blocks=True)``, ``fastdata/reader/blocks.py``)
against a real HTTP range server and Azurite: a shard's metadata first, then only the blocks
a batch needs, each verified; bytes counted at the server, not by fastdata's counters."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil

import fsspec
import numpy as np
import pytest
from _corpus import make_docs, write_jsonl
from _rangeserver import RangeServer

import fastdata
from fastdata import CacheConfig, FastdataIntegrityError, StorageConfig
from fastdata.format.blocks import check_meta
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.pipeline import PackConfig, pack
from fastdata.pack.sources import ReadOptions
from fastdata.pack.tokenizers import TokenizerSpec
from fastdata.storage.download import RetryPolicy

pytestmark = pytest.mark.timeout(120)
INSECURE = {"allow_insecure": True}
POLICY = RetryPolicy(attempts=3, base_backoff=0.01, max_backoff=0.02, range_bytes=16 << 10)
BLOCK = 4096


def packed(root, name: str, block_size: int | None) -> str:
    src = write_jsonl(str(root / f"{name}.jsonl"), make_docs(500, seed=11, long_every=97))
    out = str(root / name)
    pack(PackConfig(inputs=(src,), output=out, encode=EncodeOptions(ReadOptions(), TokenizerSpec("bytes")),
                    shard_size=64 << 10, block_size=block_size))
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same corpus as v1.1 shards of 4 KiB blocks and as v1 shards (a few 64 KB shards)."""
    root = tmp_path_factory.mktemp("blocks")
    return {"v11": packed(root, "v11", BLOCK), "v1": packed(root, "v1", None)}


@pytest.fixture
def server(datasets, tmp_path):
    for name, path in datasets.items():
        shutil.copytree(path, tmp_path / name)
    with RangeServer(str(tmp_path)) as s:
        yield s


def entries(server, name="v11") -> list[dict]:
    with open(os.path.join(server.root, name, "manifest.json")) as f:
        return json.load(f)["shards"]


def served(server, name="v11") -> dict[str, list[tuple[int, int]]]:
    """Byte ranges GET by shard file, as the server logged them."""
    out: dict[str, list[tuple[int, int]]] = {}
    for r in server.requests("GET"):
        if r.path.startswith(f"/{name}/shard-") and r.range:
            lo, hi = r.range.removeprefix("bytes=").split("-")
            out.setdefault(r.path.rsplit("/", 1)[1], []).append((int(lo), int(hi) + 1))
    return out


def dataset(url: str, cache_dir: str, limit: str | None = "64MB", **kw):
    return fastdata.TokenDataset(url, seq_len=64, seed=2, batch_size=4, **kw,
                                 storage=StorageConfig(options=INSECURE, retry=POLICY),
                                 cache=CacheConfig(dir=cache_dir, limit=limit, blocks=True))


def batches(ds, n: int | None = None) -> list[list[int]]:
    loader = fastdata.DataLoader(ds, batch_size=4, num_workers=0, prefetch_bytes=0)
    out = []
    for b in loader:
        out.append(b["input_ids"].flatten().tolist())
        if n is not None and len(out) == n:
            break
    return out


def test_the_first_batch_fetches_metadata_and_its_blocks_not_whole_shards(server, datasets, tmp_path):
    local = batches(fastdata.TokenDataset(datasets["v11"], seq_len=64, seed=2, batch_size=4), 1)
    ds = dataset(server.url + "/v11", str(tmp_path / "c"))
    assert batches(ds, 1) == local
    got = served(server)
    by_name = {e["name"]: e for e in entries(server)}
    first = ds.plan(0, ds.resolved_world()).shards_of(0).tolist()
    assert sorted(got) == sorted(by_name[e]["name"] for e in [entries(server)[s]["name"] for s in first])
    for name, ranges in got.items():
        e = by_name[name]
        assert ranges[0] == (0, e["meta_bytes"])  # the metadata section first, in one GET
        payload = sum(hi - lo for lo, hi in ranges[1:])
        assert 0 < payload <= 4 * 2 * BLOCK  # four samples of 65 tokens: a block or two each
        assert payload < (e["stored_bytes"] - e["meta_bytes"]) / 2  # far from the whole shard


def test_an_epoch_equals_the_local_read_and_fetches_each_byte_once(server, datasets, tmp_path):
    local = batches(fastdata.TokenDataset(datasets["v11"], seq_len=64, seed=2, batch_size=4))
    ds = dataset(server.url + "/v11", str(tmp_path / "c"))
    assert batches(ds) == local  # step by step
    got = served(server)
    for e in entries(server):
        ranges = sorted(got.get(e["name"], []))
        covered = np.zeros(e["stored_bytes"], dtype=np.int64)
        for lo, hi in ranges:
            covered[lo:hi] += 1
        assert covered.max() <= 1, f"{e['name']}: some bytes were fetched twice"  # each block once
    total = sum(hi - lo for rs in got.values() for lo, hi in rs)
    assert total <= sum(e["stored_bytes"] for e in entries(server))
    again = dataset(server.url + "/v11", str(tmp_path / "c"))  # warm: every block verified from disk
    before = len(server.requests("GET"))
    assert batches(again) == local
    assert [r for r in server.requests("GET")[before:] if "/shard-" in r.path] == []


def test_a_flipped_byte_on_disk_refetches_exactly_that_block(server, datasets, tmp_path):
    cache = str(tmp_path / "c")
    local = batches(fastdata.TokenDataset(datasets["v11"], seq_len=64, seed=2, batch_size=4))
    assert batches(dataset(server.url + "/v11", cache)) == local
    e = next(e for e in entries(server) if e["stored_bytes"] > e["meta_bytes"] + 3 * BLOCK)
    path = next(os.path.join(d, e["name"]) for d, _, names in os.walk(cache) if e["name"] in names)
    at = e["meta_bytes"] + 2 * BLOCK + 17  # inside block 2
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    before = len(server.requests("GET"))
    assert batches(dataset(server.url + "/v11", cache)) == local
    again = [r for r in server.requests("GET")[before:] if "/shard-" in r.path]
    start = e["meta_bytes"] + 2 * BLOCK
    assert [(r.path.rsplit("/", 1)[1], r.range) for r in again] == [
        (e["name"], f"bytes={start}-{start + BLOCK - 1}")]


def test_a_corrupt_remote_block_is_named_with_its_byte_range(server, tmp_path):
    e = entries(server)[1]
    path = os.path.join(server.root, "v11", e["name"])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[e["meta_bytes"] + BLOCK + 5] ^= 0x01  # block 1 of the payload
    server.replace(f"/v11/{e['name']}", bytes(data))
    ds = fastdata.open_dataset(server.url + "/v11", storage=StorageConfig(options=INSECURE, retry=POLICY),
                               cache=CacheConfig(dir=str(tmp_path / "c"), blocks=True))
    start = e["meta_bytes"] + BLOCK
    with pytest.raises(FastdataIntegrityError, match=rf"{e['name']}: block 1 \(bytes \[{start}, "
                                                     rf"{start + BLOCK}\)\) hashes to .*after 3 attempts"):
        ds.tokens(int(ds._token_starts[1]), int(ds._token_starts[2]))
    ds.close()
    gets = [r.range for r in server.requests("GET", f"/v11/{e['name']}")]
    assert gets[0] == f"bytes=0-{e['meta_bytes'] - 1}"
    first, last = (int(x) for x in gets[1].removeprefix("bytes=").split("-"))
    assert first <= start and last >= start + BLOCK - 1  # the run that held it
    assert gets[2:] == [f"bytes={start}-{start + BLOCK - 1}"] * 2  # then the bad block alone, twice


def test_a_v1_dataset_streams_whole_shards(server, datasets, tmp_path):
    local = batches(fastdata.TokenDataset(datasets["v1"], seq_len=64, seed=2, batch_size=4))
    assert batches(dataset(server.url + "/v1", str(tmp_path / "c"))) == local
    for e in entries(server, "v1"):
        ranges = served(server, "v1").get(e["name"], [])
        assert sum(hi - lo for lo, hi in ranges) in (0, e["stored_bytes"])  # whole, as before


def _read_epoch(url: str, cache: str, out: str, rank: int) -> None:
    ds = fastdata.TokenDataset(url, seq_len=64, seed=2, batch_size=4,
                               world=fastdata.World(rank=rank, world_size=2, local_rank=rank,
                                                    ranks_per_node=2),
                               storage=StorageConfig(options=INSECURE, retry=POLICY),
                               cache=CacheConfig(dir=cache, limit="64MB", blocks=True))
    ids = [int(i) for b in fastdata.DataLoader(ds, batch_size=4, num_workers=1) for i in b["sample_ids"]]
    with open(out, "w") as f:
        json.dump(ids, f)


def test_two_ranks_on_a_node_fetch_each_block_once_and_read_exactly_once(server, datasets, tmp_path):
    cache = str(tmp_path / "c")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_read_epoch,
                         args=(server.url + "/v11", cache, str(tmp_path / f"{r}.json"), r)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(100)
    assert [p.exitcode for p in procs] == [0, 0]
    ids = [i for r in range(2) for i in json.loads((tmp_path / f"{r}.json").read_text())]
    whole = fastdata.TokenDataset(datasets["v11"], seq_len=64, seed=2, batch_size=8)
    want = [int(i) for b in fastdata.DataLoader(whole, batch_size=8, num_workers=0) for i in b["sample_ids"]]
    assert sorted(ids) == sorted(want) and len(ids) == len(set(ids))  # exactly once across the ranks
    got = served(server)
    for e in entries(server):
        covered = np.zeros(e["stored_bytes"], dtype=np.int64)
        for lo, hi in got.get(e["name"], []):
            covered[lo:hi] += 1
        assert covered.max() <= 1, f"{e['name']}: a block was fetched twice on one node"


def test_blocks_from_azurite_through_adlfs(datasets, azurite, container, tmp_path):
    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    fs.put(datasets["v11"], f"{container}/v11", recursive=True)
    url = f"az://{container}/v11"
    options = {"connection_string": azurite["conn"], "allow_insecure": True}
    local = batches(fastdata.TokenDataset(datasets["v11"], seq_len=64, seed=2, batch_size=4))
    ds = fastdata.TokenDataset(url, seq_len=64, seed=2, batch_size=4,
                               storage=StorageConfig(options=options, retry=POLICY),
                               cache=CacheConfig(dir=str(tmp_path / "c"), limit="64MB", blocks=True))
    assert batches(ds) == local
    info = ds.data.shards[0]
    kept = next(os.path.join(d, info.name) for d, _, n in os.walk(tmp_path / "c") if info.name in n)
    with open(kept, "rb") as f:  # the cached copy is the sparse file: its metadata checks
        check_meta(f.read(info.meta_bytes), info)


def test_the_metrics_count_what_the_server_served(server, tmp_path):
    fastdata.metrics.registry.reset()
    ds = dataset(server.url + "/v11", str(tmp_path / "c"))
    loader = fastdata.DataLoader(ds, batch_size=4, num_workers=0)
    consumed = sum(b["input_ids"].numel() + b["labels"].numel() for b in loader)  # tokens gathered
    snap = loader.metrics()
    gets = [r for r in server.requests("GET") if "/shard-" in r.path]
    bytes_served = sum(hi - lo for rs in served(server).values() for lo, hi in rs)
    assert snap["fetch.requests"] == len(gets)
    assert snap["fetch.bytes"] == bytes_served
    assert snap["reader.bytes"] == consumed * ds.data.dtype.itemsize
    delivered = snap["loader.tokens"] * ds.data.dtype.itemsize  # the input tokens of every batch
    assert snap["fetch.bytes_per_consumed"] == pytest.approx(bytes_served / delivered)
    assert 0 < snap["cache.block_hit_rate"] < 1 and snap["fetch.blocks"] > 0
    line = fastdata.metrics.summary_line(snap)
    assert "block hit" in line and f"in {len(gets)} requests" in line


def test_a_full_disk_while_writing_a_block_is_a_named_cache_error(server, tmp_path, monkeypatch):
    ds = dataset(server.url + "/v11", str(tmp_path / "c"))
    first = ds.plan(0, ds.resolved_world()).shards_of(0).tolist()
    meta = sum(entries(server)[s]["meta_bytes"] for s in first)  # written when the shards open
    monkeypatch.setenv("FASTDATA_TEST_ENOSPC", f"download:{meta + BLOCK // 2}")  # then the first block
    with pytest.raises(fastdata.FastdataCacheError, match=r"no space left writing \d+ bytes of .*shard-\d+"
                                                          r"\.fds at byte \d+"):
        batches(ds)
    ds.data.close()  # unpin now, not when a later test's GC finds it
