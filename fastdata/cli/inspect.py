"""``fastdata inspect URL``: what a dataset holds, and its first documents."""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from fastdata.errors import FastdataError
from fastdata.pack.tokenizers import BytesTokenizer, Tokenizer, TokenizerSpec, load_tokenizer
from fastdata.reader import Dataset, open_dataset
from fastdata.units import format_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="summarise a packed dataset",
                       description="Print the manifest summary, a document-length histogram and "
                                   "the first documents, decoded when the tokenizer is available.")
    p.add_argument("url", help="dataset directory or URL")
    p.add_argument("-n", "--docs", type=int, default=3, help="documents to show (default 3)")
    p.add_argument("--chars", type=int, default=300, help="characters shown per document")
    p.set_defaults(run=run)


def dataset_tokenizer(ds: Dataset) -> Tokenizer | None:
    """The tokenizer that packed ``ds``, when it can be rebuilt here without a download."""
    info = ds.tokenizer
    if info.kind == "bytes":
        return BytesTokenizer()
    if info.kind != "huggingface" or ds.store.size("tokenizer.json") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        with open(path, "wb") as f:
            f.write(ds.store.read_bytes("tokenizer.json"))
        try:
            tok = load_tokenizer(TokenizerSpec(path))
        except FastdataError:
            return None
    return tok if tok.info.fingerprint == info.fingerprint else None


def histogram(lengths: np.ndarray, width: int = 40) -> list[str]:
    """Text histogram of document lengths in power-of-two buckets."""
    if not len(lengths):
        return ["  (no documents)"]
    buckets = np.floor(np.log2(np.maximum(lengths, 1))).astype(int)
    counts = np.bincount(buckets)
    top = counts.max()
    rows = []
    for b, c in enumerate(counts):
        if c:
            lo, hi = 1 << b, (1 << (b + 1)) - 1
            bar = "#" * max(1, round(width * c / top))
            rows.append(f"  {lo:>9,}-{hi:<9,} {c:>10,} {bar}")
    return rows


def run(args: argparse.Namespace) -> int:
    with open_dataset(args.url) as ds:
        m, t = ds.manifest, ds.tokenizer
        stored = int(m.shards.column("stored_bytes").sum())
        raw = int(m.shards.column("raw_bytes").sum())
        print(f"dataset     {ds.store.display}")
        print(f"fingerprint {m.fingerprint}")
        print(f"shards      {len(m.shards):,} ({format_size(stored)} stored, {format_size(raw)} raw, "
              f"compression {m.compression or 'none'})")
        print(f"documents   {ds.num_docs:,}")
        print(f"tokens      {ds.num_tokens:,} ({m.dtype}{', with loss mask' if m.has_loss_mask else ''})")
        print(f"tokenizer   {t.kind} {t.name!r}, vocab {t.vocab_size:,}, eos {t.eos_id}, bos {t.bos_id}")
        lengths = ds.doc_lengths()
        if len(lengths):
            print(f"doc length  min {lengths.min():,}  median {int(np.median(lengths)):,}  "
                  f"mean {lengths.mean():,.1f}  max {lengths.max():,}")
        print("histogram (tokens per document)")
        print("\n".join(histogram(lengths)))
        tok = dataset_tokenizer(ds)
        for i in range(min(args.docs, ds.num_docs)):
            ids = ds.doc(i)
            text = tok.decode(ids.tolist()) if tok else " ".join(map(str, ids[:64]))
            more = "..." if len(text) > args.chars else ""
            print(f"--- document {i} ({len(ids):,} tokens) ---")
            print(text[: args.chars] + more)
    return 0
