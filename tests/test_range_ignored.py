"""A server that ignores ``Range`` (answers 200 with the whole object) is not read whole once
per range (issue 12, untrusted numbers): bytes are counted at the TCP proxy in between."""

from __future__ import annotations

import os

import pytest
import xxhash
from _fs import proxied
from _rangeserver import RangeServer

from fastdata.storage.download import RetryPolicy, download
from fastdata.storage.remote import Store

pytestmark = pytest.mark.timeout(60)
SIZE = 3 << 20
POLICY = RetryPolicy(attempts=2, base_backoff=0.05, max_backoff=0.1, range_bytes=512 << 10, parallel=2)


@pytest.fixture
def served(tmp_path):
    data = os.urandom(SIZE)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "big.bin").write_bytes(data)
    with RangeServer(str(tmp_path)) as server:
        server.fault("/ds/big.bin").ignore_range = True
        with proxied(server.port) as proxy:
            yield server, proxy, data, Store(f"http://127.0.0.1:{proxy.port}/ds", {"allow_insecure": True})


def test_a_multi_range_download_takes_the_whole_answer_once(served, tmp_path):
    server, proxy, data, store = served
    dest = tmp_path / "out.bin"
    download(store, "big.bin", str(dest), SIZE, xxhash.xxh3_128_hexdigest(data), POLICY)
    assert dest.read_bytes() == data
    assert len(server.requests("GET", "/ds/big.bin")) == 1  # not one GET per 512 KiB range
    assert proxy.counters.bytes_down < SIZE * 1.2  # the object crossed the wire once


def test_a_short_range_reads_only_what_it_needs(served):
    server, proxy, data, store = served
    # 2 MB/s down: the 64 KiB arrive in about 30 ms, the whole 3 MiB answer would take 1.5 s, so
    # a busy machine cannot push it all into the socket buffers before the client hangs up
    proxy.faults.rate_bps = 2_000_000
    got, _ = store.read_range_tagged("big.bin", 0, 64 << 10)
    assert got == data[: 64 << 10]
    assert proxy.counters.bytes_down < SIZE // 2  # the rest of the 3 MiB answer was never read


def test_d1_reset_mid_body_over_http_is_retried_twice_then_verified(tmp_path, caplog):
    """D1 on the HTTP path: the proxy resets the first two connections after 40 % of the body;
    the object completes on the third attempt, its hash verifies, the log names it twice. A
    retry starts again from byte 0 (one ranged GET per attempt; no stitching to check)."""
    import logging

    data = os.urandom(256 << 10)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "obj.bin").write_bytes(data)
    with RangeServer(str(tmp_path)) as server:
        with proxied(server.port) as proxy:
            proxy.faults.reset_after, proxy.faults.fault_conns = int(len(data) * 0.4), 2
            store = Store(f"http://127.0.0.1:{proxy.port}/ds", {"allow_insecure": True})
            with caplog.at_level(logging.WARNING, logger="fastdata.storage.download"):
                stats = download(store, "obj.bin", str(tmp_path / "out.bin"), len(data),
                                 xxhash.xxh3_128_hexdigest(data), RetryPolicy(attempts=4, base_backoff=0.05))
    assert (tmp_path / "out.bin").read_bytes() == data
    assert (stats.attempts, stats.retries) == (3, 2)
    retries = [r.getMessage() for r in caplog.records if "obj.bin" in r.getMessage()]
    assert len(retries) == 2 and all("attempt" in m for m in retries), retries
    assert [r.range for r in server.requests("GET", "/ds/obj.bin")] == [f"bytes=0-{len(data) - 1}"] * 3
