"""Remote-streaming benchmark: fastdata (and peers) reading from Azurite behind a TCP proxy.

The dataset lives in Azurite (the Azure Storage emulator, from npm, on loopback); every
client reaches it through a fault proxy (``tests/_faultproxy.py``, imported by path) that can
add latency and cap bandwidth. The cap here is one token bucket for the whole proxy (a
node's link), not per connection, so parallel ranged reads cannot multiply it. Latency is
the proxy's per-direction delay, so a request costs at least twice it. The proxy also logs
every HTTP request line (method, path, range), so bytes *and requests* are counted on the
wire, not by fastdata's own counters (those are reported beside them).

Measured, each in a fresh process (see README.md, "What the remote numbers mean"):

1. **local**: the dataset read from its local directory (memory-mapped, page cache warm):
   the "local-disk speed" a warm epoch should reach.
2. **cold / warm epoch**, (a) unshaped and (b) ``--latency`` + ``--cap``: one process, a
   fresh node cache (limit above the dataset), two epochs; MB/s from the proxy's byte count.
3. **rerun**: a new process on (b)'s warm cache, one epoch: data GETs (should be 0) and
   tokens/s against the local directory.
4. **cache sweep** (shaped): ``cache_limit`` at the accepted minimum (probed: the limit
   ``TokenDataset`` refuses names it), ``--sweep`` shares of the dataset, and ample (= (b)):
   bytes on the wire / bytes of samples consumed, epoch time, requests.
5. **small cache** (the older single-limit run, ``--small-cache``).
6. **link**: cold epoch MB/s as a share of the cap at (b)'s link and at ``--fast-latency`` +
   ``--fast-cap``, one rank and two ranks on one node (two processes, one cache dir, one proxy).
7. **time to first batch** with ``--ttfb-latency`` (no cap), fresh cache, fresh process;
   construction and first batch apart, bytes on the wire before the first batch.
8. **2 nodes**: two processes (WORLD_SIZE=2, RANK and FASTDATA_NODE_ID 0/1), each with its
   own node cache and its own shaped proxy: bytes downloaded per node in one epoch.
9. **data wait**: shaped, cold cache, a simulated training step (``time.sleep(0.05)``) per
   batch of 8 x 2049 tokens; the share of wall time spent waiting for data after the first batch.
10. **peers** (peers venv, ``_remote_peers.py`` + ``peers/remote_peers.py``): LitData and
    MosaicML Streaming through the same proxy; skipped, saying so, when the venv is absent.

``--quick``: a 16 MB dataset of 2 MB shards and short runs, the whole thing in a few minutes
(a smoke test; its numbers are not results). Hidden subcommands (``_epochs``, ``_minimum``)
are the child processes. The tables are made by ``render.py``; Azurite, the shaping proxy,
the child processes and the request counting are in ``_common.py``.
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import (  # noqa: E402
    BATCH,
    CONTAINER,
    DEFAULT_PEERS_PY,
    MB,
    SEQ_LEN,
    WORKERS,
    Azurite,
    Child,
    check_peers_python,
    conn_string,
    du,
    fresh_dir,
    log,
    make_proxy,
    requests_between,
    rss_peak_mib,
    source_state,
    summarize_epochs,
    upload,
    write_results,
)
from _remote_data import dataset_info, ensure_dataset, shard_meta  # noqa: E402
from render import remote_markdown  # noqa: E402

HERE = Path(__file__).resolve().parent
#: ``--blocks``: ``CacheConfig(blocks=...)`` of every remote run (None: the loose keywords, as before).
BLOCKS: list[bool | None] = [None]
# ============================================================================ the fastdata children

def make_dataset(cfg: dict, limit: int | None):
    """``TokenDataset`` of the child: loose keywords, or ``CacheConfig(blocks=...)`` with ``blocks``."""
    import fastdata  # noqa: PLC0415

    options = {"connection_string": cfg["conn"], "allow_insecure": True} if cfg.get("conn") else None
    if cfg.get("blocks") is None or not cfg.get("conn"):
        return fastdata.TokenDataset(cfg["url"], seq_len=SEQ_LEN, shuffle=True, seed=0,
                                     storage_options=options, cache_dir=cfg.get("cache_dir"),
                                     cache_limit=limit)
    cache = fastdata.CacheConfig(dir=cfg["cache_dir"], limit=limit, blocks=cfg["blocks"])
    return fastdata.TokenDataset(cfg["url"], seq_len=SEQ_LEN, shuffle=True, seed=0,
                                 storage=fastdata.StorageConfig(options=options), cache=cache)


def epochs_child(cfg: dict) -> dict:
    """Child: build the loader, run epochs, print an event line at each epoch's start/end
    (and after the first batch with ``first_event``); fastdata's counters at each end."""
    import torch  # noqa: PLC0415

    import fastdata  # noqa: PLC0415

    _ = fastdata.TokenDataset, fastdata.DataLoader
    t_import = time.time()
    ds = make_dataset(cfg, cfg.get("cache_limit"))
    t_ds = time.time()
    loader = fastdata.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS)
    t_built = time.time()
    try:
        steps = len(loader)
    except TypeError:
        steps = None
    x = torch.empty((BATCH, SEQ_LEN), dtype=torch.int64)
    y = torch.empty((BATCH, SEQ_LEN), dtype=torch.int64)
    epochs = []
    for epoch in range(cfg.get("epochs", 1)):
        print(json.dumps({"event": "start", "epoch": epoch}), flush=True)
        waits: list[float] = []
        n = 0
        t0 = time.perf_counter()
        t_start = time.time()
        it = iter(loader)
        while True:
            tw = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            waits.append(time.perf_counter() - tw)
            if n == 0 and cfg.get("first_event"):
                print(json.dumps({"event": "first", "epoch": epoch}), flush=True)
            x.copy_(batch["input_ids"])
            y.copy_(batch["labels"])
            n += 1
            if cfg.get("step_s"):
                time.sleep(cfg["step_s"])  # the simulated training step
            if cfg.get("max_steps") and n >= cfg["max_steps"]:
                break
            if cfg.get("max_s") and time.perf_counter() - t0 >= cfg["max_s"]:
                break
        wall = time.perf_counter() - t0
        print(json.dumps({"event": "end", "epoch": epoch}), flush=True)  # before close(): downloads
        snap = loader.metrics()  # still in flight after a stop are not the epoch's
        close = getattr(it, "close", None)
        if close is not None:
            close()
        after_first = wall - waits[0] if waits else 0.0
        epochs.append({
            "batches": n, "tokens": n * BATCH * (SEQ_LEN + 1), "wall_s": wall, "steps": steps,
            "first_batch_s": waits[0] if waits else None,
            "first_batch_abs": t_start + (waits[0] if waits else 0),
            "wait_after_first_s": sum(waits[1:]), "after_first_s": after_first,
            "max_wait_after_first_s": max(waits[1:], default=0.0),
            "metrics": {k: float(v) for k, v in snap.items()
                        if k.split(".", 1)[0] in ("fetch", "cache", "reader", "prefetch")
                        and isinstance(v, (int, float))},
        })
    return {"import_s": t_import - T_MAIN, "built_s": t_built - t_import, "dataset_s": t_ds - t_import,
            "t_import": t_import, "t_main": T_MAIN, "epochs": epochs, "rss_peak_mib": rss_peak_mib(),
            "world": vars(loader.world)}


def minimum_child(cfg: dict) -> dict:
    """Child: the smallest ``cache_limit`` fastdata accepts, from its refusal of 1 byte."""
    import fastdata  # noqa: PLC0415

    try:
        ds = make_dataset(cfg, 1)
        fastdata.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS)
    except Exception as e:  # noqa: BLE001 - the refusal is the answer
        m = re.search(r"at least (\d+) bytes", str(e)) or re.search(r"(\d+) bytes\D*$", str(e))
        return {"minimum": int(m.group(1)) if m else None, "message": f"{type(e).__name__}: {e}"}
    return {"minimum": 1, "message": "a 1-byte cache_limit was accepted"}


# ============================================================================ the phases

def run_fastdata(cfg: dict, proxies: list, env: dict | None = None, spawn: float | None = None) -> Child:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_epochs", json.dumps(cfg)]
    return Child(cmd, proxies, env, spawn)


def proxied(proxy, url: str, cache: Path, limit: int, **cfg) -> dict:
    return {"url": url, "conn": conn_string(proxy.port), "cache_dir": str(cache), "cache_limit": limit,
            "blocks": BLOCKS[0], **cfg}


def phase_local(args, dataset: Path) -> dict:
    r = run_fastdata({"url": str(dataset), "epochs": 2}, []).wait(args.timeout)
    if "error" in r:
        return r
    eps = summarize_epochs(r)
    return {"epochs": eps, "tokens_per_s": max(e["tokens_per_s"] for e in eps)}


def phase_epochs(args, name: str, proxy, url: str, latency: float, cap: float | None,  # noqa: PLR0913
                 cache_limit: int, epochs: int = 2, max_s: float | None = None, fresh: bool = True,
                 timeout: float | None = None) -> dict:
    proxy.shape(latency, cap)
    cache = args.work_dir / "cache" / name
    if fresh or not cache.exists():
        fresh_dir(cache)
    r = run_fastdata(proxied(proxy, url, cache, cache_limit, epochs=epochs, max_s=max_s),
                     [proxy]).wait(min(args.timeout, timeout or args.timeout))
    proxy.shape()
    if "error" in r:
        return r
    (b0, b1), = r["reqs_span"]
    return {"latency_s": latency, "cap_bps": cap, "cache_limit": cache_limit, "max_s": max_s,
            "epochs": summarize_epochs(r, proxy, 0, args.meta_bytes),
            "construct_bytes": r["events"][0]["bytes"][0] if r["events"] else None,
            "process_requests": requests_between(proxy, b0, b1, args.meta_bytes),
            "total_bytes": r["bytes_total"][0], "cache_bytes": du(cache), "built_s": r["built_s"]}


def phase_sweep(args, proxy, url: str, info: dict, res: dict) -> dict:
    """Cold epochs (``--sweep-s`` at most) at the accepted minimum and at ``--sweep`` shares."""
    probe = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_minimum", json.dumps(
        proxied(proxy, url, fresh_dir(args.work_dir / "cache" / "minimum"), 1))],
        capture_output=True, text=True, timeout=args.timeout, check=False)
    try:
        minimum = json.loads(probe.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"minimum probe exit {probe.returncode}", "stderr": probe.stderr[-2000:]}
    rows = []
    lat, cap = args.latency, args.cap
    limits = ([("minimum", minimum["minimum"])] if minimum["minimum"] else []) + [
        (f"{s:.0%}", int(info["total_bytes"] * s)) for s in args.sweep]
    for label, limit in sorted(limits, key=lambda kv: kv[1]):
        row = {"label": label, "cache_limit": limit, "share": limit / info["total_bytes"]}
        if minimum["minimum"] and limit < minimum["minimum"]:
            row["refused"] = minimum["message"]
        else:
            # a stop is checked between batches: a thrashing cache may overshoot, so bound the process
            row.update(phase_epochs(args, f"sweep-{label}", proxy, url, lat, cap, limit, 1, args.sweep_s,
                                    timeout=2 * args.sweep_s + 90))
            log(f"[sweep] {label} ({limit / MB:.1f} MB): "
                + json.dumps({k: v for k, v in (row.get("epochs") or [{}])[0].items()
                              if k in ("wall_s", "batches", "bytes", "amplification", "requests")})[:400])
        rows.append(row)
    sh = res.get("shaped") or {}
    if sh.get("epochs"):
        rows.append({"label": "ample", "cache_limit": sh["cache_limit"], "reused": "shaped",
                     "share": sh["cache_limit"] / info["total_bytes"], "epochs": sh["epochs"][:1]})
    return {"latency_s": lat, "cap_bps": cap, "minimum": minimum, "rows": rows, "max_s": args.sweep_s}


def phase_ranks(args, proxy, url: str, latency: float, cap: float | None, cache_limit: int,
                ranks: int = 2) -> dict:
    """``ranks`` processes of one node (one cache dir, one proxy = one link), one cold epoch."""
    proxy.shape(latency, cap)
    cache = fresh_dir(args.work_dir / "cache" / f"ranks{ranks}-{latency}")
    b0 = len(proxy.counters.requests)
    kids = [run_fastdata(proxied(proxy, url, cache, cache_limit, epochs=1), [proxy],
                         {"WORLD_SIZE": str(ranks), "RANK": str(k), "LOCAL_RANK": str(k),
                          "LOCAL_WORLD_SIZE": str(ranks), "FASTDATA_NODE_ID": "0"})
            for k in range(ranks)]
    rs = [c.wait(args.timeout) for c in kids]
    proxy.shape()
    bad = [r for r in rs if "error" in r]
    if bad:
        return bad[0]
    starts = [e for r in rs for e in r["events"] if e["event"] == "start"]
    ends = [e for r in rs for e in r["events"] if e["event"] == "end"]
    s, t = min(starts, key=lambda e: e["t"]), max(ends, key=lambda e: e["t"])
    wall, b = t["t"] - s["t"], t["abs"][0] - s["abs"][0]
    tokens = sum(r["epochs"][0]["tokens"] for r in rs)
    return {"latency_s": latency, "cap_bps": cap, "ranks": ranks, "wall_s": wall, "bytes": b,
            "mb_per_s": b / MB / wall if wall else 0.0, "consumed_bytes": tokens * 2,
            "rank_walls": [r["epochs"][0]["wall_s"] for r in rs], "cache_bytes": du(cache),
            "requests": requests_between(proxy, s["reqs"][0], t["reqs"][0], args.meta_bytes),
            "process_requests": requests_between(proxy, b0, len(proxy.counters.requests), args.meta_bytes)}


def phase_link(args, proxy, url: str, big: int, res: dict) -> dict:
    rows = []
    for lat, cap in ((args.latency, args.cap), (args.fast_latency, args.fast_cap)):
        for ranks in (1, 2):
            if ranks == 1 and (lat, cap) == (args.latency, args.cap) and res.get("shaped", {}).get("epochs"):
                e = res["shaped"]["epochs"][0]
                rows.append({"latency_s": lat, "cap_bps": cap, "ranks": 1, "reused": "shaped", **e})
                continue
            if ranks == 1:
                r = phase_epochs(args, f"link-{lat}", proxy, url, lat, cap, big, 1)
                row = {"latency_s": lat, "cap_bps": cap, "ranks": 1,
                       **(r if "error" in r else r["epochs"][0])}
            else:
                row = {"latency_s": lat, "cap_bps": cap, **phase_ranks(args, proxy, url, lat, cap, big)}
            log(f"[link] {lat * 1e3:.0f} ms + {cap / MB:.0f} MB/s, {ranks} rank(s): "
                + (row.get("error") or f"{row['wall_s']:.1f} s {row['mb_per_s']:.1f} MB/s"))
            rows.append(row)
    return {"rows": rows}


def phase_ttfb(args, proxy, url: str, latency: float, runs: int, cache_limit: int) -> dict:
    proxy.shape(latency, None)
    rs = []
    for k in range(runs):
        cache = fresh_dir(args.work_dir / "cache" / f"ttfb-{k}")
        spawn = time.time()
        r = run_fastdata(proxied(proxy, url, cache, cache_limit, epochs=1, max_steps=1, first_event=True),
                         [proxy], spawn=spawn).wait(args.timeout)
        if "error" in r:
            rs.append(r)
            continue
        e = r["epochs"][0]
        ev = {x["event"]: x for x in r["events"]}
        first = ev.get("first") or ev["end"]
        rs.append({"construct_and_first_s": r["built_s"] + e["first_batch_s"], "construct_s": r["built_s"],
                   "first_batch_s": e["first_batch_s"], "from_spawn_s": e["first_batch_abs"] - spawn,
                   "import_s": r["t_import"] - spawn, "construct_bytes": ev["start"]["bytes"][0],
                   "first_bytes": first["bytes"][0] - ev["start"]["bytes"][0],
                   "first_requests": requests_between(proxy, ev["start"]["reqs"][0], first["reqs"][0],
                                                      args.meta_bytes),
                   "step_bytes": BATCH * (SEQ_LEN + 1) * 2})
    proxy.shape()
    return {"latency_s": latency, "runs": rs}


def phase_two_nodes(args, proxies: list, url: str, latency: float, cap: float | None,
                    cache_limit: int) -> dict:
    children, caches = [], []
    for node, p in enumerate(proxies):
        p.shape(latency, cap)
        cache = fresh_dir(args.work_dir / "cache" / f"node{node}")
        caches.append(cache)
        env = {"WORLD_SIZE": "2", "RANK": str(node), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
               "FASTDATA_NODE_ID": str(node)}
        children.append(run_fastdata(proxied(p, url, cache, cache_limit, epochs=1), [p], env))
    rs = [c.wait(args.timeout) for c in children]
    for p in proxies:
        p.shape()
    nodes = []
    for r, cache, p in zip(rs, caches, proxies):
        if "error" in r:
            nodes.append(r)
            continue
        e = summarize_epochs(r, p, 0, args.meta_bytes)[0]
        nodes.append({"bytes": r["bytes_total"][0], "epoch_bytes": e["bytes"], "cache_bytes": du(cache),
                      "wall_s": e["wall_s"], "batches": e["batches"], "mb_per_s": e["mb_per_s"],
                      "consumed_bytes": e["consumed_bytes"], "requests": e["requests"],
                      "world": r.get("world")})
    return {"latency_s": latency, "cap_bps": cap, "nodes": nodes}


def phase_data_wait(args, proxy, url: str, latency: float, cap: float | None, cache_limit: int) -> dict:
    proxy.shape(latency, cap)
    cache = fresh_dir(args.work_dir / "cache" / "datawait")
    r = run_fastdata(proxied(proxy, url, cache, cache_limit, epochs=1, step_s=args.step_s,
                             max_steps=args.wait_steps), [proxy]).wait(args.timeout)
    proxy.shape()
    if "error" in r:
        return r
    e = r["epochs"][0]
    return {"latency_s": latency, "cap_bps": cap, "step_s": args.step_s, "steps": e["batches"],
            "tokens_per_step": BATCH * (SEQ_LEN + 1), "first_batch_s": e["first_batch_s"],
            "wait_after_first_s": e["wait_after_first_s"], "after_first_s": e["after_first_s"],
            "max_wait_s": e["max_wait_after_first_s"],
            "share": e["wait_after_first_s"] / e["after_first_s"] if e["after_first_s"] else None}


# ============================================================================ main

def run_all(args: argparse.Namespace) -> dict:  # noqa: C901 - one phase after another
    dataset = ensure_dataset(args)
    info = dataset_info(dataset)
    args.meta_bytes = shard_meta(dataset)
    log(f"dataset {dataset}: {info['tokens'] / 1e6:.0f} M tokens, {info['shards']} shards, "
        f"{info['bytes'] / MB:.0f} MB")
    big = int(info["total_bytes"] * 1.5)
    small = max(int(info["total_bytes"] * args.small_cache), info["max_shard"] * 5 + (1 << 20))
    res: dict = {"dataset": info, "dataset_path": str(dataset), "cache_limit": big, "quick": args.quick,
                 "source": source_state(), "command": " ".join(["benchmarks/bench_remote.py", *args.argv]),
                 "args": {"latency": args.latency, "cap": args.cap, "shard_size": args.shard_size,
                          "block_size": args.block_size, "blocks": args.blocks,
                          "ttfb_latency": args.ttfb_latency, "fast_latency": args.fast_latency,
                          "fast_cap": args.fast_cap},
                 "load_before": os.getloadavg()}
    want = set(args.phases)
    if "local" in want:
        log("local directory baseline")
        res["local"] = phase_local(args, dataset)
    copies = 1 + (2 if not args.no_peers else 0)
    az = Azurite(args.work_dir, memory_mb=int(info["total_bytes"] * copies * 1.2 / MB) + 512)
    proxies = []
    try:
        direct = conn_string(az.port)
        res["upload_mb_per_s"] = upload(direct, dataset, f"{CONTAINER}/ds")
        url = f"az://{CONTAINER}/ds"
        proxies = [make_proxy(az.port), make_proxy(az.port)]
        p = proxies[0]
        lat, cap = args.latency, args.cap
        steps = [("unshaped", lambda: phase_epochs(args, "unshaped", p, url, 0.0, None, big)),
                 ("shaped", lambda: phase_epochs(args, "shaped", p, url, lat, cap, big)),
                 ("rerun", lambda: phase_epochs(args, "shaped", p, url, lat, cap, big, 1, fresh=False)
                  if (res.get("shaped") or {}).get("epochs") else {"error": "needs the shaped run"}),
                 ("sweep", lambda: phase_sweep(args, p, url, info, res)),
                 ("small_cache", lambda: phase_epochs(args, "small", p, url, lat, cap, small, 1,
                                                      args.small_cache_s)),
                 ("link", lambda: phase_link(args, p, url, big, res)),
                 ("ttfb", lambda: phase_ttfb(args, p, url, args.ttfb_latency, args.ttfb_runs, big)),
                 ("two_nodes", lambda: phase_two_nodes(args, proxies, url, lat, cap, big)),
                 ("data_wait", lambda: phase_data_wait(args, p, url, lat, cap, big))]
        for name, fn in steps:
            if name not in want:
                continue
            t0 = time.perf_counter()
            res[name] = fn()
            r = res[name]
            if "error" in r:
                log(f"[{name}] FAILED {r['error']}\n{r.get('stderr', '')[-2500:]}")
            else:
                log(f"[{name}] done in {time.perf_counter() - t0:.0f} s: "
                    + json.dumps({k: v for k, v in r.items() if k in ("epochs", "nodes", "share", "runs")},
                                 default=str)[:600])
        if "peers" in want:
            if args.no_peers:
                res["peers"] = {"error": args.peers_skipped}
            else:
                from _remote_peers import run_peers  # noqa: PLC0415

                res["peers"] = run_peers(args, res, az, p)
    finally:
        for p in proxies:
            p.stop()
        az.stop()
        shutil.rmtree(args.work_dir / "cache", ignore_errors=True)
    res["load_after"] = os.getloadavg()
    return res


PHASES = ("local", "unshaped", "shaped", "rerun", "sweep", "small_cache", "link", "ttfb", "two_nodes",
          "data_wait", "peers")
#: ``--quick``: defaults for a smoke test of every phase in a few minutes (explicit options win).
QUICK = {"tokens": 8_000_000, "shard_size": "256KB", "block_size": "64KiB", "ttfb_runs": 1,
         "small_cache_s": 10, "sweep_s": 20, "wait_steps": 40, "timeout": 240}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_epochs", "_minimum"):
        child = epochs_child if argv[0] == "_epochs" else minimum_child
        sys.stdout.write(json.dumps(child(json.loads(argv[1]))) + "\n")
        sys.stdout.flush()
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny dataset, short runs: a smoke test")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="default .work/remote (--quick: .work/remote-quick)")
    ap.add_argument("--fastdata", default=os.environ.get("FASTDATA", "fastdata"))
    ap.add_argument("--tokens", type=lambda s: int(float(s)), default=128_000_000,
                    help="dataset size in uint16 tokens (default 1.28e8 = 256 MB)")
    ap.add_argument("--shard-size", default="16MB", help="fastdata pack --shard-size")
    ap.add_argument("--block-size", default=None, help="fastdata pack --block-size (default: pack's)")
    ap.add_argument("--blocks", choices=("on", "off", "default"), default="on",
                    help="CacheConfig(blocks=True/False) for the remote runs; default: fastdata's default")
    ap.add_argument("--latency", type=float, default=0.020, help="per-direction delay, s (shaped runs)")
    ap.add_argument("--cap", type=float, default=50e6, help="link bandwidth cap, bytes/s (shaped runs)")
    ap.add_argument("--fast-latency", type=float, default=0.002, help="the second link of the link phase")
    ap.add_argument("--fast-cap", type=float, default=500e6)
    ap.add_argument("--ttfb-latency", type=float, default=0.050)
    ap.add_argument("--ttfb-runs", type=int, default=3)
    ap.add_argument("--sweep", type=float, nargs="*", default=[0.15, 0.35],
                    help="cache limits of the sweep, shares of the dataset (plus the minimum and ample)")
    ap.add_argument("--sweep-s", type=float, default=120, help="a sweep epoch stops after this, s")
    ap.add_argument("--small-cache", type=float, default=0.5, help="small cache limit, share of the dataset")
    ap.add_argument("--small-cache-s", type=float, default=30, help="the small-cache run stops after this")
    ap.add_argument("--step-s", type=float, default=0.050, help="simulated training step, s")
    ap.add_argument("--wait-steps", type=int, default=300, help="steps of the data-wait run")
    ap.add_argument("--phases", nargs="*", default=list(PHASES), choices=PHASES)
    ap.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS_PY)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--timeout", type=float, default=600, help="per child process, s")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--md-out", type=Path, default=None)
    if "--quick" in argv:
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    args.argv = argv
    BLOCKS[0] = {"on": True, "off": False, "default": None}[args.blocks]
    args.work_dir = args.work_dir or HERE / ".work" / ("remote-quick" if args.quick else "remote")
    args.peers_skipped = "--no-peers"
    if not args.no_peers and not args.peers_python.exists():
        args.peers_skipped = (f"the peers venv {args.peers_python} is absent "
                              "(benchmarks/setup_peers.sh makes it)")
    check_peers_python(args)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = run_all(args)
    res["elapsed_s"] = time.perf_counter() - t0
    log(f"remote benchmark done in {res['elapsed_s']:.0f} s")
    write_results(args, res, remote_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
