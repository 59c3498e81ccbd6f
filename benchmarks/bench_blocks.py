"""Whole-shard against block-granular remote reads (``CacheConfig(blocks=True)``), side by side.

One dataset of format v1.1 shards (``--shard-size``, blocks of ``--block-size``) in Azurite,
read through the shaping proxy of ``_common.py`` (one bandwidth cap for the whole link, a
per-direction delay), one epoch per run in a fresh process with a fresh cache, at cache
limits of 15 %, 35 % and 200 % of the dataset. Bytes and requests are counted at the proxy;
time to first batch is measured in the child from before ``TokenDataset(...)``.

    python benchmarks/bench_blocks.py [--tokens 1.2e7] [--latency 0.02] [--cap 50e6]

Hidden subcommand ``_epoch`` is the child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import ACCOUNT, CONTAINER, MB, Azurite, Child, conn_string, fresh_dir, log, make_proxy, upload

HERE = Path(__file__).resolve().parent


def child(cfg: dict) -> None:
    t0 = time.perf_counter()
    import fastdata  # noqa: PLC0415
    from fastdata import CacheConfig, StorageConfig  # noqa: PLC0415

    options = {"connection_string": conn_string(cfg["port"]), "allow_insecure": True}
    cache = CacheConfig(dir=cfg["cache_dir"], limit=cfg["limit"], blocks=cfg["blocks"])
    ds = fastdata.TokenDataset(cfg["url"], seq_len=cfg["seq_len"], seed=0,
                               storage=StorageConfig(options=options), cache=cache)
    loader = fastdata.DataLoader(ds, batch_size=cfg["batch"], num_workers=2)
    built = time.perf_counter() - t0
    it, first, n, cut = iter(loader), None, 0, False
    deadline = time.perf_counter() + cfg["budget"]
    for _ in it:
        n += 1
        if first is None:
            first = time.perf_counter() - t0
        if time.perf_counter() > deadline:
            cut = True
            break
    snap = loader.metrics()
    print(json.dumps({"construct_s": built, "first_batch_s": first, "epoch_s": time.perf_counter() - t0,
                      "steps": n, "steps_per_epoch": len(loader), "cut": cut,
                      "fetch_requests": snap.get("fetch.requests", 0)}), flush=True)
    os._exit(0)  # a cut run does not wait for the fetches in flight


def pack(args: argparse.Namespace) -> Path:
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    out = args.work_dir / f"ds-{int(args.tokens)}-{args.shard_size}-{args.block_size}"
    if (out / "manifest.json").exists():
        return out
    rng = np.random.default_rng(0)
    lens = rng.integers(256, 4096, size=int(args.tokens) // 2000 + 16)
    lens = lens[: int(np.searchsorted(np.cumsum(lens), args.tokens)) + 1]
    toks = rng.integers(0, 50000, size=int(lens.sum()), dtype=np.uint16)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))
    src = args.work_dir / "tokens.parquet"
    pq.write_table(pa.table({"tokens": pa.LargeListArray.from_arrays(offsets, pa.array(toks))}), src,
                   compression="none", row_group_size=256)
    cmd = [sys.executable, "-m", "fastdata.cli.main", "pack", str(src), "-o", str(out),
           "--pretokenized", "--tokenizer", "none", "--vocab-size", "50000", "--text-field", "tokens",
           "--shard-size", args.shard_size, "--block-size", args.block_size, "--overwrite", "-q"]
    subprocess.run(cmd, check=True)
    src.unlink()
    return out


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_epoch":
        child(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=float, default=1.2e7)
    ap.add_argument("--shard-size", default="512KiB")
    ap.add_argument("--block-size", default="32KiB")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.02, help="one-way delay, seconds")
    ap.add_argument("--cap", type=float, default=50e6, help="link bandwidth, bytes/s")
    ap.add_argument("--budget", type=float, default=150, help="seconds per run before it is cut")
    ap.add_argument("--fractions", default="0.15,0.35,2.0")
    ap.add_argument("--work-dir", type=Path, default=HERE / ".work" / "blocks")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    data = pack(args)
    import fastdata  # noqa: PLC0415

    opened = fastdata.open_dataset(str(data))
    total = int(opened.shards.column("stored_bytes").sum())
    azurite = Azurite(args.work_dir, 2048)
    rows = []
    try:
        url = f"az://{CONTAINER}/blocks"
        upload(conn_string(azurite.port), data, f"{CONTAINER}/blocks")
        proxy = make_proxy(azurite.port)
        proxy.shape(args.latency, args.cap)
        for fraction in [float(f) for f in args.fractions.split(",")]:
            for blocks in (False, True):
                cfg = {"url": url, "port": proxy.port, "seq_len": args.seq_len, "batch": args.batch,
                       "cache_dir": str(fresh_dir(args.work_dir / "cache")), "limit": int(total * fraction),
                       "blocks": blocks, "budget": args.budget}
                before = proxy.counters.bytes_down
                run = Child([sys.executable, __file__, "_epoch", json.dumps(cfg)], [proxy])
                r = run.wait(args.budget + 120)
                wire = proxy.counters.bytes_down - before
                row = {"fraction": fraction, "blocks": blocks, "wire_bytes": wire, "dataset_bytes": total,
                       **r}
                row.pop("events", None)
                if "error" not in r and r.get("steps"):  # the samples' tokens (seq_len + 1 each, uint16)
                    row["consumed_bytes"] = r["steps"] * args.batch * (args.seq_len + 1) * 2
                    row["wire_per_consumed"] = wire / row["consumed_bytes"]
                rows.append(row)
                log(f"{fraction:.0%} {'blocks' if blocks else 'shards'}: " + json.dumps(
                    {k: row.get(k) for k in ("epoch_s", "first_batch_s", "steps", "steps_per_epoch",
                                             "wire_per_consumed", "fetch_requests", "error")}))
    finally:
        azurite.stop()
    result = {"account": ACCOUNT, "latency": args.latency, "cap": args.cap, "tokens": args.tokens,
              "shard_size": args.shard_size, "block_size": args.block_size, "dataset_mb": total / MB,
              "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
