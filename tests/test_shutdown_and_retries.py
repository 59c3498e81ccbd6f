"""F5(b): a full epoch then interpreter exit is prompt and clean; E1(c): a mapped shard
truncated from outside ends the reading process with a signal or an error, which the parent
sees; D5: throttling retries show in the loader's metrics."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from _loader import packed_dataset
from _rangeserver import RangeServer

import fastdata
from fastdata import metrics

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shutdown")
    packed_dataset(str(root), docs=200, shard_size=4096)
    return root


FULL_EPOCH = """
import os, sys, threading, fastdata
url, cache = sys.argv[1], sys.argv[2]
ds = fastdata.TokenDataset(url, seq_len=31, batch_size=2, storage_options={"allow_insecure": True},
                           cache_dir=cache, cache_limit="64MB")
n = sum(1 for _ in fastdata.DataLoader(ds, batch_size=2, num_workers=2))
print("batches", n, "threads", sorted(t.name for t in threading.enumerate() if t.name.startswith("fastdata")),
      flush=True)
"""


@pytest.mark.multiprocess
def test_f5b_full_epoch_then_interpreter_exit(dataset, tmp_path):
    shutil.copytree(dataset / "ds", tmp_path / "ds")
    cache = tmp_path / "cache"
    with RangeServer(str(tmp_path)) as server:
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-P", "-c", FULL_EPOCH, server.url + "/ds", str(cache)],
                             capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert "threads []" in out.stdout, out.stdout  # nothing of fastdata's still running
    assert int(out.stdout.split()[1]) > 0
    assert took < 30
    assert [n for _, _, names in os.walk(cache) for n in names if n.startswith(".fastdata-tmp")] == []
    assert not [n for n in os.listdir("/dev/shm") if "fastdata" in n]


TRUNCATE_UNDER_READER = """
import os, sys, numpy as np, fastdata
path = sys.argv[1]
with fastdata.open_dataset(path) as ds:
    shard = ds.shard(0)
    name = os.path.join(path, ds.manifest.shards.name(0))
    os.truncate(name, 64)  # what another process might do to the file under our mapping
    print("truncated", flush=True)
    total = int(np.asarray(ds.tokens(0, ds.num_tokens)).sum())
    print("read", total, flush=True)
"""


@pytest.mark.multiprocess
def test_e1c_external_truncation_of_a_mapped_shard_is_reported(dataset, tmp_path):
    """The documented behaviour: the reading process dies with SIGBUS or raises; it never
    reads on silently (and the library itself never truncates in place)."""
    shutil.copytree(dataset / "ds", tmp_path / "ds")
    out = subprocess.run([sys.executable, "-P", "-c", TRUNCATE_UNDER_READER, str(tmp_path / "ds")],
                         capture_output=True, text=True, timeout=60)
    assert "truncated" in out.stdout
    assert "read" not in out.stdout.replace("truncated", ""), out.stdout
    assert out.returncode == -signal.SIGBUS or (out.returncode != 0 and "Error" in out.stderr), \
        (out.returncode, out.stderr[-500:])


def test_d5_throttled_shard_retries_show_in_the_metrics(dataset, tmp_path):
    shutil.copytree(dataset / "ds", tmp_path / "ds")
    with RangeServer(str(tmp_path)) as server:
        faults = server.fault("/ds/shard-00000.fds")
        faults.throttle, faults.retry_after = 2, 0.5
        before = metrics.registry.export()["counters"].get("fetch.retries", 0)
        ds = fastdata.TokenDataset(server.url + "/ds", seq_len=31, batch_size=2, shuffle=False,
                                   storage_options={"allow_insecure": True}, cache_dir=str(tmp_path / "c"))
        next(iter(ds))
        statuses = [r.status for r in server.requests("GET", "/ds/shard-00000.fds")]
    assert statuses == [503, 503, 206]
    assert metrics.registry.export()["counters"].get("fetch.retries", 0) - before == 2


def test_d4_stalls_are_retried_and_nothing_leaks_after_the_loader_closes(dataset, tmp_path):
    """D4's leak half: after a loader has read through stalled connections (the proxy stops
    forwarding mid-response; read_timeout 1 s), no fastdata thread and no extra fd remain."""
    from _fs import proxied

    shutil.copytree(dataset / "ds", tmp_path / "ds")
    packed_dataset(str(tmp_path / "other"), docs=200, seed=7, shard_size=4096)
    shutil.move(str(tmp_path / "other" / "ds"), str(tmp_path / "ds2"))
    want = [b["input_ids"].numpy().copy() for b in fastdata.TokenDataset(
        str(tmp_path / "ds2"), seq_len=31, batch_size=2, shuffle=False)]
    with RangeServer(str(tmp_path)) as server:
        with proxied(server.port) as proxy:
            url = f"http://127.0.0.1:{proxy.port}"
            options = {"storage_options": {"allow_insecure": True, "read_timeout": 1},
                       "cache_dir": str(tmp_path / "cache"), "cache_limit": "64MB"}
            warm = fastdata.TokenDataset(url + "/ds", seq_len=31, batch_size=2, **options)
            list(fastdata.DataLoader(warm, batch_size=2))  # the first dataset sets up what stays
            fds = len(os.listdir("/proc/self/fd"))
            proxy.reset_counters()
            proxy.faults.stall_after, proxy.faults.fault_conns = 3000, 2
            ds = fastdata.TokenDataset(url + "/ds2", seq_len=31, batch_size=2, shuffle=False, **options)
            got = [b["input_ids"].numpy().copy() for b in fastdata.DataLoader(ds, batch_size=2)]
            assert proxy.counters.faults >= 1
    assert len(got) == len(want) and all((g == w).all() for g, w in zip(got, want))
    import threading

    assert [t.name for t in threading.enumerate() if t.name.startswith("fastdata")] == []
    assert len(os.listdir("/proc/self/fd")) <= fds
