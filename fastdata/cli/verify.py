"""``fastdata verify URL``: re-hash every shard (and every block of a v1.1 shard) against the manifest."""

from __future__ import annotations

import argparse

from fastdata.reader.verify import verify_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="re-hash every shard",
                       description="Check every shard's size, hash and structure against the "
                                   "manifest, and (format v1.1) its metadata section and every "
                                   "block's hash; exit 1 naming each bad shard, and its bad blocks "
                                   "with their byte ranges.")
    p.add_argument("url", help="dataset directory or URL")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    manifest, problems = verify_dataset(args.url)
    for problem in problems:
        print(f"BAD {problem.name}: {problem.message}")
    good = len(manifest.shards) - len(problems)
    print(f"{good} of {len(manifest.shards)} shards OK")
    return 1 if problems else 0
