"""One rank of the fatal-data-error job in tests/test_hangs.py, launched by torchrun: a training
loop that all-reduces every step over a fastdata.DataLoader reading its node's URL (its own
fault proxy) into its node's cache. Writes ``result-RANK.json`` with what ended the loop and
when (``time.monotonic``, one clock for every process of the machine), then lets it propagate."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import timedelta


def main(config: str) -> int:
    with open(config, encoding="utf-8") as f:
        cfg = json.load(f)
    rank, node = int(os.environ["RANK"]), int(os.environ["GROUP_RANK"])
    # torchrun's SIGTERM (another local rank failed) may come before the loader iterates (and
    # installs its own): end through the report below either way
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import torch
    import torch.distributed as dist

    import fastdata

    dist.init_process_group("gloo", timeout=timedelta(seconds=cfg["collective_timeout"]))
    result: dict = {"rank": rank, "steps": 0, "error": None}
    try:
        order = fastdata.OrderOptions(window=cfg["window"], partitions=cfg["partitions"])
        ds = fastdata.TokenDataset(cfg["urls"][node], seq_len=cfg["seq_len"], seed=cfg["seed"],
                                   storage_options={"allow_insecure": True}, order=order,
                                   cache_dir=os.path.join(cfg["out"], f"cache-{node}"))
        loader = fastdata.DataLoader(ds, batch_size=cfg["micro"], num_workers=1)
        grad = torch.zeros(4)
        for batch in loader:
            grad += batch["input_ids"][:, :4].sum(0).float()
            dist.all_reduce(grad)  # the training step's collective
            result["steps"] += 1
            time.sleep(0.02)
    except BaseException as error:
        result["error"] = [type(error).__name__, str(error)]
        raise
    finally:
        result["t_end"] = time.monotonic()
        # torchrun's SIGTERM (sent when another local rank failed) must not cut the report short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        path = os.path.join(cfg["out"], f"result-{rank}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(result, f)
        os.replace(path + ".tmp", path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
