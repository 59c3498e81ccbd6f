"""Ctrl-C and SIGTERM while a shard download is stalled (audit §5.7, F5c): the process exits
within 5 s, leaves no temp file in the cache, and the next run reads the cache cleanly.

A real range server sits behind the TCP fault proxy, which stops forwarding every connection
after its first few KB: the manifest arrives, every shard download hangs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _fs import proxied
from _loader import packed_dataset
from _rangeserver import RangeServer

import fastdata

pytestmark = [pytest.mark.timeout(90), pytest.mark.multiprocess]
INSECURE = {"allow_insecure": True}

CHILD = """
import sys, fastdata
url, cache, mode, limit = sys.argv[1:5]
ds = fastdata.TokenDataset(url, seq_len=31, batch_size=2, storage_options={"allow_insecure": True},
                           cache_dir=cache, cache_limit=limit or None)
if mode == "inproc":
    it = iter(ds)
else:
    it = iter(fastdata.DataLoader(ds, batch_size=2, backend=mode, num_workers=2))
print("iterating", flush=True)
next(it)
print("got a batch: the stall did not happen", flush=True)
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("stall")
    packed_dataset(str(root), docs=300, shard_size=16384)
    return root


@pytest.fixture
def stalled(dataset, tmp_path):
    shutil.copytree(dataset / "ds", tmp_path / "ds")
    with RangeServer(str(tmp_path)) as server:
        with proxied(server.port) as proxy:
            proxy.faults.stall_after = 4000  # the manifest (about 1.5 KB with headers) gets through
            yield server, proxy


def temp_files(root) -> list[str]:
    return [n for _, _, names in os.walk(root) for n in names if n.startswith(".fastdata-tmp")]


@pytest.mark.parametrize(("mode", "limit", "sig"), [
    ("inproc", "64MB", signal.SIGINT),
    ("threads", "64MB", signal.SIGINT),
    ("threads", "", signal.SIGINT),  # the plain cache directory
    ("processes", "64MB", signal.SIGINT),
    ("threads", "64MB", signal.SIGTERM),
    ("inproc", "", signal.SIGTERM),
])
def test_interrupt_during_a_stalled_download_exits_promptly_and_cleanly(stalled, dataset, tmp_path, mode,
                                                                        limit, sig):
    server, proxy = stalled
    cache = tmp_path / "cache"
    url = f"http://127.0.0.1:{proxy.port}/ds"
    child = subprocess.Popen([sys.executable, "-P", "-c", CHILD, url, str(cache), mode, limit],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not [r for r in proxy.requests if r.path.endswith(".fds")]:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no shard GET reached the proxy"
            time.sleep(0.02)
        time.sleep(0.5)  # the download is now stalled mid-body
        assert child.poll() is None
        sent = time.monotonic()
        child.send_signal(sig)
        out, err = child.communicate(timeout=15)
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert took < 5, f"exited {took:.1f} s after the signal"
    assert "got a batch" not in out
    if sig == signal.SIGTERM and mode != "inproc":
        assert child.returncode == 128 + signal.SIGTERM, err  # SystemExit(143): unwound, not killed
    else:
        assert child.returncode != 0
    if (mode, sig) != ("inproc", signal.SIGTERM):
        assert temp_files(cache) == [], "a temp file was left in the cache"
    # else Python's default SIGTERM ended the process at once (no fastdata.DataLoader, so no
    # handler): its temp file is the next open's to remove
    # the next run on the same cache, over a healthy link, reads exactly what a local read does
    proxy.faults.stall_after = None
    want = next(iter(fastdata.TokenDataset(str(dataset / "ds"), seq_len=31, batch_size=2)))
    ds = fastdata.TokenDataset(url, seq_len=31, batch_size=2, storage_options=INSECURE,
                               cache_dir=str(cache), cache_limit=limit or None)
    assert temp_files(cache) == []
    np.testing.assert_array_equal(next(iter(ds))["input_ids"].numpy(), want["input_ids"].numpy())
