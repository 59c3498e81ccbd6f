"""Child process for tests/test_multiprocess.py: one fake rank of a training job.

Run as ``python -P tests/_mp_worker.py CONFIG.json``. The topology comes from the environment
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, FASTDATA_NODE_ID) as under torchrun; the
config says what to do. The child only records what it observes (sample ids per step, loader
states, errors) as JSON files; the parent test asserts.

Config keys (see ``DEFAULTS``):
  scenario      "epochs" (iterate) or "explicit_world" (A8a: construct with world=World())
  dataset, seq_len, seed, window, drop_last, mode, batch_size, num_workers
  backend       "threads" or "processes" (fastdata.DataLoader), or "stock" (torch's DataLoader
                over TokenDataset(batch_size=...), worker processes when num_workers > 0)
  pg            initialise a gloo process group from ``init_file``
  epochs        how many times to call iter(loader)
  resume        a checkpoint file whose "loader" state is loaded before the first iter
  save_step     after this many batches of the first epoch, rank 0 writes ``checkpoint``
                (temp + fsync + rename) holding the loader state and the ids seen so far
  ready_step    after this many batches of the first epoch, write ``ready-RANK`` and sleep
                until killed
  claim_env     environment overrides applied after the process group is initialised
  slow_rank, sleep
                every rank sleeps ``sleep`` seconds per batch, ``slow_rank`` three times as long
  out           directory for ``result-RANK.json`` (and the checkpoint, ready files)
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import sys
import time
from datetime import timedelta

import numpy as np

DEFAULTS = {
    "scenario": "epochs", "seq_len": 32, "seed": 7, "window": 4, "drop_last": True, "mode": "packed",
    "batch_size": 4, "num_workers": 2, "backend": "threads", "pg": True, "epochs": 1,
    "resume": None, "save_step": None, "ready_step": None, "slow_rank": None, "sleep": 0.0,
    "collective_timeout": 40, "hang_timeout": 90, "check_data": True, "explicit_world": True,
    "claim_env": None,
}


class Records(logging.Handler):
    """Keeps fastdata's log records so the parent can count warnings."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({"level": record.levelname, "logger": record.name,
                             "message": record.getMessage()})


def write_json(path: str, doc: object) -> None:
    """Write ``doc`` so that ``path`` is either absent, the previous file, or complete."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def gather_ids(ids, world_size: int, timeout: float) -> list[int]:
    """all_gather this rank's micro-batch ids; the global batch in rank order."""
    import torch
    import torch.distributed as dist

    out = [torch.empty_like(ids) for _ in range(world_size)]
    dist.all_gather(out, ids.contiguous(), async_op=True).wait(timeout=timedelta(seconds=timeout))
    return torch.cat(out).tolist()


def make_dataset(cfg: dict, world=None):
    import fastdata

    node = env_int("FASTDATA_NODE_ID", 0)
    sampling = {"mode": cfg["mode"]}
    return fastdata.TokenDataset(
        cfg["dataset"], seq_len=cfg["seq_len"], shuffle=True, seed=cfg["seed"], sampling=sampling,
        order=fastdata.OrderOptions(window=cfg["window"], drop_last=cfg["drop_last"]), world=world,
        cache_dir=os.path.join(cfg["out"], f"cache-node{node}"))


def check_batch(ds, batch, b: int, seq_len: int) -> None:
    """The arrays belong to the sample ids they claim (the data travelled with its ids)."""
    ids = batch["sample_ids"]
    assert ids.shape == (b,) and str(ids.dtype) == "torch.int64", (ids.shape, ids.dtype)
    assert tuple(batch["input_ids"].shape) == (b, seq_len), batch["input_ids"].shape
    expected = ds.assembler()(ids.numpy())
    for key in ("input_ids", "labels"):
        assert np.array_equal(batch[key].numpy(), expected[key]), f"{key} do not match sample ids"
    padding = ids.numpy() == -1
    assert (batch["labels"].numpy()[padding] == -100).all(), "a padding row carries labels"


def run_epochs(cfg: dict, rank: int, world_size: int, result: dict) -> None:
    import fastdata

    ds = make_dataset(cfg)
    b = cfg["batch_size"]
    if cfg["backend"] == "stock":  # a stock torch DataLoader over the dataset's micro-batches
        import torch

        ds.batch_size = b
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=cfg["num_workers"])
        state_of = lambda: None  # noqa: E731 - the dataset's own state is per worker: not compared
        result["world"] = vars(ds.resolved_world())
        result["len"] = ds.steps_per_epoch()
    else:
        loader = fastdata.DataLoader(ds, batch_size=b, num_workers=cfg["num_workers"],
                                     backend=cfg["backend"])
        state_of = loader.state_dict
        result["world"] = vars(loader.world)
        result["len"] = len(loader)
    if cfg["resume"]:
        with open(cfg["resume"], encoding="utf-8") as f:
            checkpoint = json.load(f)
        loader.load_state_dict(checkpoint["loader"])
        result["loaded_state"] = state_of()
    pause = cfg["sleep"] * (3 if rank == cfg["slow_rank"] else 1)
    epochs = []
    for e in range(cfg["epochs"]):
        local, gathered, states = [], [], []
        if cfg["backend"] == "stock" and e > 0:
            ds.set_epoch(e)  # as with DistributedSampler: the stock loader's workers are copies
        for batch in loader:
            if cfg["check_data"]:
                check_batch(ds, batch, b, cfg["seq_len"])
            local.append(batch["sample_ids"].tolist())
            if cfg["pg"]:
                gathered.append(gather_ids(batch["sample_ids"], world_size, cfg["collective_timeout"]))
            states.append(state_of())
            if pause:
                time.sleep(pause)
            if e == 0 and len(local) == cfg["save_step"]:
                if rank == 0:
                    seen = gathered if cfg["pg"] else local
                    write_json(os.path.join(cfg["out"], "checkpoint.json"),
                               {"model": {"steps": len(local)}, "loader": state_of(),
                                "seen": seen})
                result["state_at_save"] = state_of()
                write_json(os.path.join(cfg["out"], f"saved-{rank}.json"), result["state_at_save"])
            if e == 0 and len(local) == cfg["ready_step"]:
                write_json(os.path.join(cfg["out"], f"ready-{rank}.json"), {"local": local})
                time.sleep(3600)  # the parent SIGKILLs us here
        epochs.append({"local": local, "gathered": gathered, "states": states,
                       "state_after": state_of()})
    result["epochs"] = epochs
    if cfg["pg"]:
        import torch.distributed as dist

        dist.monitored_barrier(timeout=timedelta(seconds=cfg["collective_timeout"]), wait_all_ranks=True)
        result["barrier"] = True


def explicit_world(cfg: dict, rank: int, world_size: int, result: dict) -> None:
    """A8a: a 1-rank world configured inside a larger process group (or, A8c, a rank whose
    environment claims another rank's number): where does it fail?"""
    import torch

    import fastdata

    def attempt(name, fn):
        try:
            value = fn()
        except fastdata.FastdataConfigError as e:
            result[name] = {"raised": type(e).__name__, "message": str(e)}
            return None
        result[name] = {"raised": None}
        return value

    one = fastdata.World() if cfg["explicit_world"] else None
    attempt("construct", lambda: make_dataset(cfg, world=one))

    def unchecked():  # the same wrong world, set after construction: later guards must hold too
        import torch.distributed as dist

        true = fastdata.World(rank=dist.get_rank(), world_size=dist.get_world_size(),
                              local_rank=dist.get_rank() % 2, ranks_per_node=2)
        ds = make_dataset(cfg, world=true)
        ds.world = one
        return ds

    ds = unchecked()
    attempt("dataloader", lambda: fastdata.DataLoader(ds, batch_size=cfg["batch_size"], num_workers=0))
    ds = unchecked()
    ds.batch_size = cfg["batch_size"]
    stock = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
    result["stock_ids"] = []
    attempt("stock_iter", lambda: [result["stock_ids"].append(b["sample_ids"].tolist()) for b in stock])


SCENARIOS = {"epochs": run_epochs, "explicit_world": explicit_world}


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        cfg = {**DEFAULTS, **json.load(f)}
    faulthandler.dump_traceback_later(cfg["hang_timeout"], exit=True)
    records = Records()
    logging.getLogger("fastdata").addHandler(records)
    logging.getLogger("fastdata").setLevel(logging.INFO)
    rank, world_size = env_int("RANK", 0), env_int("WORLD_SIZE", 1)
    if cfg["pg"]:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"file://{cfg['init_file']}", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=cfg["collective_timeout"]))
    if cfg["claim_env"]:  # the launcher's environment lies about this rank (after the group is up)
        os.environ.update(cfg["claim_env"])
    result: dict = {"rank": rank, "world_size": world_size, "pid": os.getpid()}
    SCENARIOS[cfg["scenario"]](cfg, rank, world_size, result)
    result["log"] = records.records
    write_json(os.path.join(cfg["out"], f"result-{rank}.json"), result)
    if cfg["pg"]:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
