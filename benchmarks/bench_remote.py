"""Remote-streaming benchmark: fastdata (and peers) reading from Azurite behind a TCP proxy.

The dataset lives in Azurite (the Azure Storage emulator, from npm, on loopback); every
client reaches it through a fault proxy (``tests/_faultproxy.py``, imported by path) that can
add latency and cap bandwidth. The cap here is one token bucket for the whole proxy (a
node's link), not per connection, so parallel ranged reads cannot multiply it. Latency is
the proxy's per-direction delay, so a request costs at least twice it.

Measured, each in a fresh process (see README.md, "What the remote numbers mean"):

1. **local**: the dataset read from its local directory (memory-mapped, page cache warm):
   the "local-disk speed" a warm epoch should reach.
2. **cold / warm epoch**, (a) unshaped and (b) ``--latency`` + ``--cap``: one process, a
   fresh node cache (limit above the dataset), two epochs; MB/s from the proxy's byte count.
3. **small cache**: shaped, ``cache_limit`` below the dataset: both epochs download.
4. **time to first batch** with ``--ttfb-latency`` (no cap), fresh cache, fresh process.
5. **2 nodes**: two processes (WORLD_SIZE=2, RANK and FASTDATA_NODE_ID 0/1), each with its
   own node cache and its own shaped proxy: bytes downloaded per node in one epoch.
6. **data wait**: shaped, cold cache, a simulated training step (``time.sleep(0.05)``) per
   batch of 8 x 2049 tokens; the share of wall time spent waiting for data after the first
   batch.
7. **peers** (peers venv, ``peers/remote_peers.py``): LitData from the same Azurite through the
   same proxy (its Azure backend takes ``storage_options``); MosaicML Streaming over a local
   directory as its "remote" (its Azure backend hard-codes ``https://<account>.blob.core.windows.net``)
   and, with that one line patched to the proxy, from Azurite too.

Hidden subcommands (``_epochs``) are the child processes. The tables are made by
``render.py``; Azurite, the shaping proxy and the plumbing shared with ``bench_loader.py``
are in ``_common.py``.
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import (  # noqa: E402
    ACCOUNT,
    BATCH,
    CONTAINER,
    DEFAULT_PEERS_PY,
    DEV_KEY,
    MB,
    SEQ_LEN,
    WORKERS,
    Azurite,
    check_peers_python,
    conn_string,
    du,
    ensure_stream,
    log,
    make_proxy,
    rss_peak_mib,
    run_json,
    upload,
    write_results,
)
from render import remote_markdown, shaping  # noqa: E402

HERE = Path(__file__).resolve().parent
PEERS_SCRIPT = HERE / "peers" / "remote_peers.py"


# ============================================================================ data

def ensure_dataset(args: argparse.Namespace) -> Path:
    """A packed dataset of ~``--tokens`` random uint16 tokens (cached between runs)."""
    import numpy as np  # noqa: PLC0415

    out = args.work_dir / "dataset"
    key = {"tokens": args.tokens, "shard_size": args.shard_size, "seed": 0, "vocab": 50000}
    stamp = args.work_dir / "dataset.json"
    if (out / "manifest.json").exists() and stamp.exists() and json.loads(stamp.read_text()) == key:
        try:
            import fastdata  # noqa: PLC0415

            fastdata.open_dataset(str(out))
            return out
        except Exception as e:  # noqa: BLE001 - e.g. written by an older fastdata
            log(f"note: {out} does not open ({type(e).__name__}: {e}); packing again")
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    rng = np.random.default_rng(0)
    lens = rng.integers(256, 4096, size=args.tokens // 2000 + 16)
    lens = lens[: int(np.searchsorted(np.cumsum(lens), args.tokens)) + 1]
    toks = rng.integers(0, key["vocab"], size=int(lens.sum()), dtype=np.uint16)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))
    src = args.work_dir / "tokens.parquet"
    # small row groups: the packer reads a row group at a time (one huge group costs GBs of RAM)
    pq.write_table(pa.table({"tokens": pa.LargeListArray.from_arrays(offsets, pa.array(toks))}), src,
                   compression="none", row_group_size=256)
    cmd = [args.fastdata, "pack", str(src), "-o", str(out), "--pretokenized", "--tokenizer", "none",
           "--vocab-size", str(key["vocab"]), "--text-field", "tokens", "--shard-size", args.shard_size,
           "--overwrite", "-q"]
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    log(f"  packed in {time.perf_counter() - t0:.0f} s")
    src.unlink()
    stamp.write_text(json.dumps(key) + "\n")
    return out


def dataset_info(path: Path) -> dict:
    import fastdata  # noqa: PLC0415

    d = fastdata.open_dataset(str(path))
    sizes = d.shards.column("stored_bytes")
    files = [p for p in path.iterdir() if p.is_file()]
    return {"tokens": d.num_tokens, "shards": len(d.shards), "bytes": int(sizes.sum()),
            "max_shard": int(sizes.max()), "total_bytes": sum(p.stat().st_size for p in files)}


# ============================================================================ the fastdata child

def epochs_child(cfg: dict) -> dict:
    """Child: build the loader, run epochs, print an event line at each epoch's start/end."""
    import torch  # noqa: PLC0415

    import fastdata  # noqa: PLC0415

    _ = fastdata.TokenDataset, fastdata.DataLoader
    t_import = time.time()
    options = {"connection_string": cfg["conn"], "allow_insecure": True} if cfg.get("conn") else None
    ds = fastdata.TokenDataset(cfg["url"], seq_len=SEQ_LEN, shuffle=True, seed=0, storage_options=options,
                               cache_dir=cfg.get("cache_dir"), cache_limit=cfg.get("cache_limit"))
    loader = fastdata.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS)
    t_built = time.time()
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
        close = getattr(it, "close", None)  # still in flight after a stop are not the epoch's
        if close is not None:
            close()
        after_first = wall - waits[0] if waits else 0.0
        epochs.append({
            "batches": n, "tokens": n * BATCH * (SEQ_LEN + 1), "wall_s": wall,
            "first_batch_s": waits[0] if waits else None,
            "first_batch_abs": t_start + (waits[0] if waits else 0),
            "wait_after_first_s": sum(waits[1:]), "after_first_s": after_first,
            "max_wait_after_first_s": max(waits[1:], default=0.0),
        })
    return {"import_s": t_import - T_MAIN, "built_s": t_built - t_import, "t_import": t_import,
            "t_main": T_MAIN, "epochs": epochs, "rss_peak_mib": rss_peak_mib(),
            "world": vars(loader.world)}


# ============================================================================ running children

class Child:
    """A child process printing event lines; the parent snapshots the proxies' byte counts at
    each event, so bytes per epoch exclude construction (manifest) and the other epochs."""

    def __init__(self, cmd: list[str], proxies: list, env: dict | None = None, spawn: float | None = None
                 ) -> None:
        self.proxies, self.events, self.result, self.stderr = proxies, [], None, ""
        self.spawn = spawn or time.time()
        self.base = [p.counters.bytes_down for p in proxies]
        full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=full_env)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._out.start()

    def _bytes(self) -> list[int]:
        return [p.counters.bytes_down - b for p, b in zip(self.proxies, self.base)]

    def _read_err(self) -> None:
        self.stderr = self.proc.stderr.read()

    def _read_out(self) -> None:
        last = None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith('{"event"'):
                ev = json.loads(line)
                ev["t"], ev["bytes"] = time.time(), self._bytes()
                self.events.append(ev)
            elif line:
                last = line
        self.last = last

    def wait(self, timeout: float) -> dict:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._out.join(5)
            return {"error": f"timed out after {timeout:.0f} s", "stderr": self.stderr[-2000:]}
        self._out.join(10)
        self._err.join(10)
        if self.proc.returncode != 0 or not self.last:
            return {"error": f"exit {self.proc.returncode}", "stderr": self.stderr[-3000:]}
        r = json.loads(self.last)
        r["events"], r["bytes_total"], r["spawn"] = self.events, self._bytes(), self.spawn
        return r


def epoch_bytes(r: dict, epoch: int, proxy: int = 0) -> int | None:
    ev = {(e["event"], e["epoch"]): e["bytes"][proxy] for e in r.get("events", []) if e["bytes"]}
    if ("start", epoch) not in ev or ("end", epoch) not in ev:
        return None
    return ev[("end", epoch)] - ev[("start", epoch)]


def run_fastdata(args: argparse.Namespace, cfg: dict, proxies: list, env: dict | None = None) -> Child:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_epochs", json.dumps(cfg)]
    return Child(cmd, proxies, env)


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def summarize_epochs(r: dict, proxy: int = 0) -> list[dict]:
    out = []
    for i, e in enumerate(r.get("epochs", [])):
        b = epoch_bytes(r, i, proxy)
        out.append({**e, "bytes": b, "mb_per_s": (b / MB / e["wall_s"]) if b else 0.0,
                    "tokens_per_s": e["tokens"] / e["wall_s"], "consumed_bytes": e["tokens"] * 2,
                    "amplification": (b / (e["tokens"] * 2)) if b and e["tokens"] else None})
    return out


# ============================================================================ the phases

def phase_local(args, dataset: Path) -> dict:
    ch = run_fastdata(args, {"url": str(dataset), "epochs": 2}, [])
    r = ch.wait(args.timeout)
    if "error" in r:
        return r
    eps = summarize_epochs(r)
    return {"epochs": eps, "tokens_per_s": max(e["tokens_per_s"] for e in eps)}


def phase_epochs(args, name: str, proxy, url: str, latency: float, cap: float | None,  # noqa: PLR0913
                 cache_limit: int, epochs: int = 2, max_s: float | None = None) -> dict:
    proxy.shape(latency, cap)
    cache = fresh_dir(args.work_dir / "cache" / name)
    ch = run_fastdata(args, {"url": url, "conn": conn_string(proxy.port), "cache_dir": str(cache),
                             "cache_limit": cache_limit, "epochs": epochs, "max_s": max_s}, [proxy])
    r = ch.wait(args.timeout)
    proxy.shape()
    if "error" in r:
        return r
    return {"latency_s": latency, "cap_bps": cap, "cache_limit": cache_limit, "max_s": max_s,
            "epochs": summarize_epochs(r),
            "construct_bytes": r["events"][0]["bytes"][0] if r["events"] else None,
            "total_bytes": r["bytes_total"][0], "cache_bytes": du(cache), "built_s": r["built_s"]}


def phase_ttfb(args, proxy, url: str, latency: float, runs: int, cache_limit: int) -> dict:
    proxy.shape(latency, None)
    rs = []
    for k in range(runs):
        cache = fresh_dir(args.work_dir / "cache" / f"ttfb-{k}")
        spawn = time.time()
        cmd = [sys.executable, str(Path(__file__).resolve()), "_epochs",
               json.dumps({"url": url, "conn": conn_string(proxy.port), "cache_dir": str(cache),
                           "cache_limit": cache_limit, "epochs": 1, "max_steps": 1})]
        r = Child(cmd, [proxy], spawn=spawn).wait(args.timeout)
        if "error" in r:
            rs.append(r)
            continue
        e = r["epochs"][0]
        rs.append({"construct_and_first_s": r["built_s"] + e["first_batch_s"], "construct_s": r["built_s"],
                   "first_batch_s": e["first_batch_s"], "from_spawn_s": e["first_batch_abs"] - spawn,
                   "import_s": r["t_import"] - spawn})
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
        children.append(run_fastdata(args, {"url": url, "conn": conn_string(p.port), "cache_dir": str(cache),
                                            "cache_limit": cache_limit, "epochs": 1}, [p], env))
    rs = [c.wait(args.timeout) for c in children]
    for p in proxies:
        p.shape()
    nodes = []
    for r, cache in zip(rs, caches):
        if "error" in r:
            nodes.append(r)
            continue
        e = summarize_epochs(r)[0]
        nodes.append({"bytes": r["bytes_total"][0], "epoch_bytes": e["bytes"], "cache_bytes": du(cache),
                      "wall_s": e["wall_s"], "batches": e["batches"], "mb_per_s": e["mb_per_s"],
                      "world": r.get("world")})
    return {"latency_s": latency, "cap_bps": cap, "nodes": nodes}


def phase_data_wait(args, proxy, url: str, latency: float, cap: float | None, cache_limit: int) -> dict:
    proxy.shape(latency, cap)
    cache = fresh_dir(args.work_dir / "cache" / "datawait")
    ch = run_fastdata(args, {"url": url, "conn": conn_string(proxy.port), "cache_dir": str(cache),
                             "cache_limit": cache_limit, "epochs": 1, "step_s": args.step_s,
                             "max_steps": args.wait_steps}, [proxy])
    r = ch.wait(args.timeout)
    proxy.shape()
    if "error" in r:
        return r
    e = r["epochs"][0]
    return {"latency_s": latency, "cap_bps": cap, "step_s": args.step_s, "steps": e["batches"],
            "tokens_per_step": BATCH * (SEQ_LEN + 1), "first_batch_s": e["first_batch_s"],
            "wait_after_first_s": e["wait_after_first_s"], "after_first_s": e["after_first_s"],
            "max_wait_s": e["max_wait_after_first_s"],
            "share": e["wait_after_first_s"] / e["after_first_s"] if e["after_first_s"] else None}


# ============================================================================ peers

def prepare_peers(args, dataset: Path, az_conn: str) -> dict:
    """Export the dataset's samples to MDS and LitData (cached) and upload them to Azurite."""
    work = args.work_dir / "peers"
    work.mkdir(parents=True, exist_ok=True)
    meta = ensure_stream(dataset, work)
    cmd = [str(args.peers_python), str(HERE / "peers" / "loader_peers.py"), "export", "--stream",
           str(work / "stream.u16"), "--samples", str(meta["samples"]), "--seq-len", str(SEQ_LEN),
           "--out", str(work / "formats"), "--key", meta["xxh3_128"], "--systems", "mosaicml", "litdata"]
    log("exporting the samples to MDS and LitData (skipped when already done)")
    r = run_json(cmd, timeout=1800, log_path=work / "export.log")
    if "error" in r:
        return {"error": f"export failed: {r['error']}", "stderr": r.get("stderr", "")}
    up = {}
    for system, folder in (("mosaicml", "mds"), ("litdata", "litdata")):
        up[system] = upload(az_conn, work / "formats" / folder, f"{CONTAINER}/{folder}")
    return {"meta": meta, "export": r, "upload_mb_per_s": up, "formats": str(work / "formats")}


def phase_peer(args, system: str, source: str, proxy, latency: float, cap: float | None,
               formats: str) -> dict:
    if proxy is not None:
        proxy.shape(latency, cap)
    cache = fresh_dir(args.work_dir / "cache" / f"peer-{system}-{source}")
    cfg = {"system": system, "source": source, "cache_dir": str(cache), "formats": formats,
           "container": CONTAINER, "epochs": 2, "batch": BATCH, "workers": WORKERS, "seq_len": SEQ_LEN,
           "account": ACCOUNT, "key": DEV_KEY,
           "endpoint": f"http://127.0.0.1:{proxy.port}/{ACCOUNT}" if proxy is not None else None}
    cmd = [str(args.peers_python), str(PEERS_SCRIPT), json.dumps(cfg)]
    r = Child(cmd, [proxy] if proxy is not None else []).wait(args.timeout)
    if proxy is not None:
        proxy.shape()
    if "error" in r:
        return r
    return {"latency_s": latency, "cap_bps": cap, "epochs": summarize_epochs(r), "cache_bytes": du(cache),
            "note": r.get("note", "")}


# ============================================================================ main

def run_peers(args, res: dict, az, proxy, url_note: str) -> dict:
    prep = prepare_peers(args, Path(res["dataset_path"]), conn_string(az.port))
    if "error" in prep:
        log(f"peers: {prep['error']}\n{prep.get('stderr', '')[-1500:]}")
        return {"error": prep["error"]}
    runs, lat, cap = {}, args.latency, args.cap
    plan = [("litdata", "azure", "unshaped", 0.0, None), ("litdata", "azure", "shaped", lat, cap),
            ("mosaicml", "azure-patched", "shaped", lat, cap), ("mosaicml", "local", "local", 0.0, None)]
    for system, source, compare, la, c in plan:
        label = f"{system} ({shaping(la, c) if source != 'local' else 'local dir as remote'})"
        r = phase_peer(args, system, source, proxy if source != "local" else None, la, c, prep["formats"])
        r["source"] = {"azure": "Azurite via its Azure backend", "azure-patched":
                       "Azurite, account URL patched", "local": "local directory"}[source]
        r["compare"] = compare
        r["short"] = f"{system}\n" + {"azure": shaping(la, c).replace(" + ", "\n"),
                                       "azure-patched": "patched URL\n" + shaping(la, c).replace(" + ", "\n"),
                                       "local": "local dir"}[source]
        runs[label] = r
        if "error" in r:
            log(f"[peers] {label}: FAILED {r['error']}\n{r.get('stderr', '')[-2000:]}")
        else:
            log(f"[peers] {label}: " + ", ".join(
                f"{e['wall_s']:.1f} s {e['mb_per_s']:.0f} MB/s" for e in r["epochs"]))
    notes = [
        "LitData reaches Azurite in its default configuration: the index through `storage_options` "
        "(`BlobServiceClient(account_url=proxy, credential=...)`), the chunks through its async "
        "prefetch (obstore), which ignores `storage_options` and is pointed at the proxy with "
        "obstore's `AZURE_STORAGE_USE_EMULATOR=true` + `AZURITE_BLOB_STORAGE_URL`.",
        "MosaicML Streaming's `azure://` backend builds `https://{account}.blob.core.windows.net` "
        "from the URL or `AZURE_ACCOUNT_NAME` (no endpoint setting), so unpatched it cannot reach "
        "Azurite: it is run over a local directory as its remote (shards copied into its cache) "
        "and, with `_create_azure_client` patched to the proxy's http URL (its download code "
        "unchanged), from Azurite.",
    ]
    return {"runs": runs, "notes": notes, "upload_mb_per_s": prep["upload_mb_per_s"]}


def run_all(args: argparse.Namespace) -> dict:
    dataset = ensure_dataset(args)
    info = dataset_info(dataset)
    log(f"dataset {dataset}: {info['tokens'] / 1e6:.0f} M tokens, {info['shards']} shards, "
        f"{info['bytes'] / MB:.0f} MB")
    big = int(info["total_bytes"] * 1.5)
    small = max(int(info["total_bytes"] * args.small_cache), info["max_shard"] * 5 + (1 << 20))
    res: dict = {"dataset": info, "dataset_path": str(dataset), "cache_limit": big,
                 "args": {"latency": args.latency, "cap": args.cap, "shard_size": args.shard_size,
                          "ttfb_latency": args.ttfb_latency}, "load_before": os.getloadavg()}
    want = set(args.phases)
    log("local directory baseline")
    res["local"] = phase_local(args, dataset) if "local" in want else {}
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
                 ("small_cache", lambda: phase_epochs(args, "small", p, url, lat, cap, small, 1,
                                                      args.small_cache_s)),
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
        if not args.no_peers and "peers" in want:
            res["peers"] = run_peers(args, res, az, p, url)
    finally:
        for p in proxies:
            p.stop()
        az.stop()
        shutil.rmtree(args.work_dir / "cache", ignore_errors=True)
    res["load_after"] = os.getloadavg()
    return res


PHASES = ("local", "unshaped", "shaped", "small_cache", "ttfb", "two_nodes", "data_wait", "peers")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_epochs":
        sys.stdout.write(json.dumps(epochs_child(json.loads(argv[1]))) + "\n")
        sys.stdout.flush()
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, default=HERE / ".work" / "remote")
    ap.add_argument("--fastdata", default=os.environ.get("FASTDATA", "fastdata"))
    ap.add_argument("--tokens", type=lambda s: int(float(s)), default=128_000_000,
                    help="dataset size in uint16 tokens (default 1.28e8 = 256 MB)")
    ap.add_argument("--shard-size", default="16MB", help="fastdata pack --shard-size")
    ap.add_argument("--latency", type=float, default=0.020, help="per-direction delay, s (shaped runs)")
    ap.add_argument("--cap", type=float, default=50e6, help="link bandwidth cap, bytes/s (shaped runs)")
    ap.add_argument("--ttfb-latency", type=float, default=0.050)
    ap.add_argument("--ttfb-runs", type=int, default=3)
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
    args = ap.parse_args(argv)
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
