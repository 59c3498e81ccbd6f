"""A Dataset dropped without close() unpins its node-cache shards from its finaliser, which the
cyclic GC may run at any point, even in a thread that holds the node cache's lock: it must not
deadlock there, and the pins still go."""

from __future__ import annotations

import time

import pytest
from _corpus import make_docs, write_jsonl

import fastdata
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.pipeline import PackConfig, pack
from fastdata.pack.sources import ReadOptions
from fastdata.pack.tokenizers import TokenizerSpec
from fastdata.reader.files import node_cache
from fastdata.storage import cache_db

pytestmark = pytest.mark.timeout(60)


def test_a_finaliser_run_inside_a_cache_transaction_does_not_deadlock(tmp_path):
    src = write_jsonl(str(tmp_path / "c.jsonl"), make_docs(200, seed=1))
    out = str(tmp_path / "ds")
    pack(PackConfig(inputs=(src,), output=out, encode=EncodeOptions(ReadOptions(), TokenizerSpec("bytes")),
                    shard_size=4096, compression="zstd"))  # compressed: read through the cache
    cache = str(tmp_path / "cache")
    ds = fastdata.open_dataset(out, cache_dir=cache, cache_limit="64MB")
    ds.shard(0)
    ds.shard(1)
    stats = node_cache(cache, 64_000_000).stats
    assert stats()["pins"] == 2
    with cache_db.gate:  # as if the GC ran the finaliser in the middle of a transaction
        started = time.monotonic()
        ds.__del__()
        assert time.monotonic() - started < 1.0
    assert stats()["pins"] == 2  # put off: the lock was taken
    ds._views.clear()  # handed over: the real finaliser has nothing left to do
    other = fastdata.open_dataset(out, cache_dir=cache, cache_limit="64MB")
    other.shard(3)  # the next open runs the put-off releases first
    assert stats()["pins"] == 1
    other.close()
    assert stats()["pins"] == 0
    again = fastdata.open_dataset(out, cache_dir=cache, cache_limit="64MB")
    again.shard(0)
    again.__del__()  # the lock is free: unpinned at once
    assert stats()["pins"] == 0
    again._views.clear()
