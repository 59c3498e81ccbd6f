"""The node-local shard cache (fastdata/storage/cache.py) against ACCEPTANCE.md C2, C3, C5, C6, C7,
C10, C11, C12, F1, G2, G3 and invariants I4/I5.

Several tests run real processes (``tests/_cache_worker.py``) sharing one cache directory;
crashes happen at the cache's pause points (``FASTDATA_TEST_PAUSE``) and are SIGKILLs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import lmdb
import pytest
from _cache_worker import content, tree_bytes
from _sandbox import pid_namespaces_work, tmpfs_works

import fastdata.storage.cache as cache_mod
from fastdata.errors import FastdataCacheError, FastdataConfigError, FastdataIntegrityError
from fastdata.storage.cache import DB_DIR, NodeCache

WORKER = Path(__file__).with_name("_cache_worker.py")
TEMP_RE = r"^\.fastdata-tmp\.{name}\.{pid}\.[0-9a-f]+$"
pytestmark = pytest.mark.timeout(60)


def writer(calls: list, name: str, size: int, *, write: int | None = None):
    """A fill that writes the expected bytes of ``name`` (only ``write`` of them if given)."""
    def fill(path: str) -> None:
        calls.append(name)
        with open(path, "wb") as f:
            f.write(content(name, size)[:size if write is None else write])
    return fill


def acquire(cache: NodeCache, name: str, size: int, calls: list, ns: str = "ns", **kw):
    return cache.acquire(ns, name, size, writer(calls, name, size), **kw)


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def snapshot(d: Path) -> list:
    """Everything observable about a canary directory."""
    out = [("<dir>", d.stat().st_mtime_ns)]
    for p in sorted(d.iterdir()):
        st = p.lstat()
        out.append((p.name, st.st_mtime_ns, st.st_size, read(p) if p.is_file() else None))
    return out


def raw_stats(root: Path) -> dict:
    """The bookkeeping as it is on disk, read without reconciling."""
    env = lmdb.open(str(root / DB_DIR), max_dbs=8, readonly=True)
    try:
        with env.begin() as txn:
            return {n: txn.stat(env.open_db(n.encode(), txn=txn, create=False))["entries"]
                    for n in ("entries", "pins", "reserve")}
    finally:
        env.close()


class Workers:
    """Child processes running _cache_worker.py; any still running at teardown are killed."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp, self.procs = tmp_path, []

    def start(self, tag: str, cfg: dict, *, pause: str | None = None, prefix: list | None = None):
        out = self.tmp / tag
        out.mkdir()
        cfg = {"out": str(out), **cfg}
        (out / "cfg.json").write_text(json.dumps(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTDATA_TEST_PAUSE")}
        env["FASTDATA_TEST_PAUSE_DIR"] = str(out)
        if pause:
            env["FASTDATA_TEST_PAUSE"] = pause
        argv = [sys.executable, "-P", str(WORKER), str(out / "cfg.json")]
        if prefix:
            argv = [*prefix[:-1], prefix[-1] + " " + shlex.join(argv)]
        proc = subprocess.Popen(argv, env=env)
        proc.out = out
        self.procs.append(proc)
        return proc

    @staticmethod
    def wait_file(proc, name: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not (proc.out / name).exists():
            assert proc.poll() is None, f"worker exited ({proc.returncode}) before writing {name}"
            assert time.monotonic() < deadline, f"no {name} from the worker within {timeout} s"
            time.sleep(0.005)

    @staticmethod
    def result(proc, timeout: float = 40) -> dict:
        assert proc.wait(timeout) == 0
        return json.loads((proc.out / "result.json").read_text())

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def workers(tmp_path):
    w = Workers(tmp_path)
    yield w
    w.kill_all()


def shards(n: int, size: int, ns: str = "ns") -> list:
    return [[ns, f"s{i:02d}", size] for i in range(n)]


def listing(root: Path, ns: str = "ns") -> list[str]:
    return sorted(os.listdir(root / ns))


# -- single process --------------------------------------------------------------------------

@pytest.mark.timeout(20)
def test_fresh_root_is_private_and_a_second_acquire_hits(tmp_path):
    root, calls = tmp_path / "a" / "root", []
    cache = NodeCache(str(root), "1KiB")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    with acquire(cache, "s1", 1000, calls) as h:
        assert h.path == str(root / "ns" / "s1")
        assert read(h.path) == content("s1", 1000)
        assert cache.usage() == 1000
        with acquire(cache, "s1", 1000, calls) as h2:
            assert cache.stats() == {"files": 1000, "reserved": 0, "entries": 1, "pins": 1, "reservations": 0}
        h2.release()
    h.release()
    assert calls == ["s1"]
    assert stat.S_IMODE((root / "ns").stat().st_mode) == 0o700
    assert cache.stats() == {"files": 1000, "reserved": 0, "entries": 1, "pins": 0, "reservations": 0}
    cache.close()
    cache.close()
    assert sorted(os.listdir(root)) == [DB_DIR, "ns"]
    # LMDB's data, its transaction lock and the holders' leases (storage/leases.py), nothing else
    assert sorted(os.listdir(root / DB_DIR)) == ["data.mdb", "leases", "txn.lock"]
    assert listing(root) == ["s1"]


@pytest.mark.timeout(20)
def test_world_writable_root_of_another_user_is_refused(tmp_path, caplog):
    other = tmp_path / "other"
    other.mkdir()
    other.chmod(0o777)
    if os.getuid() == 0:
        os.chown(other, 65534, 65534)
    else:
        other = Path("/tmp")
        if other.stat().st_uid == os.getuid() or not other.stat().st_mode & stat.S_IWOTH:
            pytest.skip("needs root, or a world-writable /tmp owned by someone else")
    before = sorted(os.listdir(other))
    with pytest.raises(FastdataCacheError) as e:
        NodeCache(str(other), "1MiB")
    assert str(other) in str(e.value) and "world-writable" in str(e.value)
    assert f"owned by uid {other.stat().st_uid}" in str(e.value)
    assert sorted(os.listdir(other)) == before  # nothing created
    mine = tmp_path / "mine"
    mine.mkdir()
    mine.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="fastdata.storage.cache"):
        NodeCache(str(mine), "1MiB").close()
    assert [r.getMessage() for r in caplog.records] == [
        f"node cache root {mine} is world-writable (mode 777): other users can tamper with it; chmod 700 it"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "a/b", ".", "..", ".hidden", "",
                                 "x\0y", "x" * 5000, "bad\udcff"])
def test_names_must_be_single_safe_components(tmp_path, bad):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "x").write_bytes(b"keep")
    before = snapshot(canary)
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 10_000)
    for ns, name in ((bad, "ok"), ("ok", bad)):
        with pytest.raises(FastdataConfigError) as e:
            acquire(cache, name, 10, calls, ns=ns)
        assert repr(bad)[:40] in str(e.value)
        with pytest.raises(FastdataConfigError):
            cache.set_next_use(ns, name, 1.0)
        with pytest.raises(FastdataConfigError):
            cache.invalidate(ns, name)
    cache.close()
    assert calls == [] and os.listdir(root) == [DB_DIR]
    assert snapshot(canary) == before


@pytest.mark.timeout(20)
def test_symlinks_inside_the_root_are_never_followed(tmp_path, caplog):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "victim").write_bytes(b"keep")
    before = snapshot(canary)
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 1000)
    (root / "evil").symlink_to(canary)  # a namespace directory that is a symlink
    with pytest.raises(FastdataCacheError, match="'evil' is a symlink or not a directory"):
        acquire(cache, "s1", 100, calls, ns="evil")
    assert calls == [] and cache.usage() == 0
    acquire(cache, "warm", 100, calls).release()
    (root / "ns" / "s1").symlink_to(canary / "victim")  # a final name that is a symlink, no entry
    with acquire(cache, "s1", 100, calls) as h:
        assert not os.path.islink(h.path) and read(h.path) == content("s1", 100)
    os.unlink(root / "ns" / "s1")  # an entry whose file became a symlink
    (root / "ns" / "s1").symlink_to(canary / "victim")
    with caplog.at_level(logging.WARNING, logger="fastdata.storage.cache"):
        with acquire(cache, "s1", 100, calls) as h:
            assert read(h.path) == content("s1", 100) and not os.path.islink(h.path)
        (root / "ns" / "dirlink").symlink_to(canary)
        (root / "ns" / "filelink").symlink_to(canary / "victim")
        cache.reconcile()
        for i in range(12):  # evictions: every entry goes at least once
            acquire(cache, f"e{i}", 400, calls).release()
    assert f"dropping {root}/ns/s1: it is not a regular file" in caplog.text
    assert "'evil' is a symlink or not a directory" in caplog.text  # reconcile skipped it
    assert listing(root) == ["e10", "e11"]
    assert os.path.islink(root / "evil")
    cache.close()
    assert snapshot(canary) == before


@pytest.mark.timeout(20)
def test_the_lmdb_directory_is_not_followed_either(tmp_path):
    canary = tmp_path / "canary"
    canary.mkdir()
    before = snapshot(canary)
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    (root / DB_DIR).symlink_to(canary)
    with pytest.raises(FastdataCacheError, match="is not a directory"):
        NodeCache(str(root), 1000)
    (root / DB_DIR).unlink()
    (root / DB_DIR).mkdir()
    (root / DB_DIR / "data.mdb").symlink_to(canary / "data.mdb")
    with pytest.raises(FastdataCacheError, match="data.mdb is not a file"):
        NodeCache(str(root), 1000)
    assert snapshot(canary) == before


@pytest.mark.timeout(20)
def test_a_planted_temp_path_is_never_written_through(tmp_path, monkeypatch):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "victim").write_bytes(b"keep")
    before = snapshot(canary)
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 1000)
    acquire(cache, "s1", 100, calls).release()
    monkeypatch.setattr(cache_mod, "temp_name", lambda name: ".fastdata-tmp.predictable")
    for plant in ("symlink", "file"):
        target = root / "ns" / ".fastdata-tmp.predictable"
        if plant == "symlink":
            target.symlink_to(canary / "victim")
        else:
            target.write_bytes(b"attacker")
        with pytest.raises(FileExistsError):
            acquire(cache, "s2", 100, calls)
        assert calls == ["s1"]
        assert cache.stats() == {"files": 100, "reserved": 0, "entries": 1, "pins": 0, "reservations": 0}
        if target.exists() or target.is_symlink():
            target.unlink()
    assert snapshot(canary) == before
    cache.close()


@pytest.mark.timeout(20)
def test_impossible_sizes_and_limits_are_rejected_up_front(tmp_path):
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 1000)
    with pytest.raises(FastdataConfigError) as e:
        acquire(cache, "big", 1001, calls)
    assert str(e.value) == ("shard ns/big is 1001 bytes but the node cache limit is 1000; the limit must "
                            "be at least 1001 bytes for it alone")
    assert calls == [] and os.listdir(root) == [DB_DIR] and cache.usage() == 0
    with pytest.raises(FastdataConfigError):
        cache.acquire("ns", "neg", -1, writer(calls, "neg", 1))
    assert NodeCache.minimum_limit(4096, 6) == 24576
    assert NodeCache.minimum_limit(0, 1) == 1
    for args in ((4096, 0), (-1, 2)):
        with pytest.raises(FastdataConfigError):
            NodeCache.minimum_limit(*args)
    for limit in (0, "12 parsecs", -5):
        with pytest.raises(FastdataConfigError):
            NodeCache(str(tmp_path / "other"), limit)
    with NodeCache(str(tmp_path / "kib"), "1KiB") as other:
        assert other.limit == 1024
    cache.close()


@pytest.mark.timeout(20)
def test_a_failed_fill_leaves_nothing_behind(tmp_path):
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 1000)
    empty = {"files": 0, "reserved": 0, "entries": 0, "pins": 0, "reservations": 0}
    short = writer(calls, "s1", 100, write=99)
    with pytest.raises(FastdataIntegrityError) as e:
        cache.acquire("ns", "s1", 100, short)
    assert str(e.value) == f"node cache: filling {root}/ns/s1 wrote 99 bytes, expected 100"
    assert listing(root) == [] and cache.stats() == empty

    def bad_hash(path):
        with open(path, "wb") as f:
            f.write(b"x" * 100)
        raise FastdataIntegrityError("ns/s1: sha256 mismatch")
    with pytest.raises(FastdataIntegrityError, match="sha256 mismatch"):
        cache.acquire("ns", "s1", 100, bad_hash)
    assert listing(root) == [] and cache.stats() == empty
    with acquire(cache, "s1", 100, calls) as h:
        assert read(h.path) == content("s1", 100)
    cache.close()


@pytest.mark.timeout(20)
def test_eviction_order_next_use_then_lru_and_never_a_pinned_shard(tmp_path):
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 300, wait_timeout=0.3)
    for name, nu in (("a", 5), ("b", 50), ("c", float("inf"))):
        acquire(cache, name, 100, calls, next_use=nu).release()
    acquire(cache, "d", 100, calls, next_use=10).release()
    assert listing(root) == ["a", "b", "d"]  # c: never needed again
    cache.set_next_use("ns", "a", 500)
    acquire(cache, "e", 100, calls, next_use=1).release()
    assert listing(root) == ["b", "d", "e"]  # a: needed latest
    cache.set_next_use("ns", "b", 7)
    cache.set_next_use("ns", "d", 7)
    acquire(cache, "b", 100, calls, next_use=7).release()  # b is now more recent than d
    acquire(cache, "f", 100, calls, next_use=1).release()
    assert listing(root) == ["b", "e", "f"]  # a tie on next_use: the least recently used goes
    hb = acquire(cache, "b", 100, calls, next_use=1000)
    he = acquire(cache, "e", 100, calls, next_use=900)
    acquire(cache, "g", 100, calls, next_use=1).release()
    assert listing(root) == ["b", "e", "g"]  # f went although b and e are needed later: pinned
    hg = acquire(cache, "g", 100, calls)
    t0 = time.monotonic()
    with pytest.raises(FastdataCacheError) as e:
        acquire(cache, "h", 100, calls)
    assert time.monotonic() - t0 >= 0.3
    assert str(e.value) == (
        f"node cache {root} cannot make room for ns/h (100 bytes) within 0.3 s: limit 300 bytes, usage "
        "300 bytes, of which 300 pinned by running processes and 0 reserved for downloads in flight; "
        "raise the limit (see NodeCache.minimum_limit) or release shards sooner")
    assert listing(root) == ["b", "e", "g"] and cache.usage() == 300
    for h in (hb, he, hg):
        h.release()
    assert calls == ["a", "b", "c", "d", "e", "f", "g"]
    cache.close()


@pytest.mark.timeout(20)
def test_damaged_files_are_refilled_or_invalidated_with_a_warning(tmp_path, caplog):
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 1000)
    for name in ("s1", "s2", "s3"):
        acquire(cache, name, 100, calls).release()
    os.truncate(root / "ns" / "s1", 99)
    data = bytearray(read(root / "ns" / "s2"))
    data[50] ^= 1
    (root / "ns" / "s2").write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="fastdata.storage.cache"):
        with acquire(cache, "s1", 100, calls) as h:  # the size check catches a truncation
            assert read(h.path) == content("s1", 100)
        assert calls[-1] == "s1" and len(calls) == 4
        with acquire(cache, "s2", 100, calls) as h:  # a flipped byte is the caller's hash check
            assert len(calls) == 4 and read(h.path) != content("s2", 100)
            cache.invalidate("ns", "s2", reason="sha256 mismatch on first use")
        with acquire(cache, "s2", 100, calls) as h:
            assert calls[-1] == "s2" and read(h.path) == content("s2", 100)
        os.unlink(root / "ns" / "s3")
        (root / "ns" / "stray").write_bytes(b"z" * 10)
        cache.reconcile()
    assert [r.getMessage() for r in caplog.records] == [
        f"node cache: dropping {root}/ns/s1: its size is 99 bytes, expected 100",
        f"node cache: dropping {root}/ns/s2: sha256 mismatch on first use",
        f"node cache: dropping {root}/ns/s3: the file is missing",
        f"node cache: deleting {root}/ns/stray: no cache entry records it",
    ]
    assert listing(root) == ["s1", "s2"]
    assert cache.usage() == tree_bytes(str(root)) == 200
    cache.close()


@pytest.mark.timeout(20)
def test_threads_of_one_process_fill_a_shard_once(tmp_path):
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 10_000)
    slow = writer(calls, "s1", 1000)
    gate = threading.Barrier(4)

    def fill(path):
        time.sleep(0.2)
        slow(path)
    got = []

    def run():
        gate.wait()
        with cache.acquire("ns", "s1", 1000, fill) as h:
            got.append(read(h.path) == content("s1", 1000))
    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["s1"] and got == [True] * 4
    assert cache.stats()["pins"] == 0
    cache.close()


@pytest.mark.timeout(20)
def test_a_second_publisher_neither_corrupts_nor_double_counts(tmp_path, caplog):
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 10_000, wait_timeout=0)  # no waiting: a concurrent fill is duplicated
    first = writer(calls, "s1", 1000)
    started, go_on, done = threading.Event(), threading.Event(), []

    def slow(path):
        started.set()
        go_on.wait(10)  # until the second fill has published
        first(path)
    t = threading.Thread(target=lambda: done.append(cache.acquire("ns", "s1", 1000, slow)))
    t.start()
    started.wait(5)
    with caplog.at_level(logging.WARNING, logger="fastdata.storage.cache"):
        h2 = acquire(cache, "s1", 1000, calls)  # publishes while the first fill is still running
    go_on.set()
    t.join(10)
    (h1,) = done
    assert calls == ["s1", "s1"] and "fetching it here too" in caplog.text
    assert read(h1.path) == read(h2.path) == content("s1", 1000)
    assert listing(root) == ["s1"]  # the loser's temp file is gone
    assert cache.stats() == {"files": 1000, "reserved": 0, "entries": 1, "pins": 1, "reservations": 0}
    h1.release()
    h2.release()
    cache.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_g3_root_owned_by_another_user_is_refused_even_if_not_world_writable(tmp_path):
    other = tmp_path / "other"
    other.mkdir(mode=0o755)
    os.chown(other, 65534, 65534)
    with pytest.raises(FastdataCacheError, match=f"{other} is owned by uid 65534, not this user"):
        NodeCache(str(other), "1MiB")
    assert os.listdir(other) == []


@pytest.mark.timeout(20)
def test_a_holder_is_alive_exactly_while_it_holds_its_lease(tmp_path, workers):
    """Liveness is the lease lock, not the pid: a pin recorded under this very pid but without
    a held lease (a dead process whose pid was reused) is dropped; a live process's pin stays."""
    root = tmp_path / "root"
    with NodeCache(str(root), 1000) as cache:
        acquire(cache, "s0", 100, []).release()
    holder = workers.start("holder", {"root": str(root), "limit": 1000, "shards": [["ns", "s0", 100]],
                                      "hold": True, "release": str(tmp_path / "release")})
    workers.wait_file(holder, "held")
    leases_dir = root / DB_DIR / "leases"
    unlocked = struct.pack(">IQ", os.getpid(), 12345)  # a lease file nobody holds
    (leases_dir / unlocked.hex()).touch()
    env = lmdb.open(str(root / DB_DIR), max_dbs=8)
    with env.begin(write=True) as txn:
        pins = env.open_db(b"pins", txn=txn)
        for dead in (struct.pack(">IQ", os.getpid(), 1), unlocked):  # same pid as this process
            txn.put(b"ns\0s0\0" + dead, struct.pack(">Q", 1), db=pins)
    env.close()
    with NodeCache(str(root), 1000) as cache:  # reconcile on open
        assert cache.stats()["pins"] == 1  # the worker's
        assert not (leases_dir / unlocked.hex()).exists()
    (tmp_path / "release").touch()
    assert workers.result(holder)["errors"] == []
    with NodeCache(str(root), 1000) as cache:
        assert cache.stats()["pins"] == 0


@pytest.mark.timeout(20)
def test_a_forked_child_reopens_the_environment(tmp_path):
    root, calls = tmp_path / "root", []
    cache = NodeCache(str(root), 10_000)
    h = acquire(cache, "s0", 100, calls)
    with warnings.catch_warnings():  # Python >= 3.12 warns about fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 3
        try:
            with acquire(cache, "s1", 100, []) as h1:
                ok = read(h1.path) == content("s1", 100) and cache.stats()["pins"] == 2
            h.release()  # the parent's pin: not the child's to drop
            code = 0 if ok and cache.stats()["pins"] == 1 else 1
            cache.close()
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert cache.stats() == {"files": 200, "reserved": 0, "entries": 2, "pins": 1, "reservations": 0}
    h.release()
    assert cache.stats()["pins"] == 0
    cache.close()


# -- several processes -----------------------------------------------------------------------

@pytest.mark.timeout(40)
def test_c2_no_partial_file_is_ever_visible_under_a_final_name(tmp_path, workers):
    root, size = tmp_path / "root", 256 << 10
    names = shards(4, size)
    stop = tmp_path / "stop"
    poller = workers.start("poller", {"op": "poll", "stop": str(stop), "dirs": [str(root / "ns")],
                                      "paths": [str(root / "ns" / n) for _, n, _ in names]})
    workers.wait_file(poller, "polling")
    filler = workers.start("filler", {"root": str(root), "limit": 4 * size, "shards": names,
                                      "chunk": 16 << 10, "delay": 0.005})
    res = workers.result(filler)
    stop.touch()
    seen = workers.result(poller)
    assert res["errors"] == [] and [v[:2] for v in res["verified"]] == [[n, True] for _, n, _ in names]
    for path, sizes in seen["sizes"].items():
        assert sizes == [-1, size], path  # absent, then complete: never anything in between
    assert seen["samples"] > 50
    temps = [t for t in seen["temps"] if t != DB_DIR]
    assert {t.split(".")[2] for t in temps} == {n for _, n, _ in names}  # every fill was watched
    for t in temps:
        assert re.match(TEMP_RE.format(name=r"s0[0-3]", pid=res["pid"]), t), t


@pytest.mark.timeout(40)
def test_c3_sigkill_mid_download_then_takeover(tmp_path, workers):
    root, size = tmp_path / "root", 512 << 10
    cfg = {"root": str(root), "limit": 2 * size, "shards": shards(1, size), "chunk": 64 << 10,
           "wait_timeout": 30}
    a = workers.start("a", {**cfg, "half_pause": True}, pause="mid_download:1")
    workers.wait_file(a, "mid_download.ready")
    (temp,) = [n for n in os.listdir(root / "ns") if n.startswith(".fastdata-tmp")]
    assert re.match(TEMP_RE.format(name="s00", pid=a.pid), temp)
    assert os.path.getsize(root / "ns" / temp) == size // 2
    b = workers.start("b", cfg)
    workers.wait_file(b, "opened")
    a.send_signal(signal.SIGKILL)  # left unreaped (a zombie) until b is done
    killed = time.monotonic()
    res = workers.result(b)
    took = time.monotonic() - killed
    a.wait()
    assert res["errors"] == [] and res["filled"] == ["s00"] and res["verified"][0][:2] == ["s00", True]
    assert res["listing"] == {"ns": ["s00"]}  # the takeover removed the dead filler's temp file
    assert took < 5, f"takeover took {took:.1f} s"
    cache = NodeCache(str(root), 2 * size)
    assert listing(root) == ["s00"]
    assert cache.stats() == {"files": size, "reserved": 0, "entries": 1, "pins": 0, "reservations": 0}
    assert cache.usage() == tree_bytes(str(root)) == size
    cache.close()


@pytest.mark.timeout(60)
def test_c5_the_limit_is_a_hard_high_water_mark(tmp_path, workers):
    root, size = tmp_path / "root", 32 << 10
    limit = 6 * size
    stop = tmp_path / "stop"
    monitor = workers.start("monitor", {"op": "monitor", "root": str(root), "stop": str(stop)})
    workers.wait_file(monitor, "polling")
    cfg = {"op": "cycles", "root": str(root), "limit": limit, "shards": shards(24, size), "cycles": 40,
           "chunk": 8 << 10, "delay": 0.001}
    procs = [workers.start(f"w{i}", {**cfg, "seed": i}) for i in range(3)]
    results = [workers.result(p, timeout=50) for p in procs]
    stop.touch()
    seen = workers.result(monitor)
    for res in results:
        assert res["errors"] == [] and len(res["verified"]) == 40
        assert all(ok for _, ok, _ in res["verified"])
    assert sum(len(r["filled"]) for r in results) > 24  # shards were evicted and fetched again
    assert seen["samples"] > 20
    assert 0 < seen["peak"] <= limit
    cache = NodeCache(str(root), limit)
    stats = cache.stats()
    assert stats["pins"] == 0 and stats["reservations"] == 0 and stats["reserved"] == 0
    assert cache.usage() == stats["files"] == tree_bytes(str(root)) == stats["entries"] * size
    cache.close()


@pytest.mark.timeout(40)
def test_c10_a_killed_holder_does_not_block_the_next_job(tmp_path, workers):
    root, size = tmp_path / "root", 64 << 10
    a = workers.start("a", {"root": str(root), "limit": 2 * size, "shards": shards(2, size), "hold": True,
                            "release": str(tmp_path / "never")})
    workers.wait_file(a, "held")
    a.kill()
    a.wait()
    assert raw_stats(root) == {"entries": 2, "pins": 2, "reserve": 0}
    t0 = time.monotonic()
    b = workers.start("b", {"root": str(root), "limit": 2 * size, "wait_timeout": 30,
                            "shards": [["ns", "t0", size], ["ns", "t1", size]]})
    res = workers.result(b)
    assert time.monotonic() - t0 < 10
    assert res["errors"] == [] and [v[:2] for v in res["verified"]] == [["t0", True], ["t1", True]]
    assert res["listing"] == {"ns": ["t0", "t1"]}  # the dead holder's pinned shards were evictable


@pytest.mark.timeout(40)
def test_c10_six_processes_on_six_roots_at_once(tmp_path, workers):
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    go = tmp_path / "go"
    procs = [workers.start(f"p{i}", {"root": str(tmp_path / f"node{i}" / "cache"), "limit": 4096,
                                     "shards": shards(4, 512), "go": str(go)}) for i in range(6)]
    go.touch()
    for i, p in enumerate(procs):
        res = workers.result(p)
        assert res["errors"] == [] and all(ok for _, ok, _ in res["verified"]) and len(res["filled"]) == 4
        root = tmp_path / f"node{i}" / "cache"
        assert sorted(os.listdir(root)) == [DB_DIR, "ns"] and listing(root) == [f"s0{j}" for j in range(4)]
    if os.path.isdir("/dev/shm"):  # other jobs may use /dev/shm meanwhile: look for ours only
        new = set(os.listdir("/dev/shm")) - shm_before
        assert {n for n in new if "fastdata" in n.lower() or "mdb" in n.lower()} == set()


@pytest.mark.timeout(40)
def test_one_fill_per_shard_when_processes_share_the_bookkeeping(tmp_path, workers):
    root, size, go = tmp_path / "root", 64 << 10, tmp_path / "go"
    cfg = {"root": str(root), "limit": 16 * size, "shards": shards(16, size), "chunk": 16 << 10,
           "delay": 0.002, "go": str(go)}
    procs = [workers.start(f"p{i}", cfg) for i in range(4)]
    go.touch()
    results = [workers.result(p) for p in procs]
    expected = [[n, True] for _, n, _ in cfg["shards"]]
    for res in results:
        assert res["errors"] == [] and [v[:2] for v in res["verified"]] == expected
    assert sorted(n for r in results for n in r["filled"]) == [n for _, n, _ in cfg["shards"]]


@pytest.mark.timeout(40)
def test_c11_file_contents_do_not_depend_on_coordination(tmp_path, workers):
    """Every process has a bookkeeping store of its own, so none sees another's reservations,
    entries or pins, as if every lock were a no-op: all fill every shard and publish over
    each other. Every reader still gets verified bytes."""
    root, size, go = tmp_path / "root", 64 << 10, tmp_path / "go"
    cfg = {"root": str(root), "limit": 16 * size, "shards": shards(16, size), "chunk": 16 << 10,
           "delay": 0.001, "go": str(go), "private_db": True}
    procs = [workers.start(f"p{i}", cfg) for i in range(4)]
    go.touch()
    results = [workers.result(p) for p in procs]
    expected = [[n, True] for _, n, _ in cfg["shards"]]
    for res in results:
        assert res["errors"] == [] and [v[:2] for v in res["verified"]] == expected
    assert sum(len(r["filled"]) for r in results) == 64  # nobody saw anybody: every fill duplicated
    assert listing(root) == [n for _, n, _ in cfg["shards"]]
    for _, n, s in cfg["shards"]:
        assert read(root / "ns" / n) == content(n, s)


SITES = {  # site: (hits before pausing, shards, limit in shards, hold, state after reconcile)
    "after_reserve": (2, 2, 3, True, ["s00"]),
    "mid_download": (2, 2, 3, True, ["s00"]),
    "after_publish_before_account": (2, 2, 3, True, ["s00", "s01"]),
    "mid_evict": (1, 3, 2, False, ["s01"]),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("site", sorted(SITES))
def test_c12_accounting_survives_a_sigkill_at_every_pause_point(tmp_path, workers, site, caplog):
    hits, n, slots, hold, kept = SITES[site]
    root, size = tmp_path / "root", 4096
    cfg = {"root": str(root), "limit": slots * size, "shards": shards(n, size), "hold": hold,
           "release": str(tmp_path / "never")}
    w = workers.start("w", cfg, pause=f"{site}:{hits}")
    workers.wait_file(w, f"{site}.ready")
    on_disk = {p: os.path.getsize(root / "ns" / p) for p in listing(root)}
    w.kill()
    w.wait()
    before = raw_stats(root)
    if site == "after_reserve":  # reserved first, the temp file comes later
        assert on_disk == {"s00": size}
    if site == "mid_download":  # the complete temp file was not yet renamed
        assert [s for p, s in on_disk.items() if p.startswith(".fastdata-tmp.s01.")] == [size]
    if site == "mid_evict":  # the victim's file is gone, its entry is not
        assert on_disk == {"s01": size} and before == {"entries": 2, "pins": 0, "reserve": 0}
    else:
        assert before == {"entries": 1, "pins": 1, "reserve": 1}  # the dead holder's pin and reservation
    with caplog.at_level(logging.INFO, logger="fastdata.storage.cache"):
        cache = NodeCache(str(root), slots * size)
    assert listing(root) == kept
    assert cache.stats() == {"files": len(kept) * size, "reserved": 0, "entries": len(kept), "pins": 0,
                             "reservations": 0}
    assert cache.usage() == tree_bytes(str(root)) == len(kept) * size
    if site == "mid_evict":
        assert f"dropping {root}/ns/s00: the file is missing" in caplog.text
    if site == "after_publish_before_account":
        assert f"adopting {root}/ns/s01" in caplog.text
    calls = []
    for _, name, s in cfg["shards"]:
        with acquire(cache, name, s, calls) as h:
            assert read(h.path) == content(name, s)
    assert calls == [name for _, name, _ in cfg["shards"] if name not in kept]
    assert cache.usage() == tree_bytes(str(root))
    cache.close()


@pytest.mark.timeout(40)
def test_a_pinned_shard_is_never_evicted_for_another_process(tmp_path, workers):
    root, size = tmp_path / "root", 4096
    release = tmp_path / "release"
    a = workers.start("a", {"root": str(root), "limit": 2 * size, "shards": shards(2, size), "hold": True,
                            "release": str(release)})
    workers.wait_file(a, "held")
    calls = []
    cache = NodeCache(str(root), 2 * size, wait_timeout=0.3)
    with pytest.raises(FastdataCacheError) as e:
        acquire(cache, "b0", size, calls)
    assert str(e.value) == (
        f"node cache {root} cannot make room for ns/b0 ({size} bytes) within 0.3 s: limit {2 * size} bytes, "
        f"usage {2 * size} bytes, of which {2 * size} pinned by running processes and 0 reserved for "
        "downloads in flight; raise the limit (see NodeCache.minimum_limit) or release shards sooner")
    assert listing(root) == ["s00", "s01"] and calls == []
    assert all(read(root / "ns" / n) == content(n, size) for n in ("s00", "s01"))
    cache.wait_timeout = 20
    got = []
    waiter = threading.Thread(target=lambda: got.append(acquire(cache, "b0", size, calls)))
    waiter.start()
    release.touch()
    waiter.join(25)
    assert workers.result(a)["errors"] == []
    (h,) = got
    assert read(h.path) == content("b0", size) and calls == ["b0"]
    assert len(listing(root)) == 2 and "b0" in listing(root)
    h.release()
    cache.close()


@pytest.mark.timeout(40)
def test_reserved_bytes_count_against_the_limit(tmp_path, workers):
    root, size = tmp_path / "root", 64 << 10
    w = workers.start("w", {"root": str(root), "limit": 2 * size, "shards": shards(2, size)},
                      pause="mid_download:2")
    workers.wait_file(w, "mid_download.ready")  # s00 published, s01 complete in its temp file
    cache = NodeCache(str(root), 2 * size)
    with acquire(cache, "s02", size, []) as h:
        assert read(h.path) == content("s02", size)
        assert tree_bytes(str(root)) == 2 * size  # s00 made way: s01's reservation counts
        assert "s00" not in listing(root) and cache.usage() == 2 * size
    w.kill()
    w.wait()
    cache.reconcile()
    assert listing(root) == ["s02"] and cache.usage() == size
    cache.close()


@pytest.mark.timeout(40)
def test_f1_disk_full_names_root_needed_and_free_bytes(tmp_path, workers):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not tmpfs_works(disk):
        pytest.skip("unprivileged user namespaces with tmpfs mounts are not available")
    root, size = disk / "cache", 4 << 20
    mount = f"mount -t tmpfs -o size=8m none {shlex.quote(str(disk))} && exec"
    w = workers.start("w", {"root": str(root), "limit": "64MiB", "shards": shards(2, size), "chunk": 1 << 20},
                      prefix=["unshare", "-Urm", "sh", "-c", mount])
    res = workers.result(w)
    assert res["filled"] == ["s00", "s01"]  # the full disk is not retried
    assert [v[:2] for v in res["verified"]] == [["s00", True]]
    ((name, kind, msg),) = res["errors"]
    assert (name, kind) == ("s01", "FastdataCacheError")
    m = re.fullmatch(rf"node cache {root}: disk full while writing ns/s01: needed {size} bytes, (\d+) bytes "
                     "free; lower the cache limit below the free space or free the disk", msg)
    assert m and int(m.group(1)) < size
    assert res["listing"] == {"ns": ["s00"]}  # no temp file left
    assert res["intact"] == {"s00": True}
    assert res["usage"] == size


@pytest.mark.timeout(60)
def test_containers_in_separate_pid_namespaces_keep_each_others_fills_and_pins(tmp_path, workers):
    """Audit §5.1: three processes, each in its own PID namespace (as pods or containers sharing
    a node's cache directory are), all pid 1. B and C see A's in-flight temp file and pin as
    live: nothing of A's is deleted or evicted, and the accounting matches the disk."""
    if not pid_namespaces_work():
        pytest.skip("unshare -Urpf --mount-proc is not available here")
    root, size = tmp_path / "root", 256 << 10
    own_ns = ["unshare", "-Urpf", "--mount-proc", "sh", "-c", "exec"]
    base = {"root": str(root), "limit": 3 * size, "wait_timeout": 20}
    a = workers.start("a", {**base, "shards": shards(1, size), "chunk": 16 << 10, "delay": 0.12,
                            "hold": True, "release": str(tmp_path / "release-a")}, prefix=own_ns)
    deadline = time.monotonic() + 20
    while not (root / "ns").exists() or not [n for n in os.listdir(root / "ns") if n.startswith(".")]:
        assert a.poll() is None and time.monotonic() < deadline, "A never started its fill"
        time.sleep(0.01)
    b = workers.start("b", {**base, "shards": [["ns", f"s{i:02d}", size] for i in (1, 2, 3)]},
                      prefix=own_ns)
    res_b = workers.result(b)
    assert res_b["errors"] == [] and all(v[1] for v in res_b["verified"])
    assert a.poll() is None, "A ended while B ran"
    assert [n for n in os.listdir(root / "ns") if n.startswith(".fastdata-tmp.s00.")], \
        "B deleted A's in-flight temp file"
    workers.wait_file(a, "held", timeout=30)
    c = workers.start("c", {**base, "shards": [["ns", f"s{i:02d}", size] for i in (4, 5, 6)]},
                      prefix=own_ns)
    res_c = workers.result(c)
    assert res_c["errors"] == [] and all(v[1] for v in res_c["verified"])
    assert read(root / "ns" / "s00") == content("s00", size)  # A's pinned shard was not evicted
    (tmp_path / "release-a").touch()
    res_a = workers.result(a)
    assert res_a["errors"] == [] and res_a["verified"][0][:2] == ["s00", True]
    with NodeCache(str(root), 3 * size) as cache:
        assert cache.usage() == tree_bytes(str(root)) <= 3 * size


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["truncated_after_meta", "truncated_meta", "garbage_meta"])
def test_damaged_bookkeeping_is_rebuilt_from_the_directory(tmp_path, workers, damage):
    """Audit §5.9: a node crash leaves data.mdb damaged. Every process opening the cache (two
    at once here) gets a working cache whose records are rebuilt from the files; reading a
    truncated LMDB file would otherwise end the process with SIGBUS."""
    root, size = tmp_path / "root", 64 << 10
    names = shards(3, size)
    with NodeCache(str(root), 4 * size) as cache:
        for _, n, s in names:
            acquire(cache, n, s, []).release()
    data = root / DB_DIR / "data.mdb"
    if damage == "truncated_after_meta":
        os.truncate(data, 2 * 4096)  # both meta pages kept, every record page gone
    elif damage == "truncated_meta":
        os.truncate(data, 4096)
    else:
        with open(data, "r+b") as f:
            f.write(os.urandom(2 * 4096))
    go = tmp_path / "go"
    cfg = {"root": str(root), "limit": 4 * size, "shards": names, "go": str(go)}
    procs = [workers.start(f"w{i}", cfg) for i in range(2)]
    go.touch()
    for p in procs:
        res = workers.result(p)
        assert res["errors"] == [] and [v[:2] for v in res["verified"]] == [[n, True] for _, n, _ in names]
        assert res["filled"] == []  # every file was adopted, none fetched again
    assert (root / DB_DIR / "data.mdb.damaged").exists()
    with NodeCache(str(root), 4 * size) as cache:
        assert cache.usage() == tree_bytes(str(root)) == 3 * size
        assert cache.stats()["entries"] == 3
