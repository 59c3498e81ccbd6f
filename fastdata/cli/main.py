"""``fastdata`` command line: thin shells over the library.

Exit codes: 0 success, 1 a check failed (``verify``), 2 bad usage or input, 3 I/O
failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fastdata.errors import FastdataError, FastdataIOError


def build_parser() -> argparse.ArgumentParser:
    from fastdata import __version__
    from fastdata.cli import bench as bench_cmd
    from fastdata.cli import doctor as doctor_cmd
    from fastdata.cli import import_cmd
    from fastdata.cli import inspect as inspect_cmd
    from fastdata.cli import pack as pack_cmd
    from fastdata.cli import verify as verify_cmd

    parser = argparse.ArgumentParser(
        prog="fastdata",
        description="Pack corpora into token shards, read them back, and measure the data path.")
    parser.add_argument("--version", action="version", version=f"fastdata {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (pack_cmd, inspect_cmd, verify_cmd, doctor_cmd, bench_cmd, import_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="fastdata: %(levelname)s: %(message)s")
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("fastdata: interrupted", file=sys.stderr)
        return 130
    except FastdataError as e:
        print(f"fastdata: error: {e}", file=sys.stderr)
        return 3 if isinstance(e, FastdataIOError) else 2
    except OSError as e:  # disk full, permission denied: name the path, no traceback
        where = f" {e.filename}" if e.filename else ""
        print(f"fastdata: error:{where}: {e.strerror or e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
