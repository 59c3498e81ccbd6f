"""Child process for tests/test_cache.py: one process using a node cache.

Run as ``python -P tests/_cache_worker.py CONFIG.json``. The child only records what it
observes (``result.json`` under ``out``); the parent test asserts. Config keys:

  op            "acquire" (default): acquire ``shards`` in order, verify, hold, release;
                "cycles": ``cycles`` random acquire/release rounds over ``shards``;
                "poll": stat() ``paths`` and list ``dirs`` every ~1 ms until ``stop`` exists;
                "monitor": sum file sizes under ``root`` every ~5 ms until ``stop`` exists
  root, limit, wait_timeout, private_db    NodeCache arguments
  shards        [[namespace, name, size], ...]
  chunk, delay  fill writes ``chunk`` bytes at a time, sleeping ``delay`` s after each
  half_pause    call pause_point("mid_download") inside fill after half the bytes
  hold          keep every handle pinned until the file ``release`` exists (after writing
                ``held``), then release
  go            wait for this file before starting (a start barrier); "poll" and "monitor"
                write ``polling`` after their first sample, "acquire" writes ``opened`` once the
                cache is open
  seed, cycles  for "cycles"
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import json
import os
import random
import sys
import time
import traceback

from fastdata._testing import pause_point
from fastdata.errors import FastdataIntegrityError
from fastdata.storage.cache import DB_DIR, NodeCache


def content(name: str, size: int) -> bytes:
    """The expected bytes of shard ``name``: a repeated hash, so any misplaced byte shows."""
    block = hashlib.sha256(name.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def tree_bytes(root: str) -> int:
    """Bytes of every file under ``root`` except the LMDB bookkeeping (temp files included)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and DB_DIR in dirnames:
            dirnames.remove(DB_DIR)
        for f in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.002)


def make_fill(cfg: dict, name: str, size: int, log: list):
    data = content(name, size)

    def fill(path: str) -> None:
        log.append(name)
        chunk = cfg.get("chunk") or max(size, 1)
        with open(path, "r+b") as f:
            for i in range(0, size, chunk):
                f.write(data[i:i + chunk])
                f.flush()
                if cfg.get("half_pause") and i + chunk >= size // 2 > i:
                    pause_point("mid_download")
                if cfg.get("delay"):
                    time.sleep(cfg["delay"])
        with open(path, "rb") as f:  # the caller's verification: a hash of what was written
            if hashlib.sha256(f.read()).digest() != hashlib.sha256(data).digest():
                raise FastdataIntegrityError(f"{name}: hash mismatch")
    return fill


def run_acquire(cfg: dict, cache: NodeCache, res: dict) -> None:
    handles = []
    for ns, name, size in cfg["shards"]:
        t0 = time.monotonic()
        try:
            h = cache.acquire(ns, name, size, make_fill(cfg, name, size, res["filled"]))
        except Exception as e:
            res["errors"].append([name, type(e).__name__, str(e)])
            continue
        with open(h.path, "rb") as f:
            res["verified"].append([name, f.read() == content(name, size), time.monotonic() - t0])
        handles.append(h)
        if not cfg.get("hold"):
            h.release()
    if cfg.get("hold"):
        open(os.path.join(cfg["out"], "held"), "w").close()
        wait_for(cfg["release"])
        for h in handles:
            h.release()


def run_cycles(cfg: dict, cache: NodeCache, res: dict) -> None:
    rng = random.Random(cfg["seed"])
    for _ in range(cfg["cycles"]):
        ns, name, size = rng.choice(cfg["shards"])
        with cache.acquire(ns, name, size, make_fill(cfg, name, size, res["filled"]),
                           next_use=rng.choice([rng.random() * 100, float("inf")])) as h:
            with open(h.path, "rb") as f:
                res["verified"].append([name, f.read() == content(name, size), 0])
        other = rng.choice(cfg["shards"])
        cache.set_next_use(other[0], other[1], rng.random() * 100)


def run_poll(cfg: dict, res: dict) -> None:
    sizes: dict[str, set] = {p: set() for p in cfg["paths"]}
    temps, samples = set(), 0
    while not os.path.exists(cfg["stop"]):
        for p in cfg["paths"]:
            try:
                sizes[p].add(os.stat(p).st_size)
            except FileNotFoundError:
                sizes[p].add(-1)
        for d in cfg["dirs"]:
            with contextlib.suppress(FileNotFoundError):
                temps.update(n for n in os.listdir(d) if n.startswith("."))
        if not samples:
            open(os.path.join(cfg["out"], "polling"), "w").close()
        samples += 1
        time.sleep(0.001)
    res.update(sizes={p: sorted(s) for p, s in sizes.items()}, temps=sorted(temps), samples=samples)


def run_monitor(cfg: dict, res: dict) -> None:
    peak, samples = 0, 0
    while not os.path.exists(cfg["stop"]):
        peak = max(peak, tree_bytes(cfg["root"]))
        if not samples:
            open(os.path.join(cfg["out"], "polling"), "w").close()
        samples += 1
        time.sleep(0.005)
    res.update(peak=peak, samples=samples)


def main() -> None:
    faulthandler.dump_traceback_later(60, exit=True)
    cfg = json.load(open(sys.argv[1]))
    res: dict = {"pid": os.getpid(), "filled": [], "verified": [], "errors": []}
    if cfg.get("go"):
        wait_for(cfg["go"])
    try:
        if cfg.get("op") == "poll":
            run_poll(cfg, res)
        elif cfg.get("op") == "monitor":
            run_monitor(cfg, res)
        else:
            cache = NodeCache(cfg["root"], cfg["limit"], wait_timeout=cfg.get("wait_timeout", 30.0),
                              _private_db=cfg.get("private_db", False))
            open(os.path.join(cfg["out"], "opened"), "w").close()
            (run_cycles if cfg.get("op") == "cycles" else run_acquire)(cfg, cache, res)
            res["usage"] = cache.usage()
            cache.close()
            # What the cache directory holds afterwards (for runs whose root vanishes with them).
            res["listing"] = {ns: sorted(os.listdir(os.path.join(cfg["root"], ns)))
                              for ns in {s[0] for s in cfg["shards"]}}
            res["intact"] = {}
            for ns, name, size in cfg["shards"]:
                path = os.path.join(cfg["root"], ns, name)
                with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
                    res["intact"][name] = f.read() == content(name, size)
    except Exception as e:
        res["errors"].append(["<main>", type(e).__name__, f"{e}\n{traceback.format_exc()}"])
    tmp = os.path.join(cfg["out"], f".result.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, os.path.join(cfg["out"], "result.json"))


if __name__ == "__main__":
    main()
