"""The remote benchmark's dataset: ~``--tokens`` random uint16 tokens packed by ``fastdata
pack`` (cached between runs under the work dir), its sizes, and each shard's metadata size
(to tell a metadata GET from a payload GET at the proxy)."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from _common import log


def ensure_dataset(args: argparse.Namespace) -> Path:
    """A packed dataset of ~``--tokens`` random uint16 tokens (cached between runs)."""
    import numpy as np  # noqa: PLC0415

    out = args.work_dir / "dataset"
    key = {"tokens": args.tokens, "shard_size": args.shard_size, "seed": 0, "vocab": 50000}
    if args.block_size:
        key["block_size"] = args.block_size
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
           *(["--block-size", args.block_size] if args.block_size else []),
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
    block = max((int(getattr(s, "block_size", 0) or 0) for s in d.shards), default=0)
    return {"tokens": d.num_tokens, "shards": len(d.shards), "bytes": int(sizes.sum()),
            "max_shard": int(sizes.max()), "total_bytes": sum(p.stat().st_size for p in files),
            "block_size": block}


def shard_meta(path: Path) -> dict[str, int]:
    """Each shard's file name -> its metadata section's size (0 for a v1 shard)."""
    import fastdata  # noqa: PLC0415

    return {info.name.rsplit("/", 1)[-1]: int(getattr(info, "meta_bytes", 0) or 0)
            for info in fastdata.open_dataset(str(path)).shards}
