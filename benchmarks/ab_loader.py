"""A/B of the loader's steady throughput: this checkout against another fastdata checkout
(``--other``, imported through ``PYTHONPATH`` with a ``sitecustomize`` that hides this one's
editable install), on one local dataset, in alternating fresh processes.

    python benchmarks/ab_loader.py --dataset DIR --other /path/to/old/checkout [--pairs 3]

Modes: ``threads`` (``fastdata.DataLoader(batch_size=8, num_workers=2)``, 8 epochs),
``stock`` (``TokenDataset(batch_size=8)`` + torch ``DataLoader(batch_size=None, num_workers=2)``)
and ``sample`` (``TokenDataset()`` + torch ``DataLoader(batch_size=8, num_workers=2)``), 1,500
batches each after the first. The other checkout needs its compiled extension in place.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
import torch, fastdata
path, mode = sys.argv[1], sys.argv[2]
if mode == "threads":
    dl = fastdata.DataLoader(fastdata.TokenDataset(path, seq_len=2048, seed=0), batch_size=8, num_workers=2)
    for b in dl:
        break
    k, t = 0, time.perf_counter()
    for e in range(1, 9):
        dl.set_epoch(e)
        for b in dl:
            k += 1
else:
    ds = fastdata.TokenDataset(path, seq_len=2048, seed=0, batch_size=8 if mode == "stock" else None)
    it = iter(torch.utils.data.DataLoader(ds, batch_size=None if mode == "stock" else 8, num_workers=2))
    next(it)
    k, t = 0, time.perf_counter()
    for b in it:
        k += 1
        if k == 1500:
            break
print(json.dumps({"mode": mode, "batches": k, "Mtok_s": k * 8 * 2048 / (time.perf_counter() - t) / 1e6,
                  "fastdata": fastdata.__file__}))
"""
HIDE = ("import sys\nsys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__ "
        "and 'skbc' not in type(f).__module__]\n")


def run(dataset: str, mode: str, other: str | None) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as site:
        if other:
            Path(site, "sitecustomize.py").write_text(HIDE)
            env["PYTHONPATH"] = f"{site}:{other}"
        out = subprocess.run([sys.executable, "-P", "-c", CHILD, dataset, mode], capture_output=True,
                             text=True, env=env, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--other", required=True, help="the other fastdata checkout (its root)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--modes", default="threads,stock,sample")
    args = ap.parse_args()
    rows = []
    for mode in args.modes.split(","):
        for _ in range(args.pairs):
            before, after = run(args.dataset, mode, args.other), run(args.dataset, mode, None)
            rows.append({"mode": mode, "other": before["Mtok_s"], "this": after["Mtok_s"]})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
