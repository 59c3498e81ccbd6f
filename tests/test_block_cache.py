"""The node cache accounts a shard fetched block by block at the pages written into it
(``NodeCache.grow``), not at its full size: a partly fetched shard takes only its share of
the limit, room for its new blocks is made by evicting other unpinned files, and the hard
limit holds on disk (measured by allocated bytes, outside the library)."""

from __future__ import annotations

import os
import shutil

import pytest
from _corpus import make_docs, write_jsonl
from _fs import DiskMonitor
from _rangeserver import RangeServer

import fastdata
from fastdata import CacheConfig, FastdataCacheError, StorageConfig
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.pipeline import PackConfig, pack
from fastdata.pack.sources import ReadOptions
from fastdata.pack.tokenizers import TokenizerSpec
from fastdata.storage.cache import DB_DIR, PAGE, NodeCache
from fastdata.storage.download import RetryPolicy

pytestmark = pytest.mark.timeout(120)
INSECURE = {"allow_insecure": True}
POLICY = RetryPolicy(attempts=3, base_backoff=0.01, max_backoff=0.02, range_bytes=16 << 10)
SHARD = 8 << 10
STEPS = 300  # of about 1,000 in the epoch: a tight cache is slow over the Python range server


def sparse_fill(size: int, head: bytes = b"meta"):
    """A fill like a block-mode shard's: a little data at the start, holes to ``size``."""
    def fill(path: str) -> None:
        with open(path, "r+b") as f:
            f.write(head)
            f.truncate(size)
    return fill


def full_fill(size: int):
    def fill(path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"x" * size)
    return fill


def test_a_sparse_file_is_accounted_at_its_written_pages_and_grows_by_evicting(tmp_path):
    cache = NodeCache(str(tmp_path / "c"), 36 * PAGE, wait_timeout=0.3)
    a = cache.acquire("ns", "a", 32 * PAGE, sparse_fill(32 * PAGE), accounted=PAGE)
    assert cache.usage() == PAGE  # not its 32 pages
    cache.acquire("ns", "b", 8 * PAGE, full_fill(8 * PAGE)).release()
    assert cache.usage() == 9 * PAGE
    cache.grow("ns", "b", PAGE)  # not sparse: accounted in full already, left as it is
    assert cache.usage() == 9 * PAGE
    cache.grow("ns", "a", 31 * PAGE)  # 40 pages would be over the limit: b (unpinned) goes
    assert cache.usage() == 32 * PAGE
    assert not os.path.exists(tmp_path / "c" / "ns" / "b")
    cache.grow("ns", "a", 10 * PAGE)  # capped at the file's own (page-rounded) size
    assert cache.usage() == 32 * PAGE
    with pytest.raises(FastdataCacheError, match="cannot make room"):  # a is pinned: no room for c
        cache.acquire("ns", "c", 8 * PAGE, full_fill(8 * PAGE))
    a.release()
    cache.close()
    again = NodeCache(str(tmp_path / "c"), 36 * PAGE, wait_timeout=0.3)  # reconciled on open
    assert again.usage() == 32 * PAGE
    calls: list[str] = []
    hit = again.acquire("ns", "a", 32 * PAGE, calls.append, accounted=PAGE)
    assert calls == [] and os.path.getsize(hit.path) == 32 * PAGE  # the sparse file is a hit
    hit.release()
    again.close()


def test_growing_a_pinned_sparse_file_past_the_pins_is_a_named_error(tmp_path):
    cache = NodeCache(str(tmp_path / "c"), 16 * PAGE, wait_timeout=0.2)
    a = cache.acquire("ns", "a", 12 * PAGE, sparse_fill(12 * PAGE), accounted=PAGE)
    b = cache.acquire("ns", "b", 12 * PAGE, sparse_fill(12 * PAGE), accounted=PAGE)
    cache.grow("ns", "a", 11 * PAGE)
    with pytest.raises(FastdataCacheError, match="cannot make room for ns/b"):
        cache.grow("ns", "b", 11 * PAGE)  # a is pinned and holds 12 of the 16 pages
    assert cache.usage() == 13 * PAGE  # the refused growth is not accounted
    a.release()
    cache.grow("ns", "b", 11 * PAGE)  # now a can go
    assert cache.usage() == 12 * PAGE and not os.path.exists(tmp_path / "c" / "ns" / "a")
    b.release()
    cache.close()


def test_a_records_rebuild_adopts_a_sparse_file_at_its_allocated_bytes(tmp_path):
    root = tmp_path / "c"
    with NodeCache(str(root), 64 * PAGE) as cache:
        cache.acquire("ns", "a", 32 * PAGE, sparse_fill(32 * PAGE, b"m" * 100), accounted=PAGE).release()
    os.truncate(root / DB_DIR / "data.mdb", 4096)  # damaged records: rebuilt from the files
    allocated = os.stat(root / "ns" / "a").st_blocks * 512
    assert 0 < allocated < 32 * PAGE
    with NodeCache(str(root), 64 * PAGE) as again:
        assert again.usage() == allocated
        calls: list[str] = []
        hit = again.acquire("ns", "a", 32 * PAGE, calls.append, accounted=PAGE)
        assert calls == []  # adopted, and a hit at its full size
        hit.release()
        again.grow("ns", "a", 64 * PAGE)
        assert again.usage() == 32 * PAGE  # grown to the whole file, no further


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 80 raw v1.1 shards of 8 KiB with 4 KiB blocks."""
    root = tmp_path_factory.mktemp("blockcache")
    src = write_jsonl(str(root / "c.jsonl"), make_docs(1500, seed=5, long_every=0))
    out = str(root / "ds")
    pack(PackConfig(inputs=(src,), output=out, encode=EncodeOptions(ReadOptions(), TokenizerSpec("bytes")),
                    shard_size=SHARD, block_size=4096))
    return out


def _ids(ds, steps: int) -> list[list[int]]:
    loader = fastdata.DataLoader(ds, batch_size=4, num_workers=0, prefetch_bytes=0)
    out = []
    for b in loader:
        out.append(b["input_ids"].flatten().tolist())
        if len(out) == steps:
            break
    return out


def test_a_cache_at_15_percent_reads_the_local_batches_within_its_limit(corpus, tmp_path):
    """Cache at 15 % of the dataset, blocks on: the first STEPS batches equal the local read step by step,
    the disk never holds more than the limit (allocated bytes, temp data included, sampled
    from outside), and the cache ends holding parts of more shards than whole-shard
    accounting could (limit // shard size)."""
    shutil.copytree(corpus, tmp_path / "ds")
    files = [n for n in os.listdir(tmp_path / "ds") if n.endswith(".fds")]
    total = sum(os.path.getsize(tmp_path / "ds" / n) for n in files)
    largest = max(os.path.getsize(tmp_path / "ds" / n) for n in files)
    limit = int(total * 0.15)
    assert limit >= largest * 5, "the corpus is too small for the loader's minimum"  # set-up check
    kwargs = {"seq_len": 64, "seed": 3, "batch_size": 4}
    want = _ids(fastdata.TokenDataset(str(tmp_path / "ds"), **kwargs), STEPS)
    cache = str(tmp_path / "cache")
    with RangeServer(str(tmp_path)) as server:
        ds = fastdata.TokenDataset(server.url + "/ds", **kwargs,
                                   storage=StorageConfig(options=INSECURE, retry=POLICY),
                                   cache=CacheConfig(dir=cache, limit=limit, blocks=True))
        with DiskMonitor([cache], allocated=True) as disk:
            got = _ids(ds, STEPS)
    assert len(got) == STEPS and got == want
    assert disk.samples > 10 and 0 < disk.peak <= limit, (disk.peak, limit)
    held = NodeCache(cache, limit)
    try:
        assert held.usage() <= limit
        assert held.stats()["entries"] > limit // largest, held.stats()
    finally:
        held.close()
