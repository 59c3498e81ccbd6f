"""Read training samples from a Megatron-Core .bin/.idx the way ``GPTDataset`` does.

For each sample start (a global token offset, from ``--starts``, a .npy of int64), find the
documents it covers, read each piece with ``IndexedDataset.get(doc, offset, length)``,
concatenate the pieces and cast to int64; stack ``--batch`` samples into one array. The
timing covers only the reads (the ``IndexedDataset`` is opened first, with mmap, as
training does). Prints one JSON line: median and best seconds per round and the checksums
(sum of every int64 token read per round), which bench_reader.py compares with its own.

Run it with the peers venv (``benchmarks/.venv-peers/bin/python``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from megatron.core.datasets.indexed_dataset import IndexedDataset  # noqa: E402


def plan(doc_starts: np.ndarray, starts: np.ndarray, seq_len: int) -> list[list[tuple]]:
    """Per sample, the (doc, offset, length) pieces that make it up."""
    samples = []
    for start in starts:
        pos, left, pieces = int(start), seq_len, []
        while left:
            d = int(np.searchsorted(doc_starts, pos, side="right") - 1)
            off = pos - int(doc_starts[d])
            n = min(left, int(doc_starts[d + 1]) - pos)
            pieces.append((d, off, n))
            pos += n
            left -= n
        samples.append(pieces)
    return samples


def read_round(ds: IndexedDataset, samples: list[list[tuple]], batch: int,
               verify: bool = False) -> int:
    total = 0
    for b in range(len(samples) // batch):
        rows = []
        for pieces in samples[b * batch:(b + 1) * batch]:
            parts = [ds.get(d, offset=off, length=n) for d, off, n in pieces]
            rows.append(np.concatenate(parts).astype(np.int64))
        out = np.stack(rows)
        if verify:
            total += int(out.sum())
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix")
    ap.add_argument("--starts", required=True)
    ap.add_argument("--seq-len", type=int, default=2049)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)

    ds = IndexedDataset(args.prefix, mmap=True)
    # One sequence per document (no sentence splitting), so sequence lengths are doc lengths.
    lengths = np.asarray(ds.sequence_lengths, dtype=np.int64)
    doc_starts = np.concatenate([[0], np.cumsum(lengths)])
    starts = np.load(args.starts)
    samples = plan(doc_starts, starts, args.seq_len)
    # One untimed pass computes the checksum (and warms up); the timed rounds only read.
    sums = {read_round(ds, samples, args.batch, verify=True)}
    times = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        read_round(ds, samples, args.batch)
        times.append(time.perf_counter() - t0)
    pieces = sum(len(p) for p in samples) / max(1, len(samples))
    print(json.dumps({"median_s": statistics.median(times), "best_s": min(times),
                      "checksums": sorted(sums), "pieces_per_sample": pieces,
                      "samples": len(samples)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
