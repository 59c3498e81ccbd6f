"""The synthetic dataset of ``bench_loader.py``'s step 4: ``--synthetic-shards`` shards of
packed samples (10^6 x 1000 = 10^9 by default), metadata only.

The manifest is real (inline JSON, and fastdata's binary shard table where this fastdata
writes one); every shard file is a hard link to one of a few sparse template shards (valid
header and index, zero tokens), so a loader can open whichever shards its order picks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from _common import SEQ_LEN, log


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
