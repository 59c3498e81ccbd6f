"""``fastdata import megatron PREFIX -o OUTPUT``: convert another format's dataset to shards."""

from __future__ import annotations

import argparse
import sys

from fastdata.cli.pack import storage_options
from fastdata.megatron.convert import ImportConfig, ImportProgress, import_megatron
from fastdata.units import format_size, parse_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert a dataset of another format to shards",
                       description="Convert a dataset written by another tool into fastdata shards "
                                   "plus a manifest with checksums.")
    kinds = p.add_subparsers(dest="kind", required=True)
    m = kinds.add_parser(
        "megatron", help="a Megatron-Core .bin/.idx pair",
        description="Convert a Megatron-Core IndexedDataset (PREFIX.bin + PREFIX.idx) into fastdata "
                    "shards: each Megatron sequence becomes one document, in order. Shards are cut where "
                    "reading the pair in place cuts its virtual shards, so both read the same samples.")
    m.add_argument("prefix", help="PREFIX, PREFIX.idx or PREFIX.bin (local path or fsspec URL)")
    m.add_argument("-o", "--output", required=True, help="output directory or fsspec URL")
    m.add_argument("--shard-size", default="64MiB",
                   help="bytes of the .bin per shard (64MiB, the in-place virtual shard size)")
    m.add_argument("--dtype", choices=("auto", "uint16", "uint32"), default="auto",
                   help="token dtype of the shards (auto: uint16 for 8/16-bit sources, else uint32)")
    m.add_argument("--vocab-size", type=int, help="vocabulary size to record (default: largest id + 1)")
    m.add_argument("--eos-id", type=int, help="EOS id to record (pads document-mode samples)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    m.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec option for remote input/output (repeatable)")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    m.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = ImportConfig(source=args.prefix, output=args.output, shard_size=parse_size(args.shard_size),
                          dtype=args.dtype, vocab_size=args.vocab_size, eos_id=args.eos_id,
                          overwrite=args.overwrite, storage_options=storage_options(args.storage_option))
    live = not args.quiet and sys.stderr.isatty()

    def show(p: ImportProgress) -> None:
        if live:
            sys.stderr.write(f"\r{p.shards} shards  {p.sequences:,} sequences  {p.tokens:,} tokens   ")
            sys.stderr.flush()

    manifest = import_megatron(config, progress=show)
    if live:
        sys.stderr.write("\n")
    stored = int(manifest.shards.column("stored_bytes").sum())
    print(f"imported {manifest.num_docs:,} sequences, {manifest.num_tokens:,} tokens into "
          f"{len(manifest.shards)} shards ({format_size(stored)}, {manifest.dtype}) at {args.output}")
    return 0
