"""Network faults over a real HTTP range server (D3, D5, D6, D7, C4, G6) and requests per shard."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import socket
import time

import pytest
import xxhash
from _loader import ids_of, packed_dataset
from _rangeserver import RangeServer

import fastdata
from fastdata.sampling.order import Stripe
from fastdata.storage.download import RetryPolicy, download
from fastdata.storage.remote import Store

pytestmark = pytest.mark.timeout(60)
INSECURE = {"allow_insecure": True}
POLICY = RetryPolicy(attempts=3, base_backoff=0.05, max_backoff=0.1, range_bytes=16 << 10, parallel=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small packed dataset (25 uncompressed shards of ~8-20 KB) in ``root/ds``."""
    root = tmp_path_factory.mktemp("http")
    packed_dataset(str(root), docs=300, shard_size=4096)
    return root


@pytest.fixture
def server(dataset, tmp_path):
    """A range server over a private copy of the dataset (hooks and replacements stay per test)."""
    shutil.copytree(dataset / "ds", tmp_path / "ds")
    with RangeServer(str(tmp_path)) as s:
        yield s


def shards(server: RangeServer) -> list[dict]:
    with open(os.path.join(server.root, "ds", "manifest.json")) as f:
        return json.load(f)["shards"]


def fetch(server: RangeServer, tmp_path, name: str, data: bytes, policy: RetryPolicy = POLICY):
    dest = tmp_path / f"dest-{name}"
    stats = download(Store(server.url + "/ds", INSECURE), name, str(dest), len(data),
                     xxhash.xxh3_128_hexdigest(data), policy)
    return stats, dest.read_bytes()


def blob(server: RangeServer, name: str, data: bytes) -> str:
    with open(os.path.join(server.root, "ds", name), "wb") as f:
        f.write(data)
    return f"/ds/{name}"


# ---------------------------------------------------------------- requests per shard


def test_cold_single_range_shard_is_one_get(server, tmp_path):
    info = shards(server)[3]
    cache = str(tmp_path / "c")
    with fastdata.open_dataset(server.url + "/ds", storage_options=INSECURE, cache_dir=cache) as ds:
        before = len(server.log)
        assert ds.shard(3).num_tokens == info["tokens"]
        assert ds.shard(3).num_tokens == info["tokens"]  # opened once
    path = f"/ds/{info['name']}"
    assert [(r.method, r.path, r.range, r.if_match, r.status) for r in server.log[before:]] == [
        ("GET", path, f"bytes=0-{info['stored_bytes'] - 1}", None, 206)]


def test_multi_range_object_sends_if_match_after_the_first_range(server, tmp_path):
    data = os.urandom(5 * (16 << 10) + 123)
    path = blob(server, "big.bin", data)
    stats, got = fetch(server, tmp_path, "big.bin", data)
    assert got == data and stats.attempts == 1
    log = server.requests(path=path)
    assert [r.method for r in log] == ["GET"] * 6  # no HEAD before or after
    etag = server.requests(path=path)[0]
    assert etag.if_match is None and etag.range == f"bytes=0-{(16 << 10) - 1}"
    tags = {r.if_match for r in log[1:]}
    assert len(tags) == 1 and None not in tags
    assert sorted(r.range for r in log) == sorted(
        f"bytes={s}-{min(s + (16 << 10), len(data)) - 1}" for s in range(0, len(data), 16 << 10))


# ---------------------------------------------------------------- D3


@pytest.mark.parametrize("lie", ["truncated_200", "wrong_content_range"])
def test_d3_lying_responses_are_integrity_errors(server, tmp_path, lie):
    info = shards(server)[2]
    faults = server.fault(f"/ds/{info['name']}")
    if lie == "truncated_200":
        faults.lie_bytes = info["stored_bytes"] - 1000  # 200, Content-Length = the cut body
        expected = rf"bytes 0-{info['stored_bytes'] - 1} came back as {info['stored_bytes'] - 1000} bytes, " \
                   rf"expected {info['stored_bytes']}"
    else:
        faults.shift_range = 64  # 206, an honest Content-Range that is not the one asked for
        expected = rf"asked for bytes 0-{info['stored_bytes'] - 1}, the server sent Content-Range " \
                   rf"'bytes 64-{info['stored_bytes'] - 1}/{info['stored_bytes']}'"
    cache = tmp_path / "c"
    with fastdata.open_dataset(server.url + "/ds", storage_options=INSECURE, cache_dir=str(cache)) as ds:
        ds.files.policy = POLICY
        with pytest.raises(fastdata.FastdataIntegrityError) as err:
            ds.shard(2)
    msg = str(err.value)
    assert f"{server.url}/ds/{info['name']}" in msg and re.search(expected, msg), msg
    assert "after 3 attempts" in msg
    assert len(server.requests("GET", f"/ds/{info['name']}")) == 3
    left = [n for _, _, names in os.walk(cache) for n in names]
    assert info["name"] not in left and not any(info["name"] in n for n in left)  # no temp file either


def test_d3_object_shorter_than_the_manifest_says(server, tmp_path):
    data = os.urandom(3 * (16 << 10))
    blob(server, "short.bin", data[:16 << 10])  # the second and third ranges start past its end
    with pytest.raises(fastdata.FastdataIntegrityError) as err:
        fetch(server, tmp_path, "short.bin", data)
    msg = str(err.value)
    assert "/ds/short.bin: bytes=" in msg and "past its end" in msg and "bytes */16384" in msg, msg


# ---------------------------------------------------------------- D5


def test_d5_retry_after_is_honoured(server, tmp_path):
    data = os.urandom(3000)
    path = blob(server, "slow.bin", data)
    server.fault(path).throttle, server.fault(path).retry_after = 2, 2
    stats, got = fetch(server, tmp_path, "slow.bin", data, RetryPolicy(attempts=4, base_backoff=0.05))
    assert got == data
    assert (stats.attempts, stats.retries) == (3, 2)
    log = server.requests("GET", path)
    assert [r.status for r in log] == [503, 503, 206]
    gaps = [b.time - a.time for a, b in zip(log, log[1:])]
    assert all(2.0 <= g < 4.0 for g in gaps), gaps


def test_d5_throttled_manifest_is_retried_after_the_wait(server, tmp_path):
    faults = server.fault("/ds/manifest.json")
    faults.throttle, faults.retry_after = 2, 1
    with fastdata.open_dataset(server.url + "/ds", storage_options=INSECURE, cache_dir=str(tmp_path)) as ds:
        assert len(ds.shards) == len(shards(server))
    log = server.requests(path="/ds/manifest.json")
    assert [(r.method, r.status) for r in log] == [("HEAD", 503), ("HEAD", 503), ("HEAD", 200), ("GET", 200)]
    assert all(b.time - a.time >= 1.0 for a, b in zip(log[:3], log[1:3]))


# ---------------------------------------------------------------- D6


def test_d6_unresolvable_host_fails_within_the_connect_budget():
    store = Store("http://nonexistent.invalid/ds", {**INSECURE, "connection_timeout": 2})
    policy = RetryPolicy(attempts=2, base_backoff=0.05, max_backoff=0.1)
    started = time.monotonic()
    with pytest.raises(fastdata.FastdataDownloadError) as err:
        download(store, "shard-00000.fds", os.devnull, 10, "0" * 32, policy)
    assert time.monotonic() - started < 2 * (2 + 0.1) + 1
    assert "http://nonexistent.invalid/ds/shard-00000.fds" in str(err.value)
    assert "after 2 attempts" in str(err.value)


def test_d6_missing_shard_fails_at_once(server, tmp_path):
    started = time.monotonic()
    with pytest.raises(fastdata.FastdataDownloadError, match=r"/ds/gone.fds \(not retried\)"):
        fetch(server, tmp_path, "gone.fds", b"x" * 100, RetryPolicy(attempts=5, base_backoff=1))
    assert time.monotonic() - started < 2
    assert [r.status for r in server.requests(path="/ds/gone.fds")] == [404]


def test_d6_connect_timeout_applies_to_http():
    """A host that never completes the TCP handshake: the listen backlog is full, SYNs are dropped."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue (nobody accepts)
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(listener.getsockname())
        fillers.append(s)
    time.sleep(0.2)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/ds"
        store = Store(url, {**INSECURE, "connection_timeout": 1})
        policy = RetryPolicy(attempts=2, base_backoff=0.05, max_backoff=0.1)
        started = time.monotonic()
        with pytest.raises(fastdata.FastdataDownloadError, match="after 2 attempts"):
            download(store, "x.fds", os.devnull, 10, "0" * 32, policy)
        elapsed = time.monotonic() - started
    finally:
        for s in [*fillers, listener]:
            s.close()
    assert 1.0 <= elapsed < 2 * (1 + 0.1) + 1.5, elapsed


# ---------------------------------------------------------------- D7


@pytest.mark.parametrize("manifest_has", ["new", "old"])
def test_d7_object_changed_between_ranges(server, tmp_path, manifest_has):
    old, new = os.urandom(3 * (16 << 10)), os.urandom(3 * (16 << 10))
    path = blob(server, "moving.bin", old)
    server.fault(path).replace_with = new  # after the first range
    expected = new if manifest_has == "new" else old
    if manifest_has == "new":
        stats, got = fetch(server, tmp_path, "moving.bin", expected)
        assert got == new and stats.attempts == 2
    else:
        with pytest.raises(fastdata.FastdataIntegrityError, match=r"moving.bin: xxh3_128 is .* the manifest "
                                                                  r"says .*after 3 attempts"):
            fetch(server, tmp_path, "moving.bin", expected)
    log = server.requests("GET", path)
    first_etag = log[0]
    assert first_etag.if_match is None and first_etag.status == 206
    refused = [r for r in log[1:3]]
    assert [r.status for r in refused] == [412, 412] and {r.if_match for r in refused} != {None}
    assert log[3].if_match is None and log[3].range == f"bytes=0-{(16 << 10) - 1}"  # restart from byte 0
    assert all(r.status == 206 for r in log[3:])


# ---------------------------------------------------------------- C4


@pytest.fixture
def even_server(tmp_path):
    """A range server over 1200 short documents: ~30 shards of about the same size."""
    from _corpus import make_docs, write_jsonl

    from fastdata.pack.encode import EncodeOptions
    from fastdata.pack.pipeline import PackConfig, pack
    from fastdata.pack.sources import ReadOptions
    from fastdata.pack.tokenizers import TokenizerSpec

    src = write_jsonl(str(tmp_path / "c.jsonl"), make_docs(1200, seed=5, long_every=0))
    pack(PackConfig(inputs=(src,), output=str(tmp_path / "ds"),
                    encode=EncodeOptions(ReadOptions(), TokenizerSpec("bytes")), shard_size=4096))
    with RangeServer(str(tmp_path)) as s:
        yield s


def use_spans(ds, world) -> dict[int, int]:
    """For each shard, the number of separate runs of consecutive steps whose batches read it."""
    order = ds.epoch_order(0, world)
    stripe = Stripe.of(order.config.global_batch, world.rank, world.world_size)
    spans, last = {}, {}
    for step in range(order.num_steps):
        for shard in ds.shards_of(order, stripe, step).tolist():
            if last.get(shard) != step - 1:
                spans[shard] = spans.get(shard, 0) + 1
            last[shard] = step
    return spans


@pytest.mark.timeout(90)
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # 3 workers on 2 cores
@pytest.mark.parametrize("backend", ["processes", "threads"])
def test_c4_minimum_cache_never_evicts_a_shard_in_use(even_server, tmp_path, backend):
    """C4 with the flaky remote: a shard is served as many times as the plan has separate runs
    of steps that read it, then 404. Under the smallest cache TokenDataset accepts, eviction
    must never drop a shard that is still in use or reserved (which would fetch it again within
    a run). Adapted from LitData's one-GET rule: in fastdata's order a shard where one partition
    ends and the next begins is read in the first and the last steps of the epoch, and the
    best a tight cache can do (farthest next use goes first) is to evict it in between.

    The count is exact, not a budget: a shard read in one run is fetched once; one read in two
    runs exactly twice. At the minimum limit the cache holds exactly what the readers pin at
    once (max_open_shards per process, plus one shard in flight), and every reader keeps that
    many mapped once it has read that many, so while the other ~90 shards go through, the cache
    is full of pinned shards whenever a new one arrives: a shard between its two runs is
    unpinned and must go, and comes back once for its second run. Fewer GETs would mean the
    cache went over its limit (C5); more, that a shard in use or reserved was evicted."""
    server = even_server
    url, cache = server.url + "/ds", str(tmp_path / "cache")
    with pytest.raises(fastdata.FastdataConfigError, match="use at least") as err:
        fastdata.TokenDataset(url, seq_len=32, shuffle=False, cache_dir=cache + "-probe", cache_limit=1,
                              storage_options=INSECURE)
    minimum = int(re.search(r"use at least (\d+) bytes", str(err.value)).group(1))
    assert minimum < sum(s["raw_bytes"] for s in shards(server)) // 3  # the cache holds a few shards only
    expected = ids_of(fastdata.DataLoader(
        fastdata.TokenDataset(os.path.join(server.root, "ds"), seq_len=32, shuffle=False), batch_size=4,
        num_workers=0))
    if backend == "processes":  # C6: each worker process pins its own shards, so the minimum grows
        probe = fastdata.TokenDataset(url, seq_len=32, shuffle=False, cache_dir=cache + "-probe2",
                                      cache_limit=minimum, storage_options=INSECURE)
        with pytest.raises(fastdata.FastdataConfigError, match=r"x 3 worker processes") as err:
            fastdata.DataLoader(probe, batch_size=4, backend=backend, num_workers=3)
        minimum = int(re.search(r"use at least (\d+) bytes", str(err.value)).group(1))
    ds = fastdata.TokenDataset(url, seq_len=32, shuffle=False, cache_dir=cache, cache_limit=minimum,
                               storage_options=INSECURE)
    # No look-ahead: with the tightest cache a prefetched shard can be evicted before its use by
    # the reader's next fill (the processes backend has no prefetcher anyway).
    loader = fastdata.DataLoader(ds, batch_size=4, backend=backend, num_workers=3, prefetch_bytes=0)
    spans = use_spans(ds, loader.world)
    names = [s["name"] for s in shards(server)]
    assert max(spans.values()) == 2  # the partition boundaries
    for index, name in enumerate(names):
        server.fault(f"/ds/{name}").flaky = spans.get(index, 1)
    got = ids_of(loader)
    assert got == expected and len(set(got)) == len(got)
    assert [r for r in server.log if r.status == 404] == []
    fetched = collections.Counter(r.path for r in server.requests("GET") if r.path.endswith(".fds"))
    assert fetched == {f"/ds/{n}": spans.get(i, 1) for i, n in enumerate(names)}  # once per run of use


# ---------------------------------------------------------------- G6


def test_g6_plain_http_needs_an_explicit_opt_in(server, monkeypatch):
    monkeypatch.delenv("FASTDATA_ALLOW_INSECURE", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=S3CRETKEY0123==;"
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")
    refused = [
        (server.url + "/ds?sig=SASCANARY", {}, f"{server.url}/ds"),
        ("az://c/ds", {"connection_string": conn}, "http://127.0.0.1:10000/devstoreaccount1"),
        ("abfs://c/ds", {"account_url": "http://10.0.0.1:10000/acct"}, "http://10.0.0.1:10000/acct"),
        ("s3://bucket/ds", {"endpoint_url": "http://127.0.0.1:9000"}, "http://127.0.0.1:9000"),
        ("s3://bucket/ds", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}, "http://127.0.0.1:9000"),
    ]
    for url, options, endpoint in refused:
        with pytest.raises(fastdata.FastdataConfigError, match="allow_insecure") as err:
            Store(url, options)
        msg = str(err.value)
        assert endpoint in msg and "S3CRETKEY" not in msg and "SASCANARY" not in msg, msg
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    with pytest.raises(fastdata.FastdataConfigError, match="over plain HTTP"):
        Store("az://c/ds")
    with pytest.raises(fastdata.FastdataConfigError, match="over plain HTTP"):
        fastdata.open_dataset(server.url + "/ds")
    assert server.log == []  # refused before any request
    with fastdata.open_dataset(server.url + "/ds", storage_options=INSECURE) as ds:
        assert len(ds.shards) == len(shards(server))
    monkeypatch.setenv("FASTDATA_ALLOW_INSECURE", "1")
    assert Store(server.url + "/ds").allow_insecure
    monkeypatch.delenv("FASTDATA_ALLOW_INSECURE")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn.replace("http://", "https://").replace(
        "=http;", "=https;"))
    assert not Store("az://c/ds").allow_insecure  # https: no opt-in needed
    tls = Store("https://data.example.invalid/ds")
    assert set(tls._fs.client_kwargs) == {"timeout"}  # fastdata adds timeouts, never ssl=False


@pytest.mark.parametrize("name", ["https://evil.example/x", "file:///etc/shadow", "az://other-container/x"])
def test_g6_manifest_cannot_point_outside_the_dataset(server, name):
    path = os.path.join(server.root, "ds", "manifest.json")
    with open(path) as f:
        doc = json.load(f)
    doc["shards"][1]["name"] = name
    doc.pop("fingerprint")
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(fastdata.FastdataFormatError, match=r"shards\[1\].*shard name"):
        fastdata.open_dataset(server.url + "/ds", storage_options=INSECURE)
    assert {r.path for r in server.log} == {"/ds/manifest.json"}


def test_g6_allow_insecure_from_a_command_line_is_parsed(server, monkeypatch):
    """--storage-option allow_insecure=false arrives as the text "false": that is not an opt-in."""
    monkeypatch.delenv("FASTDATA_ALLOW_INSECURE", raising=False)
    with pytest.raises(fastdata.FastdataConfigError, match="allow_insecure"):
        Store(server.url + "/ds", {"allow_insecure": "false"})
    assert Store(server.url + "/ds", {"allow_insecure": "true"}).allow_insecure
    with pytest.raises(fastdata.FastdataConfigError, match="true or false"):
        Store(server.url + "/ds", {"allow_insecure": "maybe"})


def test_a_temp_file_removed_between_attempts_is_not_re_created(server, tmp_path):
    """A clean-up (the exit's, after Ctrl-C, or another process's sweep) that removes a fill's
    temp file while the fill waits to retry must not see it come back: the retry stops with a
    named FastdataCacheError and makes no request (the intermittent temp file left behind by
    tests/test_interrupts.py's in-process case)."""
    data = os.urandom(3000)
    path = blob(server, "gone.bin", data)
    server.fault(path).throttle = 1  # the first GET answers 503: a retry follows
    dest = tmp_path / "fill-temp"
    with pytest.raises(fastdata.FastdataCacheError, match="was removed while"):
        download(Store(server.url + "/ds", INSECURE), "gone.bin", str(dest), len(data),
                 xxhash.xxh3_128_hexdigest(data), POLICY, on_retry=lambda *_: os.unlink(dest))
    assert not dest.exists()
    assert [r.status for r in server.requests("GET", path)] == [503]
