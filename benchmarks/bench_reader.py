"""Raw reader throughput: fastdata's native gather versus ``numpy.memmap`` slicing.

Reads training samples of ``--seq-len`` tokens (default 2049, i.e. 2048 + 1 for the shifted
labels) in batches of ``--batch`` (default 8) from a packed fastdata dataset, into a fresh
int64 array per batch, as a data loader does before handing the batch to torch. Samples are
cut from the dataset's token stream (the shards' payloads, concatenated in manifest order);
a sample that crosses a shard boundary becomes two spans. Two access patterns:

* ``sequential``: consecutive samples from the start of the stream;
* ``random``: sample starts drawn uniformly (seeded), as a shuffled pre-training loader does.

Methods, all fed the same precomputed spans:

* ``native gather``: one ``fastdata._native.gather(views, spans, out)`` call per batch
  (C++, GIL released, uint16 -> int64 in the copy);
* ``native tokens()``: a Python loop over spans, ``out[a:b] = view.tokens(o, o + n)``
  (zero-copy views, numpy does the cast);
* ``numpy.memmap``: a Python loop over spans, ``out[a:b] = mm[o:o + n]``, each shard's
  payload mapped with ``numpy.memmap(offset=tokens_offset)``: the no-native-code baseline;
* ``... x2 threads``: two threads each reading half the batches (shows whether the GIL
  is released);
* ``megatron IndexedDataset`` (optional, peers venv, subprocess): Megatron-Core's
  ``IndexedDataset.get(doc, offset, length)`` per document piece, concatenated and cast to
  int64, the way ``GPTDataset`` builds a sample, on the .bin/.idx that
  ``bench_pack.py`` wrote from the same corpus with the same tokenizer.

Every method's outputs are checksummed and compared, so a fast wrong reader shows up.
The dataset is in the page cache (it was just written): these are warm, in-memory numbers,
the upper bound of what the reader adds per batch, not disk or network numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_PEERS_PY = HERE / ".venv-peers" / "bin" / "python"
MEGATRON_READ = HERE / "peers" / "megatron_read.py"

# Raw shard header (docs/format.md), read with numpy so this file needs no fastdata import.
HEADER_DTYPE = np.dtype([
    ("magic", "S8"), ("version", "<u2"), ("dtype", "u1"), ("flags", "u1"), ("crc", "<u4"),
    ("num_docs", "<u8"), ("num_tokens", "<u8"), ("index_offset", "<u8"),
    ("tokens_offset", "<u8"), ("mask_offset", "<u8"), ("file_size", "<u8"), ("reserved", "V64"),
])
TOKEN_DTYPES = {1: np.dtype("<u2"), 2: np.dtype("<u4")}


def read_shards(dataset: Path) -> list[dict]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    if manifest.get("compression"):
        raise SystemExit("bench_reader needs an uncompressed (raw .fds) dataset")
    shards = []
    for entry in manifest["shards"]:
        path = dataset / entry["name"]
        h = np.fromfile(path, dtype=HEADER_DTYPE, count=1)[0]
        if h["magic"] != b"FDSHARD":  # numpy strips the trailing NUL
            raise SystemExit(f"{path}: not a raw fastdata shard")
        shards.append({"path": str(path), "num_tokens": int(h["num_tokens"]),
                       "tokens_offset": int(h["tokens_offset"]),
                       "dtype": TOKEN_DTYPES[int(h["dtype"])]})
    return shards


def make_batches(shards: list[dict], starts: np.ndarray, seq_len: int, batch: int):
    """Cut samples at ``starts`` (global offsets) into per-batch (N, 3) span arrays."""
    sizes = np.array([s["num_tokens"] for s in shards], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    batches = []
    for b in range(len(starts) // batch):
        rows = []
        for start in starts[b * batch:(b + 1) * batch]:
            pos, left = int(start), seq_len
            while left:
                si = int(np.searchsorted(bounds, pos, side="right") - 1)
                off = pos - int(bounds[si])
                n = min(left, int(sizes[si]) - off)
                rows.append((si, off, n))
                pos += n
                left -= n
        arr = np.array(rows, dtype=np.int64)
        batches.append((arr, [tuple(map(int, r)) for r in rows]))
    return batches


# ---- readers: each takes the batch list and returns a checksum -------------------------

def checksum(out: np.ndarray) -> int:
    return int(out.sum())


def read_memmap(mms, batches, n_out, verify=False):
    total = 0
    for _, rows in batches:
        out = np.empty(n_out, dtype=np.int64)
        p = 0
        for si, off, n in rows:
            out[p:p + n] = mms[si][off:off + n]
            p += n
        if verify:
            total += checksum(out)
    return total


def read_native_tokens(views, batches, n_out, verify=False):
    total = 0
    for _, rows in batches:
        out = np.empty(n_out, dtype=np.int64)
        p = 0
        for si, off, n in rows:
            out[p:p + n] = views[si].tokens(off, off + n)
            p += n
        if verify:
            total += checksum(out)
    return total


def make_read_gather(gather):
    def read_gather(views, batches, n_out, verify=False):
        total = 0
        for spans, _ in batches:
            out = np.empty(n_out, dtype=np.int64)
            gather(views, spans, out)
            if verify:
                total += checksum(out)
        return total
    return read_gather


def threaded(fn, n_threads):
    def run(handles, batches, n_out, verify=False):
        parts = [batches[i::n_threads] for i in range(n_threads)]
        sums = [0] * n_threads

        def work(i):
            sums[i] = fn(handles, parts[i], n_out, verify)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(sums)
    return run


def time_method(fn, handles, batches, n_out, rounds):
    # One untimed pass computes the checksum (and warms up); the timed rounds only read.
    sums = {fn(handles, batches, n_out, verify=True)}
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(handles, batches, n_out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), sums


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True, help="a fastdata pack output dir")
    ap.add_argument("--seq-len", type=int, default=2049)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=2000,
                    help="batches per round (sequential: at most what the dataset holds)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds; the median is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--megatron-prefix", type=Path, default=None,
                    help="Megatron .bin/.idx prefix of the same tokens (optional)")
    ap.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS_PY)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--md-out", type=Path, default=None)
    args = ap.parse_args(argv)

    shards = read_shards(args.dataset)
    dtypes = {s["dtype"] for s in shards}
    if len(dtypes) != 1:
        raise SystemExit("mixed payload dtypes")
    itemsize = dtypes.pop().itemsize
    total_tokens = sum(s["num_tokens"] for s in shards)
    L, B = args.seq_len, args.batch
    n_out = L * B
    max_samples = total_tokens // L
    n_samples_seq = min(args.batches * B, max_samples // B * B)
    rng = np.random.Generator(np.random.PCG64(args.seed))
    patterns = {
        "sequential": np.arange(n_samples_seq, dtype=np.int64) * L,
        "random": rng.integers(0, total_tokens - L + 1, size=args.batches * B, dtype=np.int64),
    }
    if n_samples_seq < B:
        raise SystemExit(f"dataset too small: {total_tokens} tokens < one batch of {n_out}")

    mms = [np.memmap(s["path"], dtype=s["dtype"], mode="r", offset=s["tokens_offset"],
                     shape=(s["num_tokens"],)) for s in shards]
    methods = [("numpy.memmap", read_memmap, mms)]
    native_note = None
    try:
        from fastdata import _native  # noqa: PLC0415

        views = [_native.ShardView(s["path"]) for s in shards]
        for v, s in zip(views, shards, strict=True):
            assert int(v.num_tokens) == s["num_tokens"], "ShardView.num_tokens disagrees"
        gather = make_read_gather(_native.gather)
        methods = [("native gather", gather, views),
                   ("native tokens()", read_native_tokens, views),
                   ("numpy.memmap", read_memmap, mms)]
        if args.threads > 1:
            methods += [(f"native gather x{args.threads} threads",
                         threaded(gather, args.threads), views),
                        (f"numpy.memmap x{args.threads} threads",
                         threaded(read_memmap, args.threads), mms)]
    except Exception as e:  # noqa: BLE001 - report whatever stops the native import
        native_note = f"native reader unavailable: {type(e).__name__}: {e}"
        print(f"note: {native_note}", file=sys.stderr)
        if args.threads > 1:
            methods.append((f"numpy.memmap x{args.threads} threads",
                            threaded(read_memmap, args.threads), mms))

    results = {"dataset": str(args.dataset), "shards": len(shards), "total_tokens": total_tokens,
               "itemsize": itemsize, "seq_len": L, "batch": B, "rounds": args.rounds,
               "native_note": native_note, "patterns": {}, "nproc": os.cpu_count()}
    work = Path(args.json_out).parent if args.json_out else HERE / ".work"
    for pname, starts in patterns.items():
        batches = make_batches(shards, starts, L, B)
        n_batches = len(batches)
        n_tokens = n_batches * n_out
        spans_per_batch = sum(len(r) for _, r in batches) / n_batches
        rows = []
        sums_seen = {}
        for mname, fn, handles in methods:
            med, best, sums = time_method(fn, handles, batches, n_out, args.rounds)
            sums_seen[mname] = sums
            rows.append({"method": mname, "median_s": med, "best_s": best,
                         "tokens_per_s": n_tokens / med,
                         "payload_gb_per_s": n_tokens * itemsize / med / 1e9,
                         "batches_per_s": n_batches / med, "checksums": sorted(sums)})
            print(f"[{pname}] {mname}: {n_tokens / med / 1e6:.1f} M tok/s", file=sys.stderr)

        if args.megatron_prefix is not None and args.peers_python.exists():
            sfile = work / f"reader-starts-{pname}.npy"
            sfile.parent.mkdir(parents=True, exist_ok=True)
            np.save(sfile, starts[: n_batches * B])
            cmd = [str(args.peers_python), str(MEGATRON_READ), str(args.megatron_prefix),
                   "--starts", str(sfile), "--seq-len", str(L), "--batch", str(B),
                   "--rounds", str(args.rounds)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  env=dict(os.environ, PYTHONWARNINGS="ignore"))
            if proc.returncode == 0:
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                sums_seen["megatron IndexedDataset"] = set(r["checksums"])
                rows.append({"method": "megatron IndexedDataset", "median_s": r["median_s"],
                             "best_s": r["best_s"], "tokens_per_s": n_tokens / r["median_s"],
                             "payload_gb_per_s": n_tokens * itemsize / r["median_s"] / 1e9,
                             "batches_per_s": n_batches / r["median_s"],
                             "checksums": r["checksums"]})
                print(f"[{pname}] megatron: {n_tokens / r['median_s'] / 1e6:.1f} M tok/s",
                      file=sys.stderr)
            else:
                print(f"note: megatron read failed:\n{proc.stderr[-2000:]}", file=sys.stderr)

        all_sums = {s for v in sums_seen.values() for s in v}
        results["patterns"][pname] = {
            "batches": n_batches, "tokens": n_tokens, "spans_per_batch": spans_per_batch,
            "rows": rows, "checksums_agree": len(all_sums) == 1,
        }
        if len(all_sums) != 1:
            print(f"WARNING [{pname}]: methods disagree on the data read: {sums_seen}",
                  file=sys.stderr)

    md = markdown(results)
    print(md)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    if args.md_out:
        args.md_out.parent.mkdir(parents=True, exist_ok=True)
        args.md_out.write_text(md + "\n")
    return 0


def markdown(res: dict) -> str:
    lines = ["### Reader throughput", ""]
    lines.append(
        f"Dataset: `{Path(res['dataset']).name}`, {res['shards']} shard(s), "
        f"{res['total_tokens']:,} tokens of {8 * res['itemsize']}-bit payload. Samples of "
        f"{res['seq_len']} tokens, batches of {res['batch']}, output int64; median of "
        f"{res['rounds']} rounds; page cache warm.")
    if res.get("native_note"):
        lines += ["", f"**{res['native_note']}** (native rows missing)."]
    lines.append("")
    lines.append("| pattern | method | M tokens/s | payload GB/s | batches/s | vs numpy.memmap | "
                 "data check |")
    lines.append("|---|---|---:|---:|---:|---:|---|")
    for pname, p in res["patterns"].items():
        base = next((r for r in p["rows"] if r["method"] == "numpy.memmap"), None)
        for r in p["rows"]:
            ratio = r["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
            lines.append(
                f"| {pname} | {r['method']} | {r['tokens_per_s'] / 1e6:.1f} | "
                f"{r['payload_gb_per_s']:.2f} | {r['batches_per_s']:,.0f} | {ratio:.2f}x | "
                f"{'same' if p['checksums_agree'] else 'DIFFERENT'} |")
    lines.append("")
    for pname, p in res["patterns"].items():
        lines.append(f"{pname}: {p['batches']:,} batches per round, "
                     f"{p['spans_per_batch']:.2f} spans per batch.")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
