"""``fastdata pack INPUT... -o OUTPUT``."""

from __future__ import annotations

import argparse
import os
import sys
import time

from fastdata import environment
from fastdata.pack.api import DEFAULTS, build_config
from fastdata.pack.pipeline import PackConfig, PackProgress, PackResult, pack
from fastdata.units import format_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="tokenize a corpus into shards",
                       description="Tokenize JSONL, Parquet, text or WebDataset tar files into "
                                   "fastdata shards plus a manifest, resumably.")
    p.add_argument("inputs", nargs="+",
                   help="input files, directories, globs or fsspec URLs (az://, s3://, gs://, https://), "
                        "Hugging Face save_to_disk directories")
    p.add_argument("-o", "--output", required=True, help="output directory or fsspec URL")
    p.add_argument("--tokenizer", default="bytes",
                   help="bytes (default) | PATH/tokenizer.json | tiktoken:NAME | none")
    p.add_argument("--text-field", default="text", help="JSON/Parquet field with the text")
    p.add_argument("--text-mode", choices=("file", "line"), default="file",
                   help="plain text: one document per file (default) or per line")
    p.add_argument("--chat", action="store_true",
                   help="records hold chat messages; only assistant turns carry loss")
    p.add_argument("--messages-field", default="messages", help="field with chat messages")
    p.add_argument("--pretokenized", action="store_true",
                   help="the text field holds lists of token ids")
    p.add_argument("--vocab-size", type=int, help="vocabulary of pre-tokenized ids (--tokenizer none)")
    p.add_argument("--eos-id", type=int, help="EOS id for --tokenizer none")
    p.add_argument("--bos-id", type=int, help="BOS id for --tokenizer none")
    p.add_argument("--eos-token", help="EOS token text, when the tokenizer's is not found")
    p.add_argument("--bos-token", help="BOS token text")
    p.add_argument("--no-eos", action="store_true", help="do not append EOS to documents")
    p.add_argument("--bos", action="store_true", help="prepend BOS to documents")
    p.add_argument("--wds-member", help="WebDataset member extension holding the text")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="tokenizer processes, or the CPUs of a local Ray (default: all cores); "
                        "output is identical for any N")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: processes on this machine (default); ray: Ray tasks on a cluster, "
                        "same output bytes (needs fastdata[ray])")
    p.add_argument("--ray-address", default=environment.ray_address(),
                   help="Ray cluster to run on with --engine ray, e.g. auto or ray://HEAD:10001 "
                        "(default: $RAY_ADDRESS, else a local Ray with --workers CPUs)")
    p.add_argument("--shard-size", default="256MB", help="target raw size of a shard (256MB)")
    p.add_argument("--block-size", default="1MiB",
                   help="bytes per verified block of a shard (format v1.1; a power of two, 1MB = 1 MiB), "
                        "or none for format v1 shards without a block table (default 1MiB)")
    p.add_argument("--compression", choices=("none", "zstd"), default="none")
    p.add_argument("--dtype", choices=("auto", "uint16", "uint32"), default="auto")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="bad records: stop with file:line (default) or skip and count them")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec option for remote inputs and output (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(run=run)


def storage_options(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"fastdata: error: --storage-option wants KEY=VALUE, got {key!r}")
        out[key] = value
    return out


def config_from_args(args: argparse.Namespace) -> PackConfig:
    """The flags as ``fastdata.pack``'s keywords, through the same builder (same bytes)."""
    options = {k: getattr(args, k) for k in DEFAULTS if k not in ("storage_options", "engine",
                                                                  "ray_address")}
    options["storage_options"] = storage_options(args.storage_option)
    return build_config(args.inputs, args.output, options)


class _ProgressLine:
    """One self-updating status line on a terminal; nothing when piped."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p: PackProgress) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        t = max(p.elapsed, 1e-9)
        sys.stderr.write(
            f"\r{p.docs:,} docs  {p.tokens:,} tokens  {p.shards} shards | {p.docs / t:,.0f} docs/s  "
            f"{p.tokens / t:,.0f} tok/s  {p.input_bytes / t / 1e6:,.1f} MB/s   ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _pack(args: argparse.Namespace, config: PackConfig, line: _ProgressLine) -> PackResult:
    if args.engine == "ray":
        from fastdata.pack.ray_engine import RayOptions, pack_on_ray

        return pack_on_ray(config, RayOptions(address=args.ray_address), progress=line)
    return pack(config, progress=line)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    line = _ProgressLine(not args.quiet)
    try:
        result = _pack(args, config, line)
    finally:
        line.done()
    m, p = result.manifest, result.progress
    t = max(p.elapsed, 1e-9)
    stored = int(m.shards.column("stored_bytes").sum())
    resumed = ""
    if p.resumed_shards or p.resumed_tasks:
        tasks = f", {p.resumed_tasks} encoded input tasks" if args.engine == "ray" else ""
        resumed = f" (resumed after {p.resumed_shards} finished shards{tasks})"
    print(f"packed {m.num_docs:,} documents, {m.num_tokens:,} tokens into {len(m.shards)} shards "
          f"({format_size(stored)}, {m.dtype}) at {args.output}{resumed}")
    print(f"  this run: {p.docs:,} docs in {t:.2f} s: {p.docs / t:,.0f} docs/s, "
          f"{p.tokens / t:,.0f} tokens/s, {p.input_bytes / t / 1e6:,.1f} MB/s of input "
          + ("on Ray" if args.engine == "ray" else f"with {config.workers} workers"))
    if p.skipped:
        total = sum(p.skipped.values())
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(p.skipped.items()))
        print(f"  skipped {total} records: {reasons}")
        for example in p.first_skipped:
            print(f"    e.g. {example}")
    return 0
