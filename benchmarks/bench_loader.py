"""Training-loader benchmark: fastdata against numpy.memmap, Megatron-Core, MosaicML
Streaming, LitData and WebDataset on the same token samples, in the same run.

Every system serves the same samples: fastdata's packed windows of ``seq_len + 1`` = 2049
tokens over one token stream (sample ``i`` = tokens ``[2048 i, 2048 i + 2049)``), in batches
of 8. The stream is fastdata's dataset (the bench corpus packed with the bytes tokenizer),
exported once to a raw uint16 file (the numpy.memmap baseline) and, by
``peers/loader_peers.py`` in the peers venv, to each peer's format (one record per sample);
every export is read back in full and checksummed against the stream.

Measured (see README.md for what each number means):

1. **In-process reads**, no DataLoader: sequential and shuffled batches into int64, steady
   state (construction and the first batch untimed), median of ``--inproc-rounds``.
2. **The DataLoader path**: batch 8 x 2049 tokens, 2 workers, shuffled, ``--loader-batches``
   batches, each system in a fresh process with its idiomatic loader; the consumer copies
   inputs and shifted labels out of every batch. Systems alternate; ``--repeat`` runs each.
3. **Time to first batch from a cold process**, from the spawn and from ``import torch``;
   reference: ``import torch`` plus one numpy.memmap batch.
4. **A synthetic dataset of 10^6 shards / 10^9 samples**: manifest only (shard files are
   hard links to a few sparse template shards), construction + first batch + RSS in a fresh
   process; and the planning layer alone (``EpochOrder``).

Hidden subcommands (``_fastdata-loader``, ``_first-ref``, ``_synthetic``, ``_planning``)
are the child processes; the parent starts them.
"""

from __future__ import annotations

import time

T_MAIN = time.time()  # as close to interpreter start as a script gets

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_PEERS_PY = HERE / ".venv-peers" / "bin" / "python"
PEERS_SCRIPT = HERE / "peers" / "loader_peers.py"
SEQ_LEN, BATCH, WORKERS = 2048, 8, 2

PEER_LOADERS = {
    "numpy-memmap": "torch DataLoader, map-style Dataset over np.memmap, int64 samples",
    "numpy-memmap-u16": "same, uint16 samples out of the workers, cast by the consumer",
    "megatron": "torch DataLoader, map-style Dataset over IndexedDataset (1 doc = 1 sample)",
    "mosaicml": "StreamingDataset(local=...) + StreamingDataLoader",
    "litdata": "StreamingDataset(TokensLoader(2049)) + StreamingDataLoader",
    "webdataset": "WebDataset(shardshuffle).shuffle(1000).batched(8) + WebLoader",
    "numpy-memmap-stateful": "torchdata StatefulDataLoader, map-style Dataset over np.memmap, int64 samples",
}
FASTDATA_LOADERS = {
    "fastdata": "fastdata.DataLoader(ds, 8, num_workers=2) (threads, the default)",
    "fastdata-processes": 'fastdata.DataLoader(..., backend="processes")',
    "fastdata-torch-dl": "TokenDataset(batch_size=8) + torch DataLoader(batch_size=None)",
    "fastdata-torch-dl-sample": "TokenDataset() (one sample per item) + torch DataLoader(batch_size=8)",
    "fastdata-stateful-dl": "TokenDataset(batch_size=8) + torchdata StatefulDataLoader(batch_size=None)",
    "fastdata-stateful-dl-sample": "TokenDataset() (one sample per item) + StatefulDataLoader(batch_size=8)",
}
PEERS = ("numpy-memmap", "megatron", "mosaicml", "litdata", "webdataset")  # ratio baselines
#: Peers whose loader keeps a resumable state (torchdata's StatefulDataLoader, and the
#: Streaming loaders of LitData and MosaicML, which have state_dict/load_state_dict): the
#: baselines of fastdata's StatefulDataLoader rows.
STATEFUL_PEERS = ("numpy-memmap-stateful", "litdata", "mosaicml")
#: Peers that run in fastdata's python (they need only numpy, torch and torchdata).
LOCAL_PEERS = ("numpy-memmap-stateful",)


# ============================================================================ helpers

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_now_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_peak_mib() -> float:
    """Peak RSS of this process (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_json(cmd: list[str], timeout: float, env: dict | None = None, log_path: Path | None = None
             ) -> dict:
    """Run a child that prints one JSON line last; {'error': ...} if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              env=dict(os.environ, PYTHONWARNINGS="ignore", **(env or {})))
    except subprocess.TimeoutExpired as e:
        return {"error": f"timed out after {timeout:.0f} s", "stderr": str(e.stderr or "")[-2000:]}
    if log_path is not None:
        with open(log_path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stderr}\n")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}", "stderr": proc.stderr[-3000:]}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": "no JSON result", "stderr": proc.stderr[-3000:]}


def fastdata_python() -> str:
    return sys.executable


def source_state() -> dict:
    """The commit and the uncommitted files of fastdata's sources when the benchmark starts
    (others may commit or edit while it runs; report.py records the commit at the end)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""
    changed = git("status", "--porcelain", "--", "fastdata", "csrc").splitlines()  # "XY path"
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
            "uncommitted": [line[3:] for line in changed if len(line) > 3]}


# ============================================================================ data

def ensure_dataset(args: argparse.Namespace) -> Path:
    """A fastdata dataset of the corpus (bytes tokenizer) that this fastdata can open."""
    import fastdata  # noqa: PLC0415

    for cand in ([args.dataset] if args.dataset else []) + [args.work_dir / "fastdata-bytes"]:
        if cand and (cand / "manifest.json").exists():
            try:
                fastdata.open_dataset(str(cand))
                return cand
            except Exception as e:  # noqa: BLE001 - e.g. a manifest an older fastdata wrote
                log(f"note: {cand} does not open with this fastdata ({type(e).__name__}: {e}); "
                    "packing again")
    out = args.work_dir / "fastdata-bytes"
    if args.corpus is None or not args.corpus.exists():
        raise SystemExit("no usable fastdata dataset: pass --dataset or --corpus")
    cmd = [args.fastdata, "pack", str(args.corpus), "-o", str(out), "--tokenizer", "bytes",
           "--workers", "2", "--shard-size", args.shard_size, "--overwrite", "-q"]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    return out


def ensure_stream(dataset: Path, work: Path) -> dict:
    """Export the dataset's token stream (whole samples only) to a raw uint16 file."""
    import xxhash  # noqa: PLC0415

    import fastdata  # noqa: PLC0415

    data = fastdata.open_dataset(str(dataset))
    if np.dtype(data.dtype) != np.dtype("<u2"):
        raise SystemExit("the loader benchmark expects a uint16 dataset (bytes tokenizer)")
    samples = (data.num_tokens - 1) // SEQ_LEN
    n_tokens = samples * SEQ_LEN + 1
    tokens = data.tokens(0, n_tokens)
    digest = xxhash.xxh3_128_hexdigest(memoryview(np.ascontiguousarray(tokens)).cast("B"))
    path = work / "stream.u16"
    meta_path = work / "stream.json"
    meta = {"dataset": str(dataset), "samples": samples, "tokens": n_tokens, "seq_len": SEQ_LEN,
            "xxh3_128": digest, "shards": len(data.shards), "dataset_tokens": data.num_tokens}
    old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if old.get("xxh3_128") != digest or not path.exists() or path.stat().st_size != 2 * n_tokens:
        tmp = path.with_suffix(".tmp")
        tokens.astype("<u2").tofile(tmp)
        os.replace(tmp, path)
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def export_peers(args: argparse.Namespace, meta: dict) -> dict:
    cmd = [str(args.peers_python), str(PEERS_SCRIPT), "export", "--stream",
           str(args.work_dir / "stream.u16"), "--samples", str(meta["samples"]), "--seq-len",
           str(SEQ_LEN), "--out", str(args.work_dir / "peers"), "--key", meta["xxh3_128"]]
    log("exporting the stream to the peers' formats (skipped when already done)")
    t0 = time.perf_counter()
    r = run_json(cmd, timeout=1200, log_path=args.work_dir / "peers.log")
    if "error" in r:
        log(f"peer export failed: {r['error']}\n{r.get('stderr', '')}")
    else:
        log(f"  exports ready in {time.perf_counter() - t0:.1f} s")
    return r


# ============================================================================ 1. in-process

def fastdata_inproc_round(dataset: str, pattern: str, nb: int, how: str, warm: int) -> tuple[float, int]:
    """One steady round: construct, read ``warm`` batches untimed, time ``nb`` batches."""
    import fastdata  # noqa: PLC0415

    shuffle = pattern == "shuffled"
    if how == "TokenDataset":
        it = iter(fastdata.TokenDataset(dataset, seq_len=SEQ_LEN, shuffle=shuffle, seed=0,
                                        batch_size=BATCH))
    elif how == "TokenDatasetSample":
        samples = iter(fastdata.TokenDataset(dataset, seq_len=SEQ_LEN, shuffle=shuffle, seed=0))
        it = _filled_batches(samples)
    else:
        ds = fastdata.TokenDataset(dataset, seq_len=SEQ_LEN, shuffle=shuffle, seed=0)
        it = iter(fastdata.DataLoader(ds, batch_size=BATCH, num_workers=0))
    for _ in range(warm):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(nb):
        batch = next(it)
        n += batch["input_ids"].shape[0]
    return time.perf_counter() - t0, n


def _filled_batches(samples):
    """Batches of the per-sample path, read the way the peers' in-process rows read theirs: each
    batch a fresh int64 (8, 2049) array, a sample's 2,049 tokens written into each row (its
    inputs and the last label); yields {"n": 8} (rows filled)."""
    while True:
        out = np.empty((BATCH, SEQ_LEN + 1), dtype=np.int64)
        for j in range(BATCH):
            s = next(samples)
            out[j, :SEQ_LEN] = s["input_ids"].numpy()
            out[j, SEQ_LEN] = s["labels"].numpy()[-1]
        yield {"input_ids": out}


def check_fastdata_content(dataset: str, pattern: str, batches: int, per_sample: bool = False) -> bool:
    """fastdata's batches (or samples) hold the packed windows their sample_ids name (untimed).

    A packed window never crosses a shard: sample ``i`` is tokens ``[2048 k, 2048 k + 2049)``
    of its shard (``k`` = its rank there), read back with ``Dataset.tokens``. (The stream the
    peers' exports hold tiles the whole token stream instead: the same number of samples of
    the same size, not the same windows.)"""
    import fastdata  # noqa: PLC0415

    ds = fastdata.TokenDataset(dataset, seq_len=SEQ_LEN, shuffle=pattern == "shuffled", seed=0,
                               batch_size=None if per_sample else BATCH)
    first = ds.space.first
    starts = np.concatenate([[0], np.cumsum([s.tokens for s in ds.data.shards])])
    for k, batch in enumerate(ds):
        if k >= batches * (BATCH if per_sample else 1):
            break
        if per_sample:
            batch = {key: v[None] for key, v in batch.items()}
        want = []
        for i in batch["sample_ids"].tolist():
            shard = int(np.searchsorted(first, i, side="right")) - 1
            start = int(starts[shard]) + (i - int(first[shard])) * SEQ_LEN
            want.append(np.asarray(ds.data.tokens(start, start + SEQ_LEN + 1), dtype=np.int64))
        window = np.stack(want)
        if not (np.array_equal(batch["input_ids"].numpy(), window[:, :-1])
                and np.array_equal(batch["labels"].numpy(), window[:, 1:])):
            return False
    return True


def bench_inproc(args: argparse.Namespace, dataset: Path, meta: dict) -> dict:
    sys.path.insert(0, str(HERE / "peers"))
    import loader_peers  # noqa: PLC0415 - numpy-only helpers; the same code as the peers side

    # 64 untimed batches first: fastdata gathers up to 64 steps at once, so the timed batches
    # then cover whole gathers (with a 1-batch warm-up, 63 timed batches would come for free)
    warm = 64 if (64 + 64) * BATCH <= meta["samples"] else 1
    nb = min(args.inproc_batches, meta["samples"] // BATCH - warm)
    stream_path = str(args.work_dir / "stream.u16")
    results: dict[str, dict] = {}
    checks = {p: check_fastdata_content(str(dataset), p, 20) for p in ("sequential", "shuffled")}
    sample_checks = {p: check_fastdata_content(str(dataset), p, 20, per_sample=True)
                     for p in ("sequential", "shuffled")}

    def memmap_round(pattern: str) -> float:
        ns = argparse.Namespace(stream=stream_path, samples=meta["samples"], seq_len=SEQ_LEN,
                                seed=0, batch=BATCH, root=None, system="numpy-memmap",
                                pattern=pattern, batches=nb, rounds=1, warmup=warm)
        return loader_peers.cmd_inproc(ns)["median_s"]

    # fastdata and numpy.memmap alternate round by round in this process (same conditions).
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.inproc_rounds):
        for pattern in ("sequential", "shuffled"):
            times.setdefault(("numpy-memmap", pattern), []).append(memmap_round(pattern))
            for how in ("TokenDataset", "DataLoader0", "TokenDatasetSample"):
                dt, n = fastdata_inproc_round(str(dataset), pattern, nb, how, warm)
                assert n == nb * BATCH
                times.setdefault((how, pattern), []).append(dt)
    tokens = nb * BATCH * (SEQ_LEN + 1)
    names = {"TokenDataset": "fastdata TokenDataset (iterated in-process)",
             "DataLoader0": "fastdata.DataLoader(num_workers=0)",
             "TokenDatasetSample": "fastdata TokenDataset per sample (no batch_size)",
             "numpy-memmap": "numpy.memmap (fastdata's python)"}
    for (how, pattern), ts in times.items():
        med = statistics.median(ts)
        ok = (sample_checks if how == "TokenDatasetSample" else checks)[pattern]
        results.setdefault(names[how], {"side": "fastdata"})[pattern] = {
            "tokens_per_s": tokens / med, "median_s": med, "rounds": ts,
            "data_check": ("same" if ok else "DIFFERENT") if how != "numpy-memmap" else "-"}

    if not args.no_peers:
        for system in ("numpy-memmap", "megatron", "mosaicml", "litdata", "webdataset"):
            for pattern in ("sequential", "shuffled"):
                cmd = [str(args.peers_python), str(PEERS_SCRIPT), "inproc", "--stream", stream_path,
                       "--samples", str(meta["samples"]), "--root", str(args.work_dir / "peers"),
                       "--system", system, "--pattern", pattern, "--batches", str(nb),
                       "--warmup", str(warm),
                       "--rounds", str(args.inproc_rounds)]
                r = run_json(cmd, timeout=600, log_path=args.work_dir / "peers.log")
                label = f"{system} (peers venv)" if system == "numpy-memmap" else system
                entry = results.setdefault(label, {"side": "peer"})
                if "error" in r:
                    entry[pattern] = {"error": r["error"]}
                    log(f"[inproc] {system} {pattern}: FAILED {r['error']}\n{r.get('stderr', '')[-1500:]}")
                else:
                    entry[pattern] = {"tokens_per_s": r["tokens_per_s"], "median_s": r["median_s"],
                                      "data_check": "export same"}
                    log(f"[inproc] {system} {pattern}: {r['tokens_per_s'] / 1e6:.1f} M tok/s")
    for label, entry in results.items():
        if entry["side"] == "fastdata":
            for pattern in ("sequential", "shuffled"):
                log(f"[inproc] {label} {pattern}: {entry[pattern]['tokens_per_s'] / 1e6:.1f} M tok/s")
    return {"batches": nb, "warmup": warm, "tokens": tokens, "rounds": args.inproc_rounds,
            "rows": results}


# ============================================================================ 2./3. loader + first batch

def fastdata_loader_child(args: argparse.Namespace) -> dict:
    """Child: build the fastdata loader variant, consume --batches batches, report milestones."""
    t_start = T_MAIN
    import torch  # noqa: PLC0415

    t_torch = time.time()
    import fastdata  # noqa: PLC0415

    _ = fastdata.TokenDataset, fastdata.DataLoader  # the lazy training imports, before timing
    t_lib = time.time()
    variant = args.system
    if variant.startswith(("fastdata-torch-dl", "fastdata-stateful-dl")):
        # the stock loaders: the dataset yields micro-batches (batch_size=None: no collation)
        # or, for -sample, single samples that the loader's workers collate into batches of 8
        per_sample = variant.endswith("-sample")
        ds = fastdata.TokenDataset(args.dataset_path, seq_len=SEQ_LEN, shuffle=True, seed=0,
                                   batch_size=None if per_sample else BATCH)
        if variant.startswith("fastdata-stateful-dl"):
            from torchdata.stateful_dataloader import StatefulDataLoader as Loader  # noqa: PLC0415
        else:
            Loader = torch.utils.data.DataLoader  # noqa: N806
        loader = Loader(ds, batch_size=BATCH if per_sample else None, num_workers=args.workers)
    else:
        ds = fastdata.TokenDataset(args.dataset_path, seq_len=SEQ_LEN, shuffle=True, seed=0)
        backend = "processes" if variant == "fastdata-processes" else "threads"
        loader = fastdata.DataLoader(ds, batch_size=BATCH, num_workers=args.workers, backend=backend)
    t_built = time.time()
    x = torch.empty((BATCH, SEQ_LEN), dtype=torch.int64)
    y = torch.empty((BATCH, SEQ_LEN), dtype=torch.int64)
    n, t_first, shape_ok = 0, None, True
    for batch in loader:
        x.copy_(batch["input_ids"])
        y.copy_(batch["labels"])
        shape_ok &= tuple(batch["input_ids"].shape) == (BATCH, SEQ_LEN)
        n += 1
        if t_first is None:
            t_first = time.time()
        if n >= args.batches:
            break
    t_end = time.time()
    del loader
    spawn = args.spawn_time or t_start
    tokens = n * BATCH * (SEQ_LEN + 1)
    steady = (n - 1) * BATCH * (SEQ_LEN + 1) / (t_end - t_first) if n > 1 else float("nan")
    return {"system": variant, "batches": n, "tokens": tokens, "shape_ok": bool(shape_ok),
            "interp_s": t_start - spawn, "torch_import_s": t_torch - t_start,
            "lib_import_s": t_lib - t_torch, "build_s": t_built - t_lib,
            "first_from_spawn_s": t_first - spawn, "first_after_torch_s": t_first - t_torch,
            "first_after_built_s": t_first - t_built, "steady_tokens_per_s": steady,
            "total_tokens_per_s": tokens / (t_end - spawn), "rss_main_mib": rss_peak_mib()}


def first_ref_child(args: argparse.Namespace) -> dict:
    """Child: the reference for the first batch: import torch, one numpy.memmap batch."""
    t_start = T_MAIN
    import torch  # noqa: PLC0415

    t_torch = time.time()
    mm = np.memmap(args.stream, dtype="<u2", mode="r")
    samples = (len(mm) - 1) // SEQ_LEN
    ids = np.random.default_rng(0).integers(0, samples, BATCH)
    out = np.empty((BATCH, SEQ_LEN + 1), dtype=np.int64)
    for j, i in enumerate(ids):
        out[j] = mm[i * SEQ_LEN : i * SEQ_LEN + SEQ_LEN + 1]
    batch = torch.from_numpy(out)
    t_first = time.time()
    assert batch.shape == (BATCH, SEQ_LEN + 1)
    spawn = args.spawn_time or t_start
    return {"system": "reference", "interp_s": t_start - spawn, "torch_import_s": t_torch - t_start,
            "first_from_spawn_s": t_first - spawn, "first_after_torch_s": t_first - t_torch,
            "rss_main_mib": rss_peak_mib()}


def loader_cmd(args: argparse.Namespace, system: str, batches: int, dataset: Path, meta: dict) -> list[str]:
    if system in FASTDATA_LOADERS:
        return [fastdata_python(), str(Path(__file__).resolve()), "_fastdata-loader", "--system", system,
                "--dataset-path", str(dataset), "--batches", str(batches), "--workers", str(WORKERS)]
    python = fastdata_python() if system in LOCAL_PEERS else str(args.peers_python)
    return [python, str(PEERS_SCRIPT), "loader", "--system", system, "--stream",
            str(args.work_dir / "stream.u16"), "--samples", str(meta["samples"]), "--root",
            str(args.work_dir / "peers"), "--batches", str(batches), "--workers", str(WORKERS)]


def spawn_timed(cmd: list[str], timeout: float, log_path: Path) -> dict:
    return run_json(cmd + ["--spawn-time", repr(time.time())], timeout=timeout, log_path=log_path)


def bench_loader(args: argparse.Namespace, dataset: Path, meta: dict) -> dict:
    systems = list(FASTDATA_LOADERS) + ([] if args.no_peers else list(PEER_LOADERS))
    if args.systems:
        systems = [s for s in systems if s in args.systems]
    nb = min(args.loader_batches, meta["samples"] // BATCH - 1)
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for rep in range(args.repeat):
        order = systems if rep % 2 == 0 else systems[::-1]  # alternate, so drift hits all alike
        for system in order:
            r = spawn_timed(loader_cmd(args, system, nb, dataset, meta), args.loader_timeout,
                            args.work_dir / "loader.log")
            r["load1"] = os.getloadavg()[0]
            runs[system].append(r)
            if "error" in r:
                log(f"[loader {rep + 1}/{args.repeat}] {system}: FAILED {r['error']}\n"
                    f"{r.get('stderr', '')[-1500:]}")
            else:
                log(f"[loader {rep + 1}/{args.repeat}] {system}: "
                    f"{r['steady_tokens_per_s'] / 1e6:.1f} M tok/s steady, first batch "
                    f"{r['first_from_spawn_s']:.2f} s from spawn ({r['first_after_torch_s']:.2f} s "
                    f"after import torch), load {r['load1']:.1f}")
    # dedicated cold starts for the first-batch target: reference and fastdata alternate
    first: dict[str, list[dict]] = {"reference": [], "fastdata": []}
    for _ in range(args.first_runs):
        first["reference"].append(spawn_timed(
            [fastdata_python(), str(Path(__file__).resolve()), "_first-ref", "--stream",
             str(args.work_dir / "stream.u16")], 120, args.work_dir / "loader.log"))
        first["fastdata"].append(spawn_timed(loader_cmd(args, "fastdata", 1, dataset, meta), 120,
                                             args.work_dir / "loader.log"))
    for name, rs in first.items():
        ok = [r for r in rs if "error" not in r]
        if ok:
            log(f"[first batch] {name}: " + ", ".join(f"{r['first_from_spawn_s']:.2f}" for r in ok)
                + " s from spawn")
        for r in rs:
            if "error" in r:
                log(f"[first batch] {name}: FAILED {r['error']}\n{r.get('stderr', '')[-1500:]}")
    return {"batches": nb, "tokens": nb * BATCH * (SEQ_LEN + 1), "repeat": args.repeat,
            "runs": runs, "first": first}


# ============================================================================ 4. synthetic 10^9

def synthetic_layout(n_shards: int, samples_per_shard: int) -> tuple[int, int]:
    """Tokens of every shard but the last, and of the last, for exactly n*s packed samples."""
    per = samples_per_shard * SEQ_LEN
    return per, per + 1  # one more token at the end: (total - 1) // SEQ_LEN == n * s


def format_sources_key() -> str:
    """Changes whenever fastdata's manifest code changes (a cached manifest may then be stale)."""
    import fastdata  # noqa: PLC0415

    h = hashlib.sha256()
    fmt = Path(fastdata.__file__).parent / "format"
    for p in sorted(fmt.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def write_sparse_shard(path: Path, tokens: int) -> str:
    """A valid raw shard of one document of ``tokens`` zero tokens, sparse; returns its xxh3."""
    from fastdata.format.hashing import hash_file  # noqa: PLC0415
    from fastdata.format.spec import DTYPE_CODES, INDEX_OFFSET, Layout, pack_header  # noqa: PLC0415

    layout = Layout.plan(1, tokens, DTYPE_CODES["uint16"], False)
    index = np.array([0, tokens], dtype="<u8").tobytes()
    with open(path, "wb") as f:
        f.write(pack_header(layout, index))
        f.seek(INDEX_OFFSET)
        f.write(index)
        f.truncate(layout.file_size)
    return hash_file(str(path))


def synthetic_manifest_text(n_shards: int, per: tuple[int, int, str], last: tuple[int, int, str],
                            fingerprint: str | None) -> str:
    """Inline manifest JSON in the layout ``Manifest.to_json`` writes (indent 1, sorted keys).

    ``per`` and ``last``: (tokens, file bytes, xxh3) of every shard but the last, and of the last.
    """
    body = ('  {{\n   "docs": 1,\n   "name": "shard-{i:05d}.fds",\n   "raw_bytes": {b},\n'
            '   "raw_xxh3_128": "{h}",\n   "stored_bytes": {b},\n   "tokens": {t},\n'
            '   "xxh3_128": "{h}"\n  }}')
    t, b, h = per
    parts = [body.format(i=i, b=b, h=h, t=t) for i in range(n_shards - 1)]
    t, b, h = last
    parts.append(body.format(i=n_shards - 1, b=b, h=h, t=t))
    total_tokens = per[0] * (n_shards - 1) + last[0]
    total_bytes = per[1] * (n_shards - 1) + last[1]
    head = {
        "complete": True, "compression": None, "dtype": "uint16", "format": "fastdata",
        "format_version": 1, "has_loss_mask": False,
        "provenance": {"note": "synthetic: bench_loader.py (metadata-only dataset)"},
        "tokenizer": {"bos_id": 257, "eos_id": 256, "fingerprint": "0" * 32, "kind": "bytes",
                      "name": "bytes", "vocab_size": 258},
        "totals": {"docs": n_shards, "raw_bytes": total_bytes, "shards": n_shards,
                   "stored_bytes": total_bytes, "tokens": total_tokens},
    }
    if fingerprint is not None:
        head["fingerprint"] = fingerprint
    text = json.dumps(head, indent=1, sort_keys=True)
    # insert the shard list where sorted keys put it (after "provenance", before "tokenizer")
    cut = text.index('\n "tokenizer"')
    return text[:cut] + '\n "shards": [\n' + ",\n".join(parts) + "\n ]," + text[cut:] + "\n"


def link_shards(folder: Path, n_shards: int, per: list[Path], last: Path) -> None:
    """Every shard name of the dataset as a hard link to a template (spread over ``per``)."""
    chunk = -(-(n_shards - 1) // len(per))
    for i in range(n_shards - 1):
        os.link(per[i // chunk], folder / f"shard-{i:05d}.fds")
    os.link(last, folder / f"shard-{n_shards - 1:05d}.fds")


def ensure_synthetic(args: argparse.Namespace) -> dict:
    """Generate (or reuse) the metadata-only dataset of ``--synthetic-shards`` shards.

    Two folders, ``inline`` (manifest.json with one entry per shard) and, when this fastdata
    writes one, ``table`` (fastdata's binary shard table); in both every shard file is a hard
    link to one of a few sparse template shards. The links depend only on the shard format
    (spec.py) and are kept; the manifests are rebuilt whenever fastdata's format code changes.
    """
    import fastdata.format.spec as spec  # noqa: PLC0415
    from fastdata.format.manifest import parse_manifest  # noqa: PLC0415

    n = args.synthetic_shards
    spp = args.synthetic_samples // n
    per_tokens, last_tokens = synthetic_layout(n, spp)
    base = args.work_dir / f"synthetic-{n}"
    inline_dir, table_dir, tmpl_dir = base / "inline", base / "table", base / "templates"
    links_key = hashlib.sha256(Path(spec.__file__).read_bytes()).hexdigest()[:16] + f"/{n}/{spp}"
    key = format_sources_key() + "/" + links_key
    stamp_path = base / "stamp.json"
    stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    if stamp.get("key") == key:
        return stamp
    t0 = time.perf_counter()
    # templates: ext4 allows 65,000 links per inode; two folders link each template <= 60,000 times
    count = max(1, -(-n // 30_000))
    per_paths = [tmpl_dir / f"t{per_tokens}-{k}.fds" for k in range(count)]
    last_path = tmpl_dir / f"t{last_tokens}-last.fds"
    if stamp.get("links_key") != links_key:
        log(f"generating the synthetic {n:,}-shard dataset: sparse templates and {2 * n:,} hard links")
        if base.exists():
            shutil.rmtree(base)
        for d in (inline_dir, table_dir, tmpl_dir):
            d.mkdir(parents=True)
        for p in per_paths:
            write_sparse_shard(p, per_tokens)
        write_sparse_shard(last_path, last_tokens)
        link_shards(inline_dir, n, per_paths, last_path)
        link_shards(table_dir, n, per_paths, last_path)
        stamp = {"links_key": links_key}
        stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    else:
        log(f"fastdata's format code changed: rebuilding the synthetic {n:,}-shard manifests")
    from fastdata.format.hashing import hash_file  # noqa: PLC0415

    per = (per_tokens, per_paths[0].stat().st_size, hash_file(str(per_paths[0])))
    last = (last_tokens, last_path.stat().st_size, hash_file(str(last_path)))
    # the fingerprint is whatever this fastdata computes for these shards (its definition may
    # change): parse the manifest once without it and ask the parsed Manifest.
    manifest = parse_manifest(synthetic_manifest_text(n, per, last, None), "synthetic")
    text = synthetic_manifest_text(n, per, last, manifest.fingerprint)
    (inline_dir / "manifest.json").write_text(text)
    stamp.update({"key": key, "shards": n, "samples_per_shard": spp, "manifest_bytes": len(text),
                  "tokens": per_tokens * (n - 1) + last_tokens, "table": None, "table_error": None})
    for stale in table_dir.glob("*"):
        if not stale.name.endswith(".fds"):
            stale.unlink()
    # fastdata's binary shard table, where this fastdata writes one (Manifest.serialize)
    serialize = getattr(manifest, "serialize", None)
    if serialize is None:
        stamp["table_error"] = "this fastdata has no Manifest.serialize (inline manifests only)"
    else:
        try:
            mtext, table = serialize()
            if table is None:
                stamp["table_error"] = "Manifest.serialize() kept the shard list inline"
            else:
                name = json.loads(mtext).get("shard_table", {}).get("name", "shards.bin")
                (table_dir / name).write_bytes(table)
                (table_dir / "manifest.json").write_text(mtext)
                stamp["table"] = {"manifest_bytes": len(mtext), "table_bytes": len(table)}
        except Exception as e:  # noqa: BLE001 - an API in flux; report, don't fail
            stamp["table_error"] = f"{type(e).__name__}: {e}"
    del manifest
    stamp["generate_s"] = time.perf_counter() - t0
    stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    log(f"  synthetic dataset ready in {stamp['generate_s']:.1f} s")
    return stamp


def synthetic_child(args: argparse.Namespace) -> dict:
    """Child: TokenDataset over the synthetic dataset, then the first batch of fastdata.DataLoader."""
    t_start = T_MAIN
    import torch  # noqa: F401, PLC0415

    import fastdata  # noqa: PLC0415
    from fastdata.loader.dataset import TokenDataset  # noqa: F401, PLC0415 - import before timing

    t_lib = time.time()
    rss_base = rss_now_mib()
    ds = fastdata.TokenDataset(args.dataset_path, seq_len=SEQ_LEN, shuffle=True, seed=0)
    t_built = time.time()
    rss_built = rss_now_mib()
    loader = fastdata.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS)
    it = iter(loader)
    batch = next(it)
    t_first = time.time()
    assert tuple(batch["input_ids"].shape) == (BATCH, SEQ_LEN)
    result = {"samples": int(ds.space.num_samples), "steps": len(loader), "rss_base_mib": rss_base,
              "rss_built_mib": rss_built, "rss_first_mib": rss_now_mib(),
              "rss_peak_mib": rss_peak_mib(), "construct_s": t_built - t_lib,
              "first_batch_s": t_first - t_built, "construct_and_first_s": t_first - t_lib,
              "from_spawn_s": t_first - (args.spawn_time or t_start)}
    del it
    return result


def planning_child(args: argparse.Namespace) -> dict:
    """Child: fastdata's planning layer alone: EpochOrder over 10^6 shards x 1000 samples."""
    import fastdata.sampling.order as order_mod  # noqa: PLC0415

    try:
        from fastdata.format.reader import permute  # noqa: PLC0415 - native, what TokenDataset uses
    except Exception:  # noqa: BLE001
        permute = order_mod.permute_reference
    rss_base = rss_now_mib()
    t0 = time.perf_counter()
    space = order_mod.document_space(np.full(args.shards, args.samples_per_shard, dtype=np.int64))
    config = order_mod.OrderConfig(global_batch=BATCH, partitions=BATCH, seed=0, shuffle=True)
    order = order_mod.EpochOrder(space, config, 0, "synthetic", permute=permute)
    t1 = time.perf_counter()
    ids = order.slots(0, 0, BATCH)
    t2 = time.perf_counter()
    assert len(ids) == BATCH and (ids >= 0).all()
    return {"samples": space.num_samples, "construct_s": t1 - t0, "first_slots_s": t2 - t1,
            "rss_base_mib": rss_base, "rss_peak_mib": rss_peak_mib(), "steps": order.num_steps}


def bench_synthetic(args: argparse.Namespace) -> dict:
    try:
        stamp = ensure_synthetic(args)
    except Exception as e:  # noqa: BLE001
        log(f"synthetic dataset generation failed: {type(e).__name__}: {e}")
        return {"error": f"generation failed: {type(e).__name__}: {e}"}
    base = args.work_dir / f"synthetic-{args.synthetic_shards}"
    out: dict = {"stamp": stamp, "variants": {}}
    me = str(Path(__file__).resolve())
    variants = [("inline JSON manifest", base / "inline")]
    if stamp.get("table"):
        variants.append(("binary shard table (shards.bin)", base / "table"))
    for label, folder in variants:
        rs = []
        # the inline JSON manifest takes tens of seconds per run: once is enough to see it
        runs = 1 if folder.name == "inline" else args.synthetic_runs
        for _ in range(runs):
            r = spawn_timed([fastdata_python(), me, "_synthetic", "--dataset-path", str(folder)],
                            args.synthetic_timeout, args.work_dir / "synthetic.log")
            rs.append(r)
            if "error" in r:
                log(f"[synthetic] {label}: FAILED {r['error']}\n{r.get('stderr', '')[-1500:]}")
                break
            log(f"[synthetic] {label}: construct {r['construct_s']:.2f} s + first batch "
                f"{r['first_batch_s']:.2f} s, peak RSS {r['rss_peak_mib']:.0f} MiB")
        out["variants"][label] = rs
    pr = []
    for _ in range(args.synthetic_runs):
        pr.append(run_json([fastdata_python(), me, "_planning", "--shards", str(args.synthetic_shards),
                            "--samples-per-shard", str(args.synthetic_samples // args.synthetic_shards)],
                           args.synthetic_timeout))
        if "error" in pr[-1]:
            log(f"[planning] FAILED {pr[-1]['error']}\n{pr[-1].get('stderr', '')[-1500:]}")
            break
        r = pr[-1]
        log(f"[planning] EpochOrder over {r['samples']:,} samples: {r['construct_s']:.3f} s "
            f"+ first slots {r['first_slots_s'] * 1e3:.1f} ms, peak RSS {r['rss_peak_mib']:.0f} MiB")
    out["planning"] = pr
    return out


# ============================================================================ report

def fmt_m(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x / 1e6:,.1f}"


def best(rs: list[dict], key: str, hi: bool = True) -> float | None:
    vals = [r[key] for r in rs if "error" not in r and key in r]
    if not vals:
        return None
    return max(vals) if hi else min(vals)


def markdown(res: dict) -> str:  # noqa: C901 - one table after another
    L: list[str] = ["### Training loader", ""]
    meta = res["meta"]
    src = res.get("source") or {}
    if src:
        dirty = src.get("uncommitted") or []
        L += [f"fastdata sources when this benchmark started: commit `{src.get('commit')}`"
              + (f", with uncommitted changes in {', '.join(f'`{f}`' for f in dirty)}" if dirty else "")
              + ".", ""]
    L.append(f"Data: the bench corpus packed by fastdata with the bytes tokenizer "
             f"({meta['shards']} shards, {meta['dataset_tokens']:,} tokens); {meta['samples']:,} "
             f"samples of {SEQ_LEN + 1} tokens (windows with stride {SEQ_LEN}, fastdata's packed "
             "samples), uint16 on disk, int64 batches of 8. Every peer format holds the same "
             "samples, one record per sample:")
    exp = res.get("export") or {}
    if exp.get("formats"):
        L.append("")
        L.append("| format | written by | size MB | write s | read back == stream |")
        L.append("|---|---|---:|---:|---|")
        writers = {"megatron": "IndexedDatasetBuilder (1 document per sample)",
                   "mosaicml": "MDSWriter, `tokens: ndarray:uint16:2049`, 64 MB shards",
                   "litdata": "`optimize(..., item_loader=TokensLoader())`, 1,024 samples/chunk",
                   "webdataset": "ShardWriter, 16 tar shards, member `.tok` = raw uint16"}
        for k, v in exp["formats"].items():
            L.append(f"| {k} | {writers.get(k, '')} | {v['bytes'] / 1e6:.1f} | {v['write_s']:.1f} | "
                     f"{v['check']} ({v['samples']:,} samples) |")
    elif exp.get("error"):
        L += ["", f"**Peer export failed:** {exp['error']}"]

    ip = res.get("inproc")
    if ip:
        L += ["", "#### In-process reads (no DataLoader), M tokens/s",
              "", f"{ip['batches']:,} batches of 8 x 2049 per round after {ip.get('warmup', 1)} untimed "
              f"batches (construction excluded), each batch a fresh int64 array; median of "
              f"{ip['rounds']} rounds. fastdata and numpy.memmap "
              "alternate round by round in one process; peers run in the peers venv.", ""]
        base = ip["rows"].get("numpy.memmap (fastdata's python)", {})
        L.append("| system | sequential | shuffled | seq. vs numpy.memmap | shuffled vs numpy.memmap "
                 "| data check |")
        L.append("|---|---:|---:|---:|---:|---|")
        for label, row in ip["rows"].items():
            cells = []
            for p in ("sequential", "shuffled"):
                cells.append(fmt_m(row.get(p, {}).get("tokens_per_s")) if "error" not in row.get(p, {})
                             else "failed")
            ratios = []
            for p in ("sequential", "shuffled"):
                a, b = row.get(p, {}).get("tokens_per_s"), base.get(p, {}).get("tokens_per_s")
                ratios.append(f"{a / b:.2f}x" if a and b else "—")
            check = row.get("shuffled", {}).get("data_check", "")
            L.append(f"| {label} | {cells[0]} | {cells[1]} | {ratios[0]} | {ratios[1]} | {check} |")

    ld = res.get("loader")
    if ld:
        L += ["", "#### DataLoader path: batch 8 x 2049, 2 workers, shuffled",
              "", f"{ld['batches']:,} batches ({ld['tokens'] / 1e6:.1f} M tokens) per run, each run a "
              f"fresh process; {ld['repeat']} runs per system, systems alternating (order reversed "
              "every run). The consumer copies inputs and shifted labels out of every batch. "
              "**steady** = tokens/s from the first batch to the last; **incl. start-up** = from "
              "process spawn. RSS = peak of the main process.", ""]
        peer_best = {s: best(ld["runs"].get(s, []), "steady_tokens_per_s") for s in PEERS}
        peer_best = {s: v for s, v in peer_best.items() if v}
        top = max(peer_best.items(), key=lambda kv: kv[1]) if peer_best else None
        st_best = {s: best(ld["runs"].get(s, []), "steady_tokens_per_s") for s in STATEFUL_PEERS}
        st_best = {s: v for s, v in st_best.items() if v}
        st_top = max(st_best.items(), key=lambda kv: kv[1]) if st_best else None
        L.append("| system | loader | steady M tok/s (best) | all runs | incl. start-up | first batch "
                 "from spawn s | after import torch s | main RSS MiB | vs best peer |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for s, rs in ld["runs"].items():
            desc = FASTDATA_LOADERS.get(s) or PEER_LOADERS.get(s, "")
            ok = [r for r in rs if "error" not in r]
            if not ok:
                err = rs[0].get("error") if rs else "not run"
                L.append(f"| {s} | {desc} | failed: {err} | | | | | | |")
                continue
            b = best(ok, "steady_tokens_per_s")
            allr = " / ".join(fmt_m(r["steady_tokens_per_s"]) for r in ok)
            base = st_top if "stateful" in s else top  # stateful loaders: against stateful peers
            ratio = f"{b / base[1]:.2f}x" if base else "—"
            L.append(f"| {s} | {desc} | {fmt_m(b)} | {allr} | {fmt_m(best(ok, 'total_tokens_per_s'))} | "
                     f"{best(ok, 'first_from_spawn_s', False):.2f} | "
                     f"{best(ok, 'first_after_torch_s', False):.2f} | "
                     f"{best(ok, 'rss_main_mib', False):.0f} | {ratio} |")
        if top:
            L += ["", f"Best peer on the DataLoader path in this run: **{top[0]}**, "
                  f"{top[1] / 1e6:.1f} M tokens/s."]
            per_run = []
            for rep in range(ld["repeat"]):
                def at(s: str, rep: int = rep) -> float | None:
                    rs = ld["runs"].get(s, [])
                    ok = rep < len(rs) and "error" not in rs[rep]
                    return rs[rep]["steady_tokens_per_s"] if ok else None
                peers_rep = {s: at(s) for s in PEERS if at(s)}
                if at("fastdata") and peers_rep:
                    name, v = max(peers_rep.items(), key=lambda kv: kv[1])
                    per_run.append(f"run {rep + 1}: {at('fastdata') / v:.2f}x ({name})")
            if per_run:
                L.append("fastdata.DataLoader (threads) / best peer of the same run: "
                         + "; ".join(per_run) + ".")
            L += ["", "The stock loaders' rows (`fastdata-torch-dl*`, `fastdata-stateful-dl*`) are "
                  "divided by the best peer under the same kind of loader: the torch DataLoader rows "
                  "by the best of " + ", ".join(PEERS) + " (all run the stock DataLoader or a "
                  "subclass); the StatefulDataLoader rows by the best of the resumable loaders, "
                  + ", ".join(STATEFUL_PEERS)
                  + (f" (here **{st_top[0]}**, {st_top[1] / 1e6:.1f} M tokens/s)." if st_top else ".")]
        fr = ld.get("first", {})
        ref = [r for r in fr.get("reference", []) if "error" not in r]
        fdf = [r for r in fr.get("fastdata", []) if "error" not in r]
        if ref and fdf:
            pairs = [(f, r) for f, r in zip(fr["fastdata"], fr["reference"])
                     if "error" not in f and "error" not in r]
            d_spawn = statistics.median(f["first_from_spawn_s"] - r["first_from_spawn_s"] for f, r in pairs)
            d_torch = statistics.median(f["first_after_torch_s"] - r["first_after_torch_s"] for f, r in pairs)
            L += ["", "#### Time to first batch from a cold process (page cache warm)", "",
                  f"{len(pairs)} alternating pairs of fresh processes (same python, same script); "
                  "\"reference\" = `import torch` + one numpy.memmap batch of 8 x 2049 into int64; "
                  "fastdata = `import torch`, `import fastdata`, `TokenDataset` + `fastdata.DataLoader` "
                  "(threads) and its first batch. Medians.", "",
                  "| process | from spawn s | import torch s | after import torch s | runs (from spawn) |",
                  "|---|---:|---:|---:|---|"]
            for name, rs in (("reference", ref), ("fastdata.DataLoader (threads)", fdf)):
                L.append(f"| {name} | {statistics.median(r['first_from_spawn_s'] for r in rs):.2f} | "
                         f"{statistics.median(r['torch_import_s'] for r in rs):.2f} | "
                         f"{statistics.median(r['first_after_torch_s'] for r in rs):.2f} | "
                         + ", ".join(f"{r['first_from_spawn_s']:.2f}" for r in rs) + " |")
            L += ["", f"fastdata's first batch comes {d_spawn:+.2f} s after the reference's from "
                  f"spawn (median of the paired differences) and {d_torch:+.2f} s after it counted from "
                  "the end of `import torch` (target: within 0.3 s). `import torch` alone varies by "
                  "seconds between runs on a loaded box, so the second figure is the steadier one."]

    sy = res.get("synthetic")
    if sy:
        L += ["", "#### 10^9 samples: construction, first batch, RSS", ""]
        if "error" in sy:
            L.append(f"**Failed:** {sy['error']}")
        else:
            st = sy["stamp"]
            L.append(f"Synthetic dataset: {st['shards']:,} shards x {st['samples_per_shard']:,} packed "
                     f"samples ({st['tokens']:,} tokens); inline manifest {st['manifest_bytes'] / 1e6:.0f} "
                     "MB of JSON (one entry per shard). Every shard file exists as a hard link to one of "
                     "a few sparse template shards (valid header and index, zero tokens), so the loader "
                     "can open whichever shards the order picks. Fresh process each run; "
                     "`TokenDataset(path, seq_len=2048, shuffle=True)` then the first batch of "
                     "`fastdata.DataLoader(ds, 8, num_workers=2)`.")
            if st.get("table"):
                L.append(f"Binary variant: fastdata's own `Manifest.serialize()` output "
                         f"({st['table']['manifest_bytes'] / 1e3:.1f} kB JSON + "
                         f"{st['table']['table_bytes'] / 1e6:.0f} MB `shards.bin`).")
            elif st.get("table_error"):
                L.append(f"Binary shard table variant not generated: {st['table_error']}")
            L += ["", "| manifest | samples | construct s | first batch s | total s | RSS after "
                  "import MiB | RSS built MiB | peak RSS MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for label, rs in sy["variants"].items():
                ok = [r for r in rs if "error" not in r]
                if not ok:
                    L.append(f"| {label} | failed: {rs[0].get('error')} | | | | | | |")
                    continue
                r = min(ok, key=lambda r: r["construct_and_first_s"])
                L.append(f"| {label} | {r['samples']:,} | {r['construct_s']:.3f} | "
                         f"{r['first_batch_s']:.3f} | {r['construct_and_first_s']:.3f} | "
                         f"{r['rss_base_mib']:.0f} | {r['rss_built_mib']:.0f} | {r['rss_peak_mib']:.0f} |")
            pl = [r for r in sy.get("planning", []) if "error" not in r]
            if pl:
                r = min(pl, key=lambda r: r["construct_s"])
                L += ["", "Planning layer alone (`EpochOrder` over `document_space(np.full("
                      f"{st['shards']:,}, {st['samples_per_shard']:,}))`, "
                      f"global batch 8, shuffled): {r['samples']:,} samples, {r['construct_s']:.3f} s to "
                      f"build, {r['first_slots_s'] * 1e3:.1f} ms for the first batch's sample ids, peak "
                      f"RSS {r['rss_peak_mib']:.0f} MiB (python + numpy + fastdata, no torch)."]
    L.append("")
    return "\n".join(L)


# ============================================================================ main

def child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--system")
    ap.add_argument("--dataset-path")
    ap.add_argument("--stream")
    ap.add_argument("--batches", type=int, default=1)
    ap.add_argument("--workers", type=int, default=WORKERS)
    ap.add_argument("--spawn-time", type=float, default=None)
    ap.add_argument("--shards", type=int, default=10**6)
    ap.add_argument("--samples-per-shard", type=int, default=1000)
    args = ap.parse_args(argv)
    fn = {"_fastdata-loader": fastdata_loader_child, "_first-ref": first_ref_child,
          "_synthetic": synthetic_child, "_planning": planning_child}[args.cmd]
    sys.stdout.write(json.dumps(fn(args)) + "\n")
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):
        return child_main(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=HERE / ".work" / "corpus.jsonl",
                    help="JSONL corpus to pack when no usable --dataset is given")
    ap.add_argument("--dataset", type=Path, default=None, help="a fastdata dataset (bytes tokenizer)")
    ap.add_argument("--work-dir", type=Path, default=HERE / ".work" / "loader")
    ap.add_argument("--fastdata", default=os.environ.get("FASTDATA", "fastdata"))
    ap.add_argument("--shard-size", default="8MB", help="shard size when packing (several shards)")
    ap.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS_PY)
    ap.add_argument("--no-peers", action="store_true", help="fastdata and numpy.memmap only")
    ap.add_argument("--systems", nargs="*", help="DataLoader-path systems to run (default all)")
    ap.add_argument("--inproc-batches", type=int, default=1024)
    ap.add_argument("--inproc-rounds", type=int, default=3)
    ap.add_argument("--loader-batches", type=int, default=2500)
    ap.add_argument("--loader-timeout", type=float, default=300)
    ap.add_argument("--repeat", type=int, default=2, help="DataLoader-path runs per system")
    ap.add_argument("--first-runs", type=int, default=5, help="cold first-batch pairs (ref, fastdata)")
    ap.add_argument("--no-inproc", action="store_true")
    ap.add_argument("--no-loader", action="store_true")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--synthetic-shards", type=int, default=10**6)
    ap.add_argument("--synthetic-samples", type=int, default=10**9)
    ap.add_argument("--synthetic-runs", type=int, default=2)
    ap.add_argument("--synthetic-timeout", type=float, default=300)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--md-out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.no_peers and not args.peers_python.exists():
        log(f"note: {args.peers_python} missing: running without peers (setup_peers.sh makes it)")
        args.no_peers = True
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for name in ("peers.log", "loader.log", "synthetic.log"):
        (args.work_dir / name).write_text("")

    t0 = time.perf_counter()
    dataset = ensure_dataset(args)
    meta = ensure_stream(dataset, args.work_dir)
    log(f"dataset {dataset}: {meta['samples']:,} samples of {SEQ_LEN + 1} tokens")
    res: dict = {"meta": meta, "load_before": os.getloadavg(), "source": source_state()}
    if not args.no_peers:
        res["export"] = export_peers(args, meta)
        if "error" in res["export"]:
            args.no_peers = True
    if not args.no_inproc:
        res["inproc"] = bench_inproc(args, dataset, meta)
    if not args.no_loader:
        res["loader"] = bench_loader(args, dataset, meta)
    if not args.no_synthetic:
        res["synthetic"] = bench_synthetic(args)
    res["elapsed_s"] = time.perf_counter() - t0
    res["load_after"] = os.getloadavg()
    log(f"loader benchmark done in {res['elapsed_s']:.0f} s")
    md = markdown(res)
    print(md)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    if args.md_out:
        args.md_out.parent.mkdir(parents=True, exist_ok=True)
        args.md_out.write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
