"""What recording metrics costs the loader: the threads DataLoader path with the figures
recorded as usual, against the same run with every recording call replaced by a no-op.

Usage: python benchmarks/bench_metrics.py DATASET [--batches N] [--rounds R] [--seq-len L]
Prints one JSON line: median tokens/s of each variant over R alternating rounds, the ratio,
and the direct cost: recording calls per batch × the time of one call measured in a loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import fastdata
from fastdata import metrics


def run(dataset: str, batches: int, seq_len: int) -> float:
    loader = fastdata.DataLoader(fastdata.TokenDataset(dataset, seq_len=seq_len, seed=1), batch_size=8,
                                 num_workers=2)
    it, n = iter(loader), 0
    next(it)  # the first batch is not the steady state
    started = time.perf_counter()
    for batch in it:
        batch["input_ids"].sum()  # touch the data, as a training step would
        n += 1
        if n == batches:
            break
    return n * 8 * seq_len / (time.perf_counter() - started)


class Off:
    """Every recording entry point a no-op (the Registry methods and the loader's own)."""

    def __enter__(self) -> None:
        self.saved = {name: getattr(metrics.Registry, name) for name in ("count", "observe", "gauge")}
        for name in self.saved:
            setattr(metrics.Registry, name, lambda *a, **k: None)
        self.module = (metrics.count, metrics.observe, metrics.gauge)
        metrics.count = metrics.observe = metrics.gauge = lambda *a, **k: None

    def __exit__(self, *exc: object) -> None:
        for name, f in self.saved.items():
            setattr(metrics.Registry, name, f)
        metrics.count, metrics.observe, metrics.gauge = self.module


def call_cost(dataset: str, n: int = 200_000) -> float:
    """Seconds of recording per batch: the loader's own record of a batch (list appends and the
    wait's split by stage, folded every 1,024 batches) plus its share of what is recorded per
    gather of <= 64 batches (the reader's timings, the making's stage clock with a fetch stage
    of a shard opened)."""
    import torch

    from fastdata.loader.stalls import made

    loader = fastdata.DataLoader(fastdata.TokenDataset(dataset, seq_len=2048, seed=1), batch_size=8)
    batch = {"input_ids": torch.zeros(8, 2048, dtype=torch.int64)}
    record = (1.0, 1.00005, 0.1, 0.1, 0.0, 0.8)  # the making overlaps the wait: the full split
    started = time.perf_counter()
    for _ in range(n):
        loader._record(1.0, 1.0001, False, 0.0002, batch, record)
    per_batch = (time.perf_counter() - started) / n
    r = metrics.Registry()

    def chunk() -> None:  # what one gather records, as counted before: four timings
        for _ in range(4):
            r.observe("x", 0.001)
        with metrics.stage("fetch"):
            pass

    started = time.perf_counter()
    for _ in range(n // 10):
        made(chunk)
    return per_batch + 1 / 64 * (time.perf_counter() - started) / (n // 10)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("--batches", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seq-len", type=int, default=2048)
    args = p.parse_args()
    on, off = [], []
    for _ in range(args.rounds):
        on.append(run(args.dataset, args.batches, args.seq_len))
        with Off():
            off.append(run(args.dataset, args.batches, args.seq_len))
    per_batch = call_cost(args.dataset)
    tps_on, tps_off = statistics.median(on), statistics.median(off)
    batch_s = 8 * args.seq_len / tps_on
    json.dump({"dataset": args.dataset, "batches": args.batches, "rounds": args.rounds,
               "tokens_per_s_on": tps_on, "tokens_per_s_off": tps_off, "ratio_on_off": tps_on / tps_off,
               "rounds_on": on, "rounds_off": off, "recording_seconds_per_batch": per_batch,
               "direct_cost_share": per_batch / batch_s}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
