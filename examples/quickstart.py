"""The main job end to end on the bundled corpus: pack, inspect, verify, read back.

    python examples/quickstart.py [OUTPUT_DIR]

Packs examples/corpus/stdlib_docs.jsonl and stdlib_docs.parquet with the built-in byte
tokenizer (and the chat sample with loss masks), checks them, reads every document back
through ``fastdata.open_dataset`` and prints what happened and how fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import fastdata

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def sh(*args: str) -> None:
    print(f"\n$ fastdata {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "fastdata.cli.main", *args], check=True)


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="fastdata-quickstart-")
    web = os.path.join(out, "stdlib")
    chat = os.path.join(out, "chat")
    sh("pack", os.path.join(CORPUS, "stdlib_docs.jsonl"), os.path.join(CORPUS, "stdlib_docs.parquet"),
       "-o", web, "--shard-size", "256KB", "--workers", "2", "--overwrite")
    sh("pack", os.path.join(CORPUS, "chat.jsonl"), "-o", chat, "--chat", "--overwrite",
       "--compression", "zstd")
    sh("inspect", web, "--docs", "2")
    sh("verify", web)
    sh("verify", chat)

    print("\n# reading back through the library")
    t0 = time.perf_counter()
    with fastdata.open_dataset(web) as ds:
        opened = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = sum(len(ds.doc(i)) for i in range(ds.num_docs))
        per_doc = time.perf_counter() - t0
        t0 = time.perf_counter()
        everything = ds.tokens(0, ds.num_tokens)
        ranged = time.perf_counter() - t0
        print(f"{ds}: opened in {opened * 1e3:.1f} ms")
        print(f"  doc(i) for all {ds.num_docs:,} documents: {total:,} tokens in {per_doc * 1e3:.1f} ms "
              f"({ds.num_docs / per_doc:,.0f} docs/s, zero-copy views)")
        print(f"  tokens(0, {ds.num_tokens:,}) across {len(ds.shards)} shards: {ranged * 1e3:.1f} ms "
              f"({everything.nbytes / ranged / 1e9:.2f} GB/s)")
        first = bytes(ds.doc(0)[:-1].astype(np.uint8)).decode("utf-8")
        print(f"  document 0 decoded: {first[:70]!r}")
    with fastdata.open_dataset(chat) as ds:
        mask = ds.loss_mask(0)
        print(f"{ds}: document 0 has {len(mask)} tokens, {int(mask.sum())} of them trained "
              "(assistant turns)")
    print(f"\noutput left in {out}")


if __name__ == "__main__":
    main()
