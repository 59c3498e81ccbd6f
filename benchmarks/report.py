"""Append one benchmark run (machine, commit, tables) to a results Markdown file.

Called by ``benchmarks/run.sh``; takes the Markdown sections that bench_pack.py,
bench_reader.py, bench_loader.py and bench_remote.py wrote and puts them under a heading with the date, the
machine (cores, CPU model, RAM, load average before and after the run) and the git commit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLACEHOLDER = "<!-- no-run-yet -->"
HEADER = """# fastdata benchmark results

Runs of `benchmarks/run.sh`, oldest first. See `benchmarks/README.md` for what each number
means and for the caveats. Numbers from different machines, or from runs whose load average
was high (other work on the box), are not comparable.
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("--load-before", default="")
    ap.add_argument("--versions", default="", help="one line listing the tool versions")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("sections", nargs="*", type=Path)
    args = ap.parse_args(argv)

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks")
    untracked = git("status", "--porcelain", "--", "fastdata", "csrc")
    state = ""
    if dirty or any(line.startswith("??") for line in untracked.splitlines()):
        state = " (working tree had uncommitted changes outside benchmarks/)"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ncpu = os.cpu_count()

    out = [f"## {now}{' — ' + args.title if args.title else ''}", ""]
    out.append(f"- Machine: {ncpu} cores (`nproc`), {cpu_model()}, {ram_gib()} RAM, "
               f"{platform.system()} {platform.release()}, Python {platform.python_version()}")
    out.append(f"- Commit: `{commit}`{state}")
    if args.versions:
        out.append(f"- Versions: {args.versions}")
    out.append(f"- Load average (1/5/15 min) before: {args.load_before or 'n/a'}; "
               f"after: {load_after}")
    try:
        load1 = float(args.load_before.split()[0])
    except (IndexError, ValueError):
        load1 = 0.0
    busy = max(load1, os.getloadavg()[0])
    if busy > 1:
        out.append(f"- **Other work was running on this {ncpu}-core box during the run** "
                   f"(load average up to {busy:.2f} > 1): treat absolute numbers as low "
                   "estimates; the fastdata/peer ratios come from alternating runs in "
                   "the same time window and are the more robust figures.")
    for note in args.note:
        out.append(f"- {note}")
    out.append("")
    for section in args.sections:
        out.append(section.read_text().rstrip())
        out.append("")

    text = args.results.read_text() if args.results.exists() else HEADER
    if PLACEHOLDER in text:
        text = text[: text.index(PLACEHOLDER)].rstrip() + "\n"
    args.results.write_text(text.rstrip() + "\n\n" + "\n".join(out).rstrip() + "\n")
    print(f"appended run to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
