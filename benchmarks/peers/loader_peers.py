"""The peer side of ``bench_loader.py``: the same token samples through five other systems.

Run with the peers venv (``benchmarks/.venv-peers/bin/python``); fastdata is not installed
there. Every system serves the same samples: sample ``i`` is tokens
``[i * seq_len, i * seq_len + seq_len + 1)`` of one token stream (a raw little-endian
uint16 file written by ``bench_loader.py`` from the fastdata dataset), i.e. fastdata's
packed windows of 2049 tokens. Subcommands:

* ``export``: write the stream's samples once into each peer's format (one sample per
  record or document, 2049 tokens each, so no system cuts or drops anything):
  Megatron-Core ``.bin``/``.idx`` (``IndexedDatasetBuilder``, one document per sample),
  MosaicML MDS shards (``MDSWriter``, column ``tokens: ndarray:uint16:2049``), LitData
  chunks (``litdata.optimize`` with ``TokensLoader``; chunks hold a whole number of
  samples so ``TokensLoader(block_size=2049)`` returns exactly them) and WebDataset tar
  shards (``ShardWriter``, member ``.tok`` = the sample's raw uint16 bytes). Then every
  format is read back in full, sequentially, and compared with the stream (checksums).
* ``inproc``: in-process reads, no DataLoader: ``--batches`` batches of 8 samples into an
  int64 (8, 2049) array, ``sequential`` or ``shuffled``; each system's own dataset object.
* ``loader``: a cold process (start it fresh) that builds the system's idiomatic training
  loader (2 worker processes, shuffled, batch 8) and consumes ``--batches`` batches.
  Prints milestones in ``time.time()`` seconds (the parent passes its own spawn time) so
  the time to the first batch can be taken from process start and from ``import torch``.
  ``numpy-memmap-stateful`` is the numpy.memmap loader under torchdata's
  ``StatefulDataLoader``; it needs only numpy, torch and torchdata, and ``bench_loader.py``
  runs it with fastdata's python (the peers venv has no torchdata).

Each subcommand prints one JSON line on stdout (the last line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

T_MAIN = time.time()  # as close to interpreter start as a script gets

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

SYSTEMS = ("numpy-memmap", "numpy-memmap-u16", "numpy-memmap-stateful", "megatron", "mosaicml", "litdata",
           "webdataset")


# ---------------------------------------------------------------------------- helpers

class Stream:
    """The token stream and its samples (windows of seq_len + 1, stride seq_len)."""

    def __init__(self, path: str, seq_len: int, samples: int) -> None:
        self.path, self.seq_len, self.samples = path, seq_len, samples
        self.width = seq_len + 1
        self.mm = np.memmap(path, dtype="<u2", mode="r")
        if (len(self.mm) - 1) // seq_len < samples:
            raise SystemExit(f"{path}: {len(self.mm)} tokens hold fewer than {samples} samples")

    def sample(self, i: int) -> np.ndarray:
        s = i * self.seq_len
        return self.mm[s : s + self.width]


def checksums(batch: np.ndarray) -> tuple[int, int]:
    """Sum of all tokens, and sum weighted by position in the sample (catches shifts)."""
    b = batch.astype(np.int64, copy=False)
    return int(b.sum()), int((b * np.arange(1, b.shape[-1] + 1, dtype=np.int64)).sum())


def rss_mib() -> float:
    """Peak RSS of this process (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def paths(root: str) -> dict[str, str]:
    return {"megatron": os.path.join(root, "megatron", "data"),
            "mosaicml": os.path.join(root, "mds"),
            "litdata": os.path.join(root, "litdata"),
            "webdataset": os.path.join(root, "wds")}


def wds_urls(root: str) -> list[str]:
    d = paths(root)["webdataset"]
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".tar"))


def clean_mosaic_shm() -> None:
    from streaming.base.util import clean_stale_shared_memory  # noqa: PLC0415

    clean_stale_shared_memory()


# ---------------------------------------------------------------------------- export

def export_megatron(stream: Stream, prefix: str) -> None:
    import torch  # noqa: PLC0415
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # noqa: PLC0415

    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for i in range(stream.samples):
        builder.add_item(torch.from_numpy(np.array(stream.sample(i))))
        builder.end_document()
    builder.finalize(prefix + ".idx")


def export_mds(stream: Stream, out: str) -> None:
    from streaming import MDSWriter  # noqa: PLC0415

    columns = {"tokens": f"ndarray:uint16:{stream.width}"}
    with MDSWriter(out=out, columns=columns, compression=None) as w:  # default 64 MB shards
        for i in range(stream.samples):
            w.write({"tokens": np.array(stream.sample(i))})


def _litdata_items(task: tuple[str, int, int, int]):
    path, seq_len, lo, hi = task
    mm = np.memmap(path, dtype="<u2", mode="r")
    for i in range(lo, hi):
        yield np.array(mm[i * seq_len : i * seq_len + seq_len + 1])


def export_litdata(stream: Stream, out: str, per_chunk: int = 1024) -> None:
    from litdata import optimize  # noqa: PLC0415
    from litdata.streaming.item_loader import TokensLoader  # noqa: PLC0415

    # One input per chunk's worth of samples; chunk_size counts tokens with TokensLoader, so a
    # chunk holds exactly `per_chunk` samples and TokensLoader(block_size=width) drops nothing.
    tasks = [(stream.path, stream.seq_len, lo, min(lo + per_chunk, stream.samples))
             for lo in range(0, stream.samples, per_chunk)]
    optimize(fn=_litdata_items, inputs=tasks, output_dir=out, chunk_size=stream.width * per_chunk,
             item_loader=TokensLoader(), num_workers=1, mode="overwrite")


def export_wds(stream: Stream, out: str, shards: int = 16) -> None:
    import webdataset as wds  # noqa: PLC0415

    per_shard = -(-stream.samples // shards)
    with wds.ShardWriter(os.path.join(out, "shard-%05d.tar"), maxcount=per_shard, verbose=0) as w:
        for i in range(stream.samples):
            w.write({"__key__": f"{i:09d}", "tok": np.array(stream.sample(i)).tobytes()})


def read_all_sequential(system: str, root: str, stream: Stream):
    """Every sample of an exported format, in stored order (for the data check)."""
    if system == "megatron":
        from megatron.core.datasets.indexed_dataset import IndexedDataset  # noqa: PLC0415

        ds = IndexedDataset(paths(root)["megatron"], mmap=True)
        for i in range(len(ds)):
            yield ds[i]
    elif system == "mosaicml":
        yield from (s for s in _mosaic_dataset(root, shuffle=False, seed=0))
    elif system == "litdata":
        yield from (np.asarray(s) for s in _litdata_dataset(root, shuffle=False, seed=0))
    elif system == "webdataset":
        yield from _wds_pipeline(root, shuffle=False, seed=0, batch=None)


def cmd_export(args: argparse.Namespace) -> dict:
    stream = Stream(args.stream, args.seq_len, args.samples)
    out = paths(args.out)
    os.makedirs(args.out, exist_ok=True)
    stamp_path = os.path.join(args.out, "export.json")
    stamp = json.load(open(stamp_path)) if os.path.exists(stamp_path) else {}
    if stamp.get("key") != args.key:
        stamp = {"key": args.key, "formats": {}}
    writers = {"megatron": export_megatron, "mosaicml": export_mds, "litdata": export_litdata,
               "webdataset": export_wds}
    ref_sum = ref_wsum = 0
    for i in range(stream.samples):
        s, w = checksums(stream.sample(i))
        ref_sum, ref_wsum = ref_sum + s, ref_wsum + w
    if "mosaicml" in args.systems:
        clean_mosaic_shm()
    for system in args.systems:
        if system in stamp["formats"] and stamp["formats"][system].get("check") == "same":
            continue
        target = out[system]
        folder = os.path.dirname(target) if system == "megatron" else target
        if os.path.exists(folder):
            import shutil  # noqa: PLC0415

            shutil.rmtree(folder)
        os.makedirs(folder, exist_ok=True)
        t0 = time.perf_counter()
        writers[system](stream, target)
        write_s = time.perf_counter() - t0
        n = total = wtotal = 0
        for sample in read_all_sequential(system, args.out, stream):
            s, w = checksums(np.asarray(sample))
            n, total, wtotal = n + 1, total + s, wtotal + w
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
        ok = (n, total, wtotal) == (stream.samples, ref_sum, ref_wsum)
        stamp["formats"][system] = {"write_s": write_s, "bytes": size, "samples": n,
                                    "check": "same" if ok else "DIFFERENT"}
        print(f"export {system}: {write_s:.1f} s, {size / 1e6:.1f} MB, {n} samples, "
              f"{'data same as the stream' if ok else 'DATA DIFFERENT'}", file=sys.stderr)
        with open(stamp_path, "w") as f:
            json.dump(stamp, f, indent=1)
    return stamp


# ---------------------------------------------------------------------------- datasets

def _mosaic_dataset(root: str, shuffle: bool, seed: int, batch_size: int = 8, int64: bool = False):
    from streaming import StreamingDataset  # noqa: PLC0415

    class TokenSamples(StreamingDataset):
        """Like llm-foundry's StreamingTextDataset: the sample's tokens (int64 tensor if asked)."""

        def __getitem__(self, idx: int):
            tokens = super().__getitem__(idx)["tokens"]
            return _to_int64_tensor(tokens) if int64 else tokens

    return TokenSamples(local=paths(root)["mosaicml"], shuffle=shuffle, shuffle_seed=seed,
                        batch_size=batch_size)


def _litdata_dataset(root: str, shuffle: bool, seed: int, width: int = 2049, transform=None):
    from litdata import StreamingDataset  # noqa: PLC0415
    from litdata.streaming.item_loader import TokensLoader  # noqa: PLC0415

    return StreamingDataset(paths(root)["litdata"], item_loader=TokensLoader(block_size=width),
                            shuffle=shuffle, seed=seed, drop_last=True, transform=transform)


def _to_int64_tensor(item):
    import torch  # noqa: PLC0415

    return torch.from_numpy(np.asarray(item).astype(np.int64))


def _decode_tok(sample: dict) -> np.ndarray:
    return np.frombuffer(sample["tok"], dtype="<u2")


def _wds_pipeline(root: str, shuffle: bool, seed: int, batch: int | None, to_torch: bool = False):
    """WebDataset's documented pipeline: shard shuffle, sample shuffle buffer, map, batch."""
    import webdataset as wds  # noqa: PLC0415

    urls = wds_urls(root)
    ds = wds.WebDataset(urls, shardshuffle=len(urls) if shuffle else False, seed=seed,
                        empty_check=False)
    if shuffle:
        ds = ds.shuffle(1000)
    if to_torch:
        ds = ds.map(lambda s: _to_int64_tensor(_decode_tok(s)))
    else:
        ds = ds.map(_decode_tok)
    if batch:
        ds = ds.batched(batch, collation_fn=_stack, partial=False)
    return ds


def _stack(samples: list):
    import torch  # noqa: PLC0415

    return torch.stack(samples) if isinstance(samples[0], torch.Tensor) else np.stack(samples)


# ---------------------------------------------------------------------------- in-process

def cmd_inproc(args: argparse.Namespace) -> dict:
    """Steady in-process reads: per round the dataset and its iterator are made and
    ``--warmup`` batches are read untimed (start-up, index loading, first file opens); then
    ``--batches`` batches are timed. The median round is reported."""
    stream = Stream(args.stream, args.seq_len, args.samples)
    b, width, nb = args.batch, stream.width, args.batches
    shuffle = args.pattern == "shuffled"
    if (nb + args.warmup) * b > stream.samples:
        raise SystemExit(f"--batches {nb} + --warmup {args.warmup} need more than {stream.samples} samples")

    if args.system in ("numpy-memmap", "megatron"):
        # Random access by sample id, the way a map-style Dataset with a sampler reads.
        if args.system == "megatron":
            from megatron.core.datasets.indexed_dataset import IndexedDataset  # noqa: PLC0415

            get = IndexedDataset(paths(args.root)["megatron"], mmap=True).__getitem__
        else:
            get = stream.sample

        def make():
            rng = np.random.default_rng(args.seed)
            ids = rng.permutation(stream.samples) if shuffle else np.arange(stream.samples)
            return (get(int(i)) for i in ids)
    elif args.system == "mosaicml":
        clean_mosaic_shm()
        make = lambda: iter(_mosaic_dataset(args.root, shuffle, args.seed))  # noqa: E731
    elif args.system == "litdata":
        make = lambda: iter(_litdata_dataset(args.root, shuffle, args.seed, width))  # noqa: E731
    elif args.system == "webdataset":
        make = lambda: iter(_wds_pipeline(args.root, shuffle, args.seed, None))  # noqa: E731
    else:
        raise SystemExit(f"no in-process reader for {args.system}")

    def fill(it, batches: int) -> None:
        for _ in range(batches):
            out = np.empty((b, width), dtype=np.int64)  # a fresh batch each time, as a loader hands out
            for j in range(b):
                out[j] = next(it)

    run_times = []
    for _ in range(args.rounds):
        it = make()
        fill(it, args.warmup)
        t0 = time.perf_counter()
        fill(it, nb)
        run_times.append(time.perf_counter() - t0)
        del it
    med = sorted(run_times)[len(run_times) // 2]
    tokens = nb * b * width
    return {"system": args.system, "pattern": args.pattern, "batches": nb, "tokens": tokens,
            "median_s": med, "best_s": min(run_times), "tokens_per_s": tokens / med,
            "rounds": args.rounds}


# ---------------------------------------------------------------------------- loader path

def cmd_loader(args: argparse.Namespace) -> dict:
    t_start = T_MAIN
    import torch  # noqa: PLC0415

    t_torch = time.time()
    b, width, workers = args.batch, args.seq_len + 1, args.workers
    system = args.system
    if system in ("numpy-memmap", "numpy-memmap-u16", "numpy-memmap-stateful", "megatron"):
        if system == "megatron":
            from megatron.core.datasets.indexed_dataset import IndexedDataset  # noqa: PLC0415
        t_lib = time.time()

        class Samples(torch.utils.data.Dataset):
            """Map-style: sample i, int64 (uint16 for -u16: cast in the main process)."""

            def __init__(self) -> None:
                self.handle = None

            def __len__(self) -> int:
                return args.samples

            def __getitem__(self, i: int):
                if self.handle is None:  # opened in the worker, as GPTDataset/nanoGPT do
                    self.handle = (IndexedDataset(paths(args.root)["megatron"], mmap=True)
                                   if system == "megatron" else np.memmap(args.stream, "<u2", "r"))
                if system == "megatron":
                    x = self.handle[i]
                else:
                    x = self.handle[i * args.seq_len : i * args.seq_len + width]
                if system == "numpy-memmap-u16":
                    return torch.from_numpy(np.array(x))
                return torch.from_numpy(x.astype(np.int64))

        g = torch.Generator()
        g.manual_seed(args.seed)
        Loader = torch.utils.data.DataLoader  # noqa: N806
        if system == "numpy-memmap-stateful":  # torchdata: run with a python that has it
            from torchdata.stateful_dataloader import StatefulDataLoader as Loader  # noqa: PLC0415, N806
        loader = Loader(Samples(), batch_size=b, shuffle=True, num_workers=workers, drop_last=True,
                        generator=g)
    elif system == "mosaicml":
        from streaming import StreamingDataLoader  # noqa: PLC0415

        t_lib = time.time()
        clean_mosaic_shm()

        ds = _mosaic_dataset(args.root, True, args.seed, b, int64=True)
        loader = StreamingDataLoader(ds, batch_size=b, num_workers=workers, drop_last=True)
    elif system == "litdata":
        from litdata import StreamingDataLoader  # noqa: PLC0415

        t_lib = time.time()
        ds = _litdata_dataset(args.root, True, args.seed, width, transform=_to_int64_tensor)
        loader = StreamingDataLoader(ds, batch_size=b, num_workers=workers, drop_last=True)
    elif system == "webdataset":
        import webdataset as wds  # noqa: PLC0415

        t_lib = time.time()
        loader = wds.WebLoader(_wds_pipeline(args.root, True, args.seed, b, to_torch=True),
                               batch_size=None, num_workers=workers)
    else:
        raise SystemExit(f"unknown system {system}")
    t_built = time.time()

    x = torch.empty((b, args.seq_len), dtype=torch.int64)
    y = torch.empty((b, args.seq_len), dtype=torch.int64)
    n = 0
    t_first = None
    shape_ok = True
    for batch in loader:
        # the consumer: copy inputs and shifted labels out (stand-in for the host-to-device copy)
        x.copy_(batch[:, :-1])
        y.copy_(batch[:, 1:])
        shape_ok &= tuple(batch.shape) == (b, width)
        n += 1
        if t_first is None:
            t_first = time.time()
        if n >= args.batches:
            break
    t_end = time.time()
    del loader
    times = {"start": t_start, "torch": t_torch, "lib": t_lib, "built": t_built, "first": t_first,
             "end": t_end}
    return _loader_result(args, times, n, shape_ok)


def _loader_result(args: argparse.Namespace, t: dict, n: int, shape_ok: bool) -> dict:
    """Milestones (``t``: time.time() values) turned into the figures bench_loader reports."""
    width = args.seq_len + 1
    spawn = args.spawn_time or t["start"]
    tokens = n * args.batch * width
    steady = (n - 1) * args.batch * width / (t["end"] - t["first"]) if n > 1 else float("nan")
    return {"system": args.system, "batches": n, "tokens": tokens, "shape_ok": bool(shape_ok),
            "interp_s": t["start"] - spawn, "torch_import_s": t["torch"] - t["start"],
            "lib_import_s": t["lib"] - t["torch"], "build_s": t["built"] - t["lib"],
            "first_from_spawn_s": t["first"] - spawn, "first_after_torch_s": t["first"] - t["torch"],
            "first_after_built_s": t["first"] - t["built"],
            "steady_tokens_per_s": steady, "total_tokens_per_s": tokens / (t["end"] - spawn),
            "rss_main_mib": rss_mib()}


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stream", required=True, help="raw uint16 token stream")
    common.add_argument("--samples", type=int, required=True)
    common.add_argument("--seq-len", type=int, default=2048)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--batch", type=int, default=8)
    common.add_argument("--root", help="folder holding the exported formats")
    e = sub.add_parser("export", parents=[common])
    e.add_argument("--out", required=True)
    e.add_argument("--key", required=True, help="identity of the stream; re-export when it changes")
    e.add_argument("--systems", nargs="+", default=["megatron", "mosaicml", "litdata", "webdataset"])
    i = sub.add_parser("inproc", parents=[common])
    i.add_argument("--system", choices=SYSTEMS, required=True)
    i.add_argument("--pattern", choices=("sequential", "shuffled"), required=True)
    i.add_argument("--batches", type=int, default=1024)
    i.add_argument("--warmup", type=int, default=64, help="untimed batches before the timed ones")
    i.add_argument("--rounds", type=int, default=3)
    ld = sub.add_parser("loader", parents=[common])
    ld.add_argument("--system", choices=SYSTEMS, required=True)
    ld.add_argument("--batches", type=int, default=2500)
    ld.add_argument("--workers", type=int, default=2)
    ld.add_argument("--spawn-time", type=float, default=None,
                    help="the parent's time.time() just before starting this process")
    args = ap.parse_args(argv)
    fn = {"export": cmd_export, "inproc": cmd_inproc, "loader": cmd_loader}[args.cmd]
    result = fn(args)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
