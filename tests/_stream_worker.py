"""Child process for tests/test_multinode_stream.py: one fake rank streaming from blob storage.

Run as ``python -P tests/_stream_worker.py CONFIG.json`` with the torchrun environment (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, FASTDATA_NODE_ID). The rank builds a TokenDataset on
``url`` through its node's connection string (``conns[node]``, a fault proxy per node) and
node cache (``caches[node]``), iterates one epoch with a gloo all_gather per step, and records
what it observes as ``result-RANK.json``; the parent asserts.

Recorded per step: the micro-batch ids, the gathered global batch, the loader state, and a
digest of the micro-batch's ``input_ids`` and ``labels`` bytes (the parent recomputes it from a
local copy of the dataset, so the bytes that travelled through Azurite and the cache are
checked, not only the ids), and when it arrived (``time.monotonic()``, the same clock in
every process of the machine). Also: fastdata's log records, and every cached
shard file the node cache unlinked from this process (evictions and drops), with the time.

Config keys (see ``DEFAULTS``); ``save_step`` / ``ready_step`` / ``resume`` work as in
tests/_mp_worker.py: rank 0 writes ``checkpoint.json`` after ``save_step`` batches, every rank
writes ``ready-RANK.json`` after ``ready_step`` batches and sleeps until SIGKILLed.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import logging
import os
import sys
import time
from datetime import timedelta

DEFAULTS = {
    "seq_len": 32, "seed": 11, "window": 2, "partitions": None, "batch_size": 4, "num_workers": 2,
    "backend": "threads", "prefetch_bytes": None, "resume": None, "save_step": None,
    "ready_step": None, "collective_timeout": 60, "hang_timeout": 100,
}


class Records(logging.Handler):
    """Keeps fastdata's log records so the parent can look for warnings."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({"level": record.levelname, "logger": record.name,
                             "message": record.getMessage(), "t": time.monotonic()})


LOG = Records()
UNLINKED: list = []  # [time, file name] of the shard files the node cache unlinked here


def write_json(path: str, doc: object) -> None:
    """Write ``doc`` so that ``path`` is either absent, the previous file, or complete."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def watch_unlinks(events: list) -> None:
    """Record every shard file the node cache unlinks in this process (observation only).

    NodeCache removes a published file through ``_lstat(..., unlink=True)`` when it evicts or
    drops an entry (temp files start with '.', and are not recorded)."""
    from fastdata.storage.cache import NodeCache

    original = NodeCache._lstat

    def _lstat(self, namespace, fname, *, unlink=False):
        st = original(self, namespace, fname, unlink=unlink)
        if unlink and st is not None and not fname.startswith("."):
            events.append([time.monotonic(), fname])
        return st

    NodeCache._lstat = _lstat


def du(path: str) -> int:
    """Bytes of the files under ``path`` (temp files included), without the cache's bookkeeping."""
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".fastdata-cache")]  # LMDB, manifest copies
        for n in files:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
            except FileNotFoundError:
                pass
    return total


def digest(batch) -> str:
    h = hashlib.blake2b(digest_size=16)
    for key in ("input_ids", "labels"):
        h.update(batch[key].numpy().tobytes())
    return h.hexdigest()


def run(cfg: dict, rank: int, world_size: int, node: int, result: dict) -> None:
    import torch
    import torch.distributed as dist

    import fastdata

    ds = fastdata.TokenDataset(
        cfg["url"], seq_len=cfg["seq_len"], seed=cfg["seed"],
        order=fastdata.OrderOptions(window=cfg["window"], partitions=cfg["partitions"]),
        cache_dir=cfg["caches"][node], cache_limit=cfg["cache_limit"],
        storage_options={"connection_string": cfg["conns"][node], "allow_insecure": True})
    extra = {} if cfg["prefetch_bytes"] is None else {"prefetch_bytes": cfg["prefetch_bytes"]}
    loader = fastdata.DataLoader(ds, batch_size=cfg["batch_size"], num_workers=cfg["num_workers"],
                                 backend=cfg["backend"], **extra)
    result["world"] = vars(loader.world)
    result["len"] = len(loader)
    if cfg["resume"]:
        with open(cfg["resume"], encoding="utf-8") as f:
            loader.load_state_dict(json.load(f)["loader"])
    local, gathered, states, digests, times = [], [], [], [], []
    result["t_iter"] = time.monotonic()
    for batch in loader:
        if not local:
            result["t_first_batch"] = time.monotonic()
        times.append(time.monotonic())
        ids = batch["sample_ids"]
        local.append(ids.tolist())
        digests.append(digest(batch))
        out = [torch.empty_like(ids) for _ in range(world_size)]
        dist.all_gather(out, ids.contiguous(), async_op=True).wait(
            timeout=timedelta(seconds=cfg["collective_timeout"]))
        gathered.append(torch.cat(out).tolist())
        states.append(loader.state_dict())
        if len(local) == cfg["save_step"]:
            if rank == 0:
                write_json(os.path.join(cfg["out"], "checkpoint.json"),
                           {"loader": states[-1], "seen": gathered})
            write_json(os.path.join(cfg["out"], f"saved-{rank}.json"), states[-1])
        if len(local) == cfg["ready_step"]:
            write_json(os.path.join(cfg["out"], f"ready-{rank}.json"),
                       {"gathered": gathered, "digests": digests, "log": LOG.records,
                        "unlinked": UNLINKED})
            time.sleep(3600)  # the parent SIGKILLs us here
    result.update(local=local, gathered=gathered, states=states, digests=digests, times=times,
                  t_end=time.monotonic())
    dist.monitored_barrier(timeout=timedelta(seconds=cfg["collective_timeout"]), wait_all_ranks=True)
    result["barrier"] = True
    # every rank is done with the loader (its prefetch thread is closed): the node's counters
    # against the bytes on disk
    from fastdata.reader.files import node_cache

    root = cfg["caches"][node]
    result["cache_end"] = {"stats": node_cache(root, cfg["cache_limit"]).stats(), "du": du(root)}


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        cfg = {**DEFAULTS, **json.load(f)}
    faulthandler.dump_traceback_later(cfg["hang_timeout"], exit=True)
    t_start = time.monotonic()
    records = LOG
    logging.getLogger("fastdata").addHandler(records)
    logging.getLogger("fastdata").setLevel(logging.INFO)
    watch_unlinks(UNLINKED)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    node = int(os.environ.get("FASTDATA_NODE_ID") or os.environ["GROUP_RANK"])  # torchrun sets GROUP_RANK
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{cfg['init_file']}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=cfg["collective_timeout"]))
    result: dict = {"rank": rank, "node": node, "pid": os.getpid(), "t_start": t_start}
    try:
        run(cfg, rank, world_size, node, result)
    finally:
        result["log"] = records.records
        result["unlinked"] = UNLINKED
        write_json(os.path.join(cfg["out"], f"result-{rank}.json"), result)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
