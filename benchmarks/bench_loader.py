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
are the child processes; the parent starts them. The tables are made by ``render.py``, the
synthetic dataset by ``synthetic.py``, the plumbing shared with ``bench_remote.py`` is in
``_common.py``.
"""

from __future__ import annotations

import time

T_MAIN = time.time()  # as close to interpreter start as a script gets

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    BATCH,
    DEFAULT_PEERS_PY,
    FASTDATA_LOADERS,
    LOCAL_PEERS,
    PEER_LOADERS,
    SEQ_LEN,
    WORKERS,
    check_peers_python,
    ensure_stream,
    log,
    rss_now_mib,
    rss_peak_mib,
    run_json,
    source_state,
    write_results,
)
from synthetic import ensure_synthetic  # noqa: E402

HERE = Path(__file__).resolve().parent
PEERS_SCRIPT = HERE / "peers" / "loader_peers.py"


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
        return [sys.executable, str(Path(__file__).resolve()), "_fastdata-loader", "--system", system,
                "--dataset-path", str(dataset), "--batches", str(batches), "--workers", str(WORKERS)]
    python = sys.executable if system in LOCAL_PEERS else str(args.peers_python)
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
            [sys.executable, str(Path(__file__).resolve()), "_first-ref", "--stream",
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
            r = spawn_timed([sys.executable, me, "_synthetic", "--dataset-path", str(folder)],
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
        pr.append(run_json([sys.executable, me, "_planning", "--shards", str(args.synthetic_shards),
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
    check_peers_python(args)
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
    from render import loader_markdown  # noqa: PLC0415 - the children need none of it

    write_results(args, res, loader_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
