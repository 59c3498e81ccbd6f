"""Child process for tests/test_metrics.py: one rank of a 2-rank gloo job asking for the job view.

Run as ``python -P tests/_metrics_worker.py CONFIG.json`` under tests/_jobs.py. Rank ``slow_rank``
gets a known delay before every micro-batch (the dataset's batch assembly is wrapped in a
sleep of ``delay`` seconds); every rank reads ``steps`` batches, then all call
``loader.metrics(all_ranks=True)`` together and write it to ``result-RANK.json``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
from datetime import timedelta

import torch.distributed as dist

import fastdata


def main() -> None:
    faulthandler.dump_traceback_later(100, exit=True)
    cfg = json.loads(open(sys.argv[1]).read())
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", init_method=f"file://{cfg['init_file']}", rank=rank,
                            world_size=int(os.environ["WORLD_SIZE"]), timeout=timedelta(seconds=60))
    ds = fastdata.TokenDataset(cfg["dataset"], seq_len=32, seed=1)
    loader = fastdata.DataLoader(ds, batch_size=2, num_workers=0)
    if rank == cfg["slow_rank"]:
        assemble = loader._make

        def slow(plan, steps):
            time.sleep(cfg["delay"] * len(steps))  # one delay per step of the chunk
            return assemble(plan, steps)

        loader._make = slow
    it = iter(loader)
    for _ in range(cfg["steps"]):
        next(it)
    snap = loader.metrics(all_ranks=True)
    with open(os.path.join(cfg["out"], f"result-{rank}.json"), "w") as f:
        json.dump(snap, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
