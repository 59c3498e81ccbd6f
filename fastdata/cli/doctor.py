"""``fastdata doctor``: is this node fit to run a job? One line per check, then a verdict."""

from __future__ import annotations

import argparse
import json
import os

from fastdata import environment
from fastdata.cli.pack import storage_options
from fastdata.doctor import QUICK, Budget, DoctorOptions, Report, run_checks
from fastdata.reader.files import default_cache_dir
from fastdata.units import parse_size
from fastdata.world import World


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor", help="check this node before a job",
        description="Check the cache directory (free space against the cache limit and the dataset's "
                    "minimum, write and read throughput, permissions, filesystem), the dataset URL "
                    "(reachable, credentials accepted, a dataset; latency and bandwidth) and the CPU and "
                    "torch thread settings. Exit 0 when the node is fit (warnings allowed), 1 naming the "
                    "failed checks. Credentials are never printed.")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="the node cache directory the job will use (default: the library's default, "
                        f"{default_cache_dir()})")
    p.add_argument("--cache-limit", default=None, metavar="SIZE", help="the job's cache_limit, e.g. 400GB")
    p.add_argument("--url", default=None, help="the dataset directory or URL the job will read")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec option for --url (repeatable; credentials also come from the environment, "
                        "e.g. AZURE_STORAGE_CONNECTION_STRING)")
    p.add_argument("--ranks-per-node", type=int, default=None, metavar="N",
                   help="ranks the job starts on this node (default: from FASTDATA_RANKS_PER_NODE / "
                        "LOCAL_WORLD_SIZE, else 1)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="the job's micro-batch per rank: with it, cache-space reports the live set the "
                        "node's cache must hold for the job's order (and fails a --cache-limit below it)")
    p.add_argument("--world-size", type=int, default=None, metavar="N",
                   help="ranks in the whole job (default: --ranks-per-node, one node)")
    p.add_argument("--window", type=int, default=16, metavar="SHARDS",
                   help="the job's OrderOptions.window (default 16)")
    p.add_argument("--partitions", type=int, default=None, metavar="P",
                   help="the job's OrderOptions.partitions (default: the global batch)")
    p.add_argument("--quick", action="store_true",
                   help=f"smaller measurements ({QUICK.disk_bytes >> 20} MiB written, "
                        f"{QUICK.read_bytes >> 20} MiB downloaded, at most {QUICK.seconds:g} s each)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def options_from_args(args: argparse.Namespace) -> DoctorOptions:
    env = environment.snapshot()
    ranks = args.ranks_per_node if args.ranks_per_node is not None else World.from_env(env).ranks_per_node
    return DoctorOptions(
        cache_dir=os.path.abspath(args.cache_dir or default_cache_dir()),
        cache_limit=None if args.cache_limit is None else parse_size(args.cache_limit),
        url=args.url, storage_options=storage_options(args.storage_option),
        ranks_per_node=ranks, env=env, budget=QUICK if args.quick else Budget(),
        batch_size=args.batch_size, world_size=args.world_size, window=args.window,
        partitions=args.partitions)


def render(report: Report) -> str:
    lines = [f"{c.status.upper():4} {c.name}: {c.detail}" for c in report.checks]
    warned = [c.name for c in report.checks if c.status == "warn"]
    if report.fit:
        noted = f" (warnings: {', '.join(warned)})" if warned else ""
        lines.append(f"fit: this node can run the job{noted}")
    else:
        lines.append(f"UNFIT: failed {', '.join(report.unfit)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = run_checks(options_from_args(args))
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return 0 if report.fit else 1
