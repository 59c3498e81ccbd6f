"""Integrity of the plain cache directory (``cache_dir`` without ``cache_limit``), over a real
HTTP range server: a damaged or planted cached file is never served as training data."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import numpy as np
import pytest
from _loader import packed_dataset
from _rangeserver import RangeServer

import fastdata

pytestmark = pytest.mark.timeout(60)
INSECURE = {"allow_insecure": True}
SEQ = 31


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    packed_dataset(str(root), docs=200, shard_size=4096)
    return root


@pytest.fixture
def server(dataset, tmp_path):
    shutil.copytree(dataset / "ds", tmp_path / "ds")
    with RangeServer(str(tmp_path)) as s:
        yield s


def read_all(source: str, **options) -> list[np.ndarray]:
    """Every batch's input_ids, in order (one in-process pass)."""
    ds = fastdata.TokenDataset(source, seq_len=SEQ, shuffle=False, batch_size=4, **options)
    return [b["input_ids"].numpy().copy() for b in ds]


def shard_gets(server: RangeServer) -> Counter:
    return Counter(r.path for r in server.requests("GET") if r.path.endswith(".fds"))


def remote(server: RangeServer, cache: str) -> list[np.ndarray]:
    return read_all(server.url + "/ds", storage_options=INSECURE, cache_dir=cache)


def namespace_dir(cache: str) -> str:
    (name,) = [n for n in os.listdir(cache) if not n.startswith(".")]
    return os.path.join(cache, name)


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_flipped_byte_in_a_cached_file_is_refetched_not_served(server, dataset, tmp_path):
    want = read_all(str(dataset / "ds"))
    cache = str(tmp_path / "cache")
    assert_same(remote(server, cache), want)
    first = shard_gets(server)
    victim = os.path.join(namespace_dir(cache), "shard-00003.fds")
    with open(victim, "r+b") as f:
        f.seek(os.path.getsize(victim) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert_same(remote(server, cache), want)  # a fresh dataset object: first use in this process
    again = shard_gets(server) - first
    # exactly the damaged shard was fetched again, as often as the first time
    assert dict(again) == {"/ds/shard-00003.fds": first["/ds/shard-00003.fds"]}


def test_cached_file_replaced_by_a_symlink_is_not_followed(server, dataset, tmp_path):
    want = read_all(str(dataset / "ds"))
    cache = str(tmp_path / "cache")
    remote(server, cache)
    victim = os.path.join(namespace_dir(cache), "shard-00002.fds")
    canary = tmp_path / "canary"
    canary.write_bytes(b"\x01" * os.path.getsize(victim))
    os.unlink(victim)
    os.symlink(canary, victim)
    assert_same(remote(server, cache), want)
    assert not os.path.islink(victim)
    assert canary.read_bytes() == b"\x01" * canary.stat().st_size


def test_symlinked_namespace_directory_is_refused(server, tmp_path):
    cache = tmp_path / "cache"
    remote(server, str(cache))
    ns = namespace_dir(str(cache))
    canary = tmp_path / "canary-dir"
    shutil.copytree(ns, canary)
    before = sorted(os.listdir(canary))
    shutil.rmtree(ns)
    os.symlink(canary, ns)
    with pytest.raises(fastdata.FastdataCacheError, match="symlink"):
        remote(server, str(cache))
    assert sorted(os.listdir(canary)) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_cache_root_owned_by_another_user_is_refused(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, 12345, 12345)
    with pytest.raises(fastdata.FastdataCacheError, match="owned by uid 12345"):
        remote(server, str(cache))
    assert [n for n in os.listdir(cache) if not n.startswith(".")] == []  # no shard was cached there


@pytest.mark.parametrize("limit", [None, "64MB"], ids=["plain", "node-cache"])
def test_c7_warm_run_makes_no_gets_and_two_damaged_shards_are_fetched_again(server, dataset, tmp_path,
                                                                          caplog, limit):
    """C7: a warm re-run makes 0 shard GETs; one flipped byte and one 1-byte truncation make
    exactly those two shards come down again, with one warning each naming the file and why."""
    import logging

    want = read_all(str(dataset / "ds"))
    cache = str(tmp_path / "cache")
    options = {"storage_options": INSECURE, "cache_dir": cache, "cache_limit": limit}
    assert_same(read_all(server.url + "/ds", **options), want)
    cold = shard_gets(server)
    assert_same(read_all(server.url + "/ds", **options), want)
    assert shard_gets(server) == cold  # warm: no shard GET at all
    ns = namespace_dir(cache)
    flipped, truncated = os.path.join(ns, "shard-00001.fds"), os.path.join(ns, "shard-00004.fds")
    with open(flipped, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
    os.truncate(truncated, os.path.getsize(truncated) - 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastdata"):
        assert_same(read_all(server.url + "/ds", **options), want)
    again = shard_gets(server) - cold
    assert dict(again) == {"/ds/shard-00001.fds": cold["/ds/shard-00001.fds"],
                           "/ds/shard-00004.fds": cold["/ds/shard-00004.fds"]}
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([m for m in messages if flipped in m and "xxh3_128" in m]) == 1, messages
    assert len([m for m in messages if truncated in m and "size is" in m]) == 1, messages


@pytest.mark.parametrize("limit", [None, "64MB"], ids=["plain", "node-cache"])
def test_two_threads_pinning_one_damaged_copy_report_and_drop_it_once(server, dataset, tmp_path,
                                                                      caplog, monkeypatch, limit):
    """The prefetcher and the consumer can pin the same damaged cached shard at once: it is
    hashed, reported and dropped by one of them, and fetched again once, not once per thread.
    (The hash check waits for a second thread to reach it, so without the per-shard judging
    lock both threads hash the damaged file; with it the wait times out and the second thread
    finds the copy already dropped.)"""
    import logging
    import threading

    from fastdata.reader import files as files_module

    cache = str(tmp_path / "cache")
    options = {"storage_options": INSECURE, "cache_dir": cache, "cache_limit": limit}
    want = read_all(str(dataset / "ds"))
    assert_same(read_all(server.url + "/ds", **options), want)
    cold = shard_gets(server)
    victim = os.path.join(namespace_dir(cache), "shard-00002.fds")
    with open(victim, "r+b") as f:
        f.seek(50)
        b = f.read(1)
        f.seek(50)
        f.write(bytes([b[0] ^ 1]))

    both_inside = threading.Barrier(2)
    real_check = files_module.check_file

    def check_when_both_arrive(*args, **kwargs):
        try:
            both_inside.wait(timeout=1.0)
        except threading.BrokenBarrierError:
            pass
        return real_check(*args, **kwargs)

    monkeypatch.setattr(files_module, "check_file", check_when_both_arrive)
    ds = fastdata.open_dataset(server.url + "/ds", storage_options=INSECURE, cache_dir=cache,
                               cache_limit=limit)
    got: list[str] = []
    errors: list[BaseException] = []

    def pin() -> None:
        try:
            path, release = ds.files.acquire(2)
            with open(path, "rb") as f:
                got.append(f.read().hex())
            release()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastdata"):
        threads = [threading.Thread(target=pin) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    with open(dataset / "ds" / "shard-00002.fds", "rb") as f:
        assert got == [f.read().hex()] * 2  # both threads read the intact bytes
    reports = [r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING and "xxh3_128" in r.getMessage()]
    assert len(reports) == 1, reports
    again = shard_gets(server) - cold
    assert dict(again) == {"/ds/shard-00002.fds": cold["/ds/shard-00002.fds"]}
