"""A child for tests/test_hangs.py: iterate a fastdata.DataLoader on worker processes, SIGSTOP
one worker after the first batch (``stop``), or not (``resume``; ``whole`` says ``started``
after the first batch, for the test to stop the whole process group), and print one JSON
line: the digest of every batch received, the last state_dict(), the error and when it came."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time

import torch

import fastdata


def main() -> None:
    path, mode, strategy, timeout, state = sys.argv[1:6]
    torch.multiprocessing.set_sharing_strategy(strategy)
    ds = fastdata.TokenDataset(path, seq_len=31, batch_size=2, shuffle=True, seed=5)
    kwargs = {} if timeout == "default" else {"timeout": float(timeout)}
    loader = fastdata.DataLoader(ds, batch_size=2, backend="processes", num_workers=2, **kwargs)
    if state:
        loader.load_state_dict(state)
    out: dict = {"digests": [], "error": None}
    stopped, t0 = None, time.monotonic()
    it = iter(loader)
    try:
        for batch in it:
            out["digests"].append(hashlib.sha256(batch["input_ids"].numpy().tobytes()
                                                  + batch["labels"].numpy().tobytes()).hexdigest())
            out["state"] = loader.state_dict()
            if mode == "whole" and len(out["digests"]) == 1:
                print("started", flush=True)  # noqa: T201 - the test stops us all now
            if mode == "stop" and stopped is None:
                stopped = sorted(p.pid for p in multiprocessing.active_children())[1]
                os.kill(stopped, signal.SIGSTOP)
                out["stopped"], t0 = stopped, time.monotonic()
    except Exception as error:  # noqa: BLE001 - reported to the test
        out["error"] = [type(error).__name__, str(error)]
        out["after"] = time.monotonic() - t0
        out["stopped_alive"] = os.path.exists(f"/proc/{stopped}")
    del it
    out["threads"] = [t.name for t in threading.enumerate() if t.name.startswith("fastdata-")]
    print(json.dumps(out), flush=True)  # noqa: T201 - the report to the test


if __name__ == "__main__":
    main()
