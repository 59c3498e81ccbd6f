"""Child process for tests/test_mixture.py: one rank of a gloo job reading a blend.

Run as ``python -P tests/_mixture_worker.py CONFIG.json`` under tests/_jobs.py. Every rank
reads ``steps`` micro-batches of ``global_batch / WORLD_SIZE`` samples of the blend
``sources`` (``[[path, weight], ...]``) and writes the sample ids of its batches, in order,
and the loader's state after them to ``result-RANK.json``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from datetime import timedelta

import torch.distributed as dist

import fastdata


def main() -> None:
    faulthandler.dump_traceback_later(100, exit=True)
    cfg = json.loads(open(sys.argv[1]).read())
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method=f"file://{cfg['init_file']}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=60))
    sources = [fastdata.Source(path, weight) for path, weight in cfg["sources"]]
    ds = fastdata.TokenDataset(sources, seq_len=cfg["seq_len"], seed=cfg["seed"])
    loader = fastdata.DataLoader(ds, batch_size=cfg["global_batch"] // world_size, num_workers=1)
    ids: list[list[int]] = []
    for batch in loader:
        ids.append(batch["sample_ids"].tolist())
        if len(ids) == cfg["steps"]:
            break
    with open(os.path.join(cfg["out"], f"result-{rank}.json"), "w") as f:
        json.dump({"ids": ids, "state": loader.state_dict()}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
