"""One rank of tests/test_job_check.py: open this rank's dataset, take the first batch of a
fastdata.DataLoader, and write ``result-RANK.json`` (the error, the fingerprint, how long the
first batch and a second run of the identity check took)."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta


def wait_for(path: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)


def main(config: str) -> int:
    with open(config, encoding="utf-8") as f:
        cfg = json.load(f)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    import torch.distributed as dist

    import fastdata
    from fastdata.loader.job_check import compare

    dist.init_process_group("gloo", init_method=f"file://{cfg['init_file']}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=30))
    out = cfg["out"]
    if cfg["mode"] == "republish" and rank == 1:
        wait_for(os.path.join(out, "republished"))  # rank 0 opened the old version
    ds = fastdata.TokenDataset(cfg["paths"][rank], seq_len=31, batch_size=2, seed=cfg["seeds"][rank])
    if rank == 0:
        open(os.path.join(out, "opened-0"), "w").close()
    # "in-process": the TokenDataset iterated directly (or by a stock DataLoader without workers)
    loader = ds if cfg["backend"] == "in-process" else fastdata.DataLoader(
        ds, batch_size=2, backend=cfg["backend"], num_workers=1)
    world = ds.resolved_world()
    result: dict = {"fingerprint": ds.identity(world)["dataset"], "error": None, "batch": False}
    t0 = time.perf_counter()
    try:
        next(iter(loader))
        result["batch"] = True
    except fastdata.FastdataConfigError as error:
        result["error"] = str(error)
    result["first_batch_s"] = time.perf_counter() - t0
    if result["batch"]:
        dist.barrier()
        t0 = time.perf_counter()  # the check alone, on the job's own store, every rank at once
        compare(dist.distributed_c10d._get_default_store(), "probe/", ds.identity(world), rank, world_size)
        result["check_s"] = time.perf_counter() - t0
    with open(os.path.join(out, f"result-{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
