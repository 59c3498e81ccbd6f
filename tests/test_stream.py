"""The one stepping generator (``fastdata/loader/stream.py``): its chunks, and prefetch in
every entry point that fetches shards (in-process iteration, stock DataLoader workers, the
threads and processes backends)."""

from __future__ import annotations

import os
import time

import pytest
import torch
from _loader import packed_dataset

import fastdata
from fastdata.loader.stream import chunks

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(("steps", "largest", "want"), [
    (range(0, 10), 4, [range(0, 1), range(1, 3), range(3, 7), range(7, 10)]),
    (range(3, 4), 64, [range(3, 4)]),
    (range(5, 5), 8, []),
    (range(1, 20, 3), 2, [range(1, 4, 3), range(4, 10, 3), range(10, 16, 3), range(16, 20, 3)]),
])
def test_chunks_double_up_to_the_largest_and_keep_a_lanes_stride(steps, largest, want):
    got = list(chunks(steps, largest))
    assert got == want
    assert [s for part in got for s in part] == list(steps)


@pytest.fixture(scope="module")
def zstd_data(tmp_path_factory):
    """Compressed shards: read through the cache directory, so every entry point fetches."""
    return packed_dataset(str(tmp_path_factory.mktemp("zstd")), docs=600, seed=5, compression="zstd")


def cached(directory: str) -> int:
    """Raw shard files present in a plain cache directory (any namespace)."""
    return sum(f.endswith(".fds") for _, _, files in os.walk(directory) for f in files)


def wait_for(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def shards_in(ds, lo: int, hi: int) -> int:
    """Distinct shards this rank's steps ``[lo, hi)`` read."""
    plan = ds.plan(0, ds.resolved_world())
    return len({int(s) for step in range(lo, min(hi, plan.num_steps)) for s in plan.shards_of(step)})


@pytest.mark.parametrize("entry", ["in-process", "stock-workers", "processes", "threads"])
def test_prefetch_runs_wherever_shards_are_fetched(zstd_data, tmp_path, entry):
    """After the first batch, the shards of the next 512 steps arrive in the cache while the
    loop waits (the prefetcher walks two blocks of 256 steps past the consumer): every entry
    point runs the prefetcher. Before the one stepping path only the threads backend did; the
    others fetched on demand, i.e. the shards of the few steps made ahead (at most 16 here)."""
    cache = str(tmp_path / "cache")
    ds = fastdata.TokenDataset(zstd_data, seq_len=32, seed=1, batch_size=4, cache_dir=cache)
    ahead, on_demand = shards_in(ds, 0, 512), shards_in(ds, 0, 16)
    assert ahead > on_demand + 2, (ahead, on_demand)
    if entry == "in-process":
        it = iter(ds)
    elif entry == "stock-workers":
        it = iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1, prefetch_factor=2))
    else:
        it = iter(fastdata.DataLoader(ds, batch_size=4, num_workers=1, backend=entry, prefetch=2))
    next(it)
    # nothing else is asked for: only a prefetcher fills the cache beyond the first steps
    assert wait_for(lambda: cached(cache) >= ahead), (
        f"{entry}: {cached(cache)} shards cached after the first batch; the next 512 steps read {ahead}")
    del it
