"""``fastdata bench URL``: the loader alone, against a simulated training step.

Runs ``TokenDataset`` + ``DataLoader`` with the settings a job would use (ranks come from
the torchrun environment, workers, cache) and sleeps ``--step-ms`` after every batch in
place of the model. A progress line shows, per interval, tokens/s, data-wait %, cache hit %
and fetch MB/s; at the end a JSON report holds that timeline and the final metrics, and a PNG
plots throughput, and data-wait stacked by stage (fetch, verify, decompress, gather, queue:
docs/metrics.md), over time (when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Generator, Mapping
from typing import Any

from fastdata import environment, metrics
from fastdata.cli.pack import storage_options
from fastdata.storage.remote import redact
from fastdata.units import parse_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the loader against a simulated training step",
                       description="Stream a dataset through TokenDataset and DataLoader, sleeping "
                                   "--step-ms per batch in place of a model, and report throughput, "
                                   "data-wait, cache hits and download speed over time.")
    p.add_argument("url", help="dataset directory or URL")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8, help="samples per rank per step")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backend", choices=("threads", "processes"), default="threads")
    p.add_argument("--step-ms", type=float, default=50.0, help="simulated training step (ms; 0: none)")
    p.add_argument("--steps", type=int, help="stop after this many steps")
    p.add_argument("--seconds", type=float, default=30.0, help="stop after this long (default 30)")
    p.add_argument("--no-shuffle", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="node cache directory (remote or compressed datasets)")
    p.add_argument("--cache-limit", help="node cache limit, bytes or e.g. 400GB")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec option (repeatable); credentials are better left in the environment")
    p.add_argument("--allow-insecure", action="store_true",
                   help="allow plain http (local emulators such as Azurite only)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds per timeline sample")
    p.add_argument("--report", default="fastdata-bench.json", help="JSON report path")
    p.add_argument("--plot", default=None, help="PNG plot path (default: the report's, .png)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(run=run)


def _batches(loader: Any) -> Generator[Any, None, None]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _sample(prev: Mapping[str, float], now: Mapping[str, float], t: float) -> dict[str, float]:
    """Rates over one interval of the timeline."""
    def d(key: str) -> float:
        return now.get(key, 0.0) - prev.get(key, 0.0)

    dt = max(now["loader.elapsed"] - prev.get("loader.elapsed", 0.0), 1e-9)
    spent = d("loader.wait.seconds") + d("loader.compute.seconds")  # in next() or in the step
    looked = d("cache.hits") + d("cache.misses")
    stages = {f"wait_{s}_pct": 100 * d(f"loader.wait.{s}.seconds") / spent if spent > 0 else 0.0
              for s in metrics.STAGES}
    return {"t": round(t, 3), "steps": now.get("loader.batches", 0.0),
            "tokens_per_s": d("loader.tokens") / dt,
            "data_wait_pct": 100 * d("loader.wait.seconds") / spent if spent > 0 else 0.0, **stages,
            "cache_hit_pct": 100 * d("cache.hits") / looked if looked else float("nan"),
            "fetch_mb_per_s": d("fetch.bytes") / dt / 1e6, "retries": d("fetch.retries")}


def _line(s: Mapping[str, float]) -> str:
    hit = "  -  " if s["cache_hit_pct"] != s["cache_hit_pct"] else f"{s['cache_hit_pct']:5.1f}"
    return (f"{s['t']:7.1f} s  step {s['steps']:>7,.0f}  {s['tokens_per_s'] / 1e6:8.2f} M tok/s  "
            f"data-wait {s['data_wait_pct']:5.1f} %  cache hit {hit} %  "
            f"fetch {s['fetch_mb_per_s']:7.1f} MB/s")


def _init_distributed() -> None:
    """Join the job's gloo group when started by torchrun (the loader checks the world)."""
    if int(environment.launcher().get("WORLD_SIZE", "1")) <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")


def run(args: argparse.Namespace) -> int:
    import fastdata

    _init_distributed()
    options: dict[str, Any] = storage_options(args.storage_option)
    if args.allow_insecure:
        options["allow_insecure"] = True
    ds = fastdata.TokenDataset(args.url, seq_len=args.seq_len, shuffle=not args.no_shuffle, seed=args.seed,
                               storage_options=options or None, cache_dir=args.cache_dir,
                               cache_limit=parse_size(args.cache_limit) if args.cache_limit else None)
    loader = fastdata.DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers,
                                 backend=args.backend)
    rank = loader.world.rank
    show = not args.quiet and rank == 0
    timeline: list[dict[str, float]] = []
    started = time.perf_counter()
    prev: dict[str, float] = {"loader.elapsed": 0.0}
    next_sample = args.interval
    steps = 0
    batches = _batches(loader)
    try:
        while True:
            next(batches)
            steps += 1
            if args.step_ms:
                time.sleep(args.step_ms / 1e3)
            elapsed = time.perf_counter() - started
            done = (args.steps is not None and steps >= args.steps) or (
                args.steps is None and elapsed >= args.seconds)
            if elapsed >= next_sample or done:
                now = loader.metrics()
                timeline.append(_sample(prev, now, elapsed))
                prev, next_sample = now, elapsed + args.interval
                if show:
                    print(_line(timeline[-1]), file=sys.stderr, flush=True)
            if done:
                break
    finally:
        batches.close()
    final = loader.metrics(all_ranks=loader.world.world_size > 1)
    report = {"url": redact(args.url),
              "settings": {k: v for k, v in vars(args).items() if k not in ("run", "storage_option")},
              "world": {"ranks": loader.world.world_size, "rank": rank},
              "timeline": timeline, "metrics": final}
    if rank == 0:
        _write(args, report)
        if show:
            print(f"fastdata bench: {metrics.summary_line(final)}; first batch "
                  f"{final.get('loader.first_batch.p50', 0):.2f} s", file=sys.stderr)
    return 0


def _write(args: argparse.Namespace, report: dict[str, Any]) -> None:
    from fastdata.atomic import write_bytes_atomic

    write_bytes_atomic(args.report, json.dumps(report, indent=1, default=float).encode())
    print(f"report: {args.report}")
    plot = args.plot or os.path.splitext(args.report)[0] + ".png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'fastdata[bench]')")
        return
    t = [s["t"] for s in report["timeline"]]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    top.plot(t, [s["tokens_per_s"] / 1e6 for s in report["timeline"]], color="tab:blue")
    top.set_ylabel("M tokens/s")
    top.set_ylim(bottom=0)
    top.set_title(f"fastdata bench: step {args.step_ms:g} ms, {args.workers} workers ({args.backend})")
    # data-wait by stage, stacked: the top edge is the interval's data-wait share
    layers = [[s.get(f"wait_{name}_pct", 0.0) for s in report["timeline"]] for name in metrics.STAGES]
    bottom.stackplot(t, layers, labels=metrics.STAGES,
                     colors=["tab:red", "tab:orange", "tab:purple", "tab:green", "tab:gray"])
    bottom.legend(loc="upper right", fontsize="small", ncol=len(metrics.STAGES), title="data-wait by stage")
    bottom.set_ylabel("data-wait %")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(plot, dpi=100)
    plt.close(fig)
    print(f"plot: {plot}")
