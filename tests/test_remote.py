"""Downloads from Azure Blob (Azurite via adlfs) through a real fault proxy (D1, D2, D4, D6, D7, G4)."""

from __future__ import annotations

import logging
import os
import re
import time

import fsspec
import pytest
import xxhash
from _fs import proxied
from conftest import DEV_KEY, connection_string

import fastdata
from fastdata.storage.download import RetryPolicy, download
from fastdata.storage.remote import Store, redact

pytestmark = pytest.mark.timeout(120)
SIZE = 12 << 20
POLICY = RetryPolicy(attempts=4, base_backoff=0.05, max_backoff=0.2, range_bytes=4 << 20)


@pytest.fixture(scope="module")
def blob(azurite, tmp_path_factory):
    data = os.urandom(SIZE)
    local = tmp_path_factory.mktemp("blob") / "blob.bin"
    local.write_bytes(data)
    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    fs.mkdir("remote")
    fs.put_file(str(local), "remote/blob.bin")
    return data


@pytest.fixture
def proxy(azurite):
    with proxied(azurite["port"]) as p:
        yield p


def store_via(proxy, **options) -> Store:
    return Store("az://remote", {"connection_string": connection_string(proxy.port), "allow_insecure": True,
                                  **options})


def fetch(store: Store, tmp_path, data: bytes, name: str = "blob.bin", policy: RetryPolicy = POLICY):
    dest = tmp_path / "dest"
    dest.write_bytes(b"")
    stats = download(store, name, str(dest), len(data), xxhash.xxh3_128_hexdigest(data), policy)
    return stats, dest.read_bytes()


def test_clean_download_uses_parallel_ranges(proxy, blob, tmp_path):
    stats, got = fetch(store_via(proxy), tmp_path, blob)
    assert got == blob and stats.attempts == 1
    ranges = [r.range for r in proxy.requests if r.method == "GET" and r.range]
    assert len(ranges) >= 3  # three 4 MiB ranges of a 12 MiB object


def test_d1_reset_mid_body_is_retried(proxy, blob, tmp_path, caplog):
    # enough faulty connections to outlast the SDK's own 3 body-read attempts
    proxy.faults.reset_after, proxy.faults.fault_conns = int(0.4 * (4 << 20)), 8
    with caplog.at_level(logging.WARNING, logger="fastdata.storage.download"):
        stats, got = fetch(store_via(proxy), tmp_path, blob)
    assert got == blob
    assert proxy.counters.faults >= 1
    assert stats.retries >= 1
    assert any("blob.bin" in r.message and "retrying" in r.message for r in caplog.records)


def test_d2_persistent_reset_ends_in_a_bounded_named_error(proxy, blob, tmp_path):
    """Every connection reset mid-body: FastdataDownloadError naming the URL, the attempts and
    the last underlying error, within the documented worst case attempts × (request timeout
    + max_backoff) (RetryPolicy) plus 10 s, a bound well inside this test's timeout."""
    proxy.faults.reset_after = 64 << 10
    timeout = 5  # per request (connect and read), so the bound is 4 × 5.2 + 10 = 30.8 s
    store = store_via(proxy, read_timeout=timeout, connection_timeout=timeout)
    bound = POLICY.attempts * (timeout + POLICY.max_backoff) + 10
    assert bound < 120 / 2  # the test's own timeout can never be what ends it
    retried: list[tuple[int, str]] = []
    dest = tmp_path / "dest"
    dest.write_bytes(b"")
    started = time.monotonic()
    with pytest.raises(fastdata.FastdataDownloadError) as err:
        download(store, "blob.bin", str(dest), len(blob), xxhash.xxh3_128_hexdigest(blob), POLICY,
                 on_retry=lambda attempt, e: retried.append((attempt, type(e).__name__)))
    elapsed = time.monotonic() - started
    msg = str(err.value)
    assert "az://remote/blob.bin" in msg and "(after 4 attempts)" in msg
    assert DEV_KEY[:16] not in msg
    assert elapsed < bound, f"{elapsed:.1f} s"
    assert [a for a, _ in retried] == [1, 2, 3] and proxy.counters.faults >= 4
    # the last attempt's own error, as the backend raised it: a body cut short by the reset
    last = msg.split("(after 4 attempts): ", 1)[1]
    assert last.startswith(f"{retried[-1][1]}: "), msg
    assert re.search(r"received \d+ of \d+ bytes|ConnectionResetError|Connection reset", last), msg


def test_d4_stalled_connection_times_out_and_recovers(proxy, blob, tmp_path):
    proxy.faults.stall_after, proxy.faults.fault_conns = 10 << 10, 1
    started = time.monotonic()
    _, got = fetch(store_via(proxy, read_timeout=2), tmp_path, blob)
    elapsed = time.monotonic() - started
    assert got == blob and proxy.counters.faults == 1  # the stalled read was abandoned and redone
    assert 2 <= elapsed < 2 + 1 + 5  # after the 2 s read timeout, not a default minute


def test_d6_missing_and_forbidden_fail_fast(proxy, blob, tmp_path):
    started = time.monotonic()
    with pytest.raises(fastdata.FastdataDownloadError, match=r"az://remote/nope.bin \(not retried\)"):
        fetch(store_via(proxy), tmp_path, blob, name="nope.bin")
    assert time.monotonic() - started < 2
    canary = "U0lHQ0FOQVJZMTIzU0lHQ0FOQVJZMTIz" + DEV_KEY[32:]  # a wrong key: 403
    bad = Store("az://remote", {"connection_string": connection_string(proxy.port).replace(DEV_KEY, canary),
                                "allow_insecure": True})
    started = time.monotonic()
    with pytest.raises(fastdata.FastdataError) as err:
        fetch(bad, tmp_path, blob)
    assert time.monotonic() - started < 2
    assert "blob.bin" in str(err.value) and "not retried" in str(err.value)
    assert canary[:20] not in str(err.value) and canary[:20] not in repr(bad)


def test_d7_replaced_object_is_an_integrity_error(azurite, blob, tmp_path):
    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    fs.pipe_file("remote/changing.bin", os.urandom(1 << 20))
    store = Store("az://remote", {"connection_string": azurite["conn"], "allow_insecure": True})
    expected = os.urandom(1 << 20)  # the manifest's version was never uploaded
    mismatch = "changing.bin: xxh3_128 is .* the manifest says"
    with pytest.raises(fastdata.FastdataIntegrityError, match=mismatch):
        fetch(store, tmp_path, expected, name="changing.bin")


def test_g4_urls_are_redacted():
    assert redact("https://acct.blob.core.windows.net/c/x.fds?sv=1&sig=SIGCANARY123") == \
        "https://acct.blob.core.windows.net/c/x.fds?<redacted>"
    assert "SIGCANARY123" not in redact("az://user:SIGCANARY123@container/x")
    store = Store("az://remote", {"connection_string": "AccountName=a;AccountKey=SIGCANARY123;"
                                                      "BlobEndpoint=http://127.0.0.1:9/a;",
                                   "allow_insecure": True})
    assert "SIGCANARY123" not in repr(store) and "SIGCANARY123" not in store.describe("x")


def test_g4_pickles_carry_no_credentials(azurite, blob):
    """A dataset pickled for a worker process holds no key, yet a forked child can reopen it."""
    import multiprocessing
    import pickle

    conn = azurite["conn"]
    key = conn.split("AccountKey=")[1].split(";")[0]
    store = Store("az://remote", {"connection_string": conn, "allow_insecure": True})
    blob = pickle.dumps(store)
    assert key.encode() not in blob and key[:12].encode() not in blob
    sas = Store("az://remote?sv=1&sig=SIGCANARY123", {"connection_string": conn, "allow_insecure": True})
    assert b"SIGCANARY123" not in pickle.dumps(sas)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:  # a forked child resolves the credentials it inherited
        assert pool.apply(_size_in_child, (blob,)) == SIZE
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process cannot
        message = pool.apply(_error_in_child, (blob,))
    assert "credentials are never pickled" in message and key[:12] not in message


def _size_in_child(blob: bytes) -> int | None:
    import pickle

    return pickle.loads(blob).size("blob.bin")


def _error_in_child(blob: bytes) -> str:
    import pickle

    try:
        pickle.loads(blob)
    except fastdata.FastdataConfigError as e:
        return str(e)
    return "no error"
