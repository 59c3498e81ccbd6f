"""Nothing hangs (issue 12 item 4, audit §5.10 / F6): a worker process of the processes backend
that is stopped (SIGSTOP) or stuck ends in FastdataWorkerError naming it, whatever torch's
sharing strategy, and the last state_dict() resumes the epoch byte-identically."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _loader import packed_dataset

import fastdata
from fastdata.loader.watchdog import REPORT_WITHIN, STOPPED_AFTER

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]
CHILD = Path(__file__).with_name("_hang_worker.py")


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("hangs")), docs=400)


def child(path: str, mode: str, strategy: str = "file_descriptor", timeout: str = "default",
          state: str = "") -> dict:
    proc = subprocess.run([sys.executable, "-P", str(CHILD), path, mode, strategy, timeout, state],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reference(path: str) -> list[str]:
    ds = fastdata.TokenDataset(path, seq_len=31, batch_size=2, shuffle=True, seed=5)
    loader = fastdata.DataLoader(ds, batch_size=2, num_workers=0)
    return [hashlib.sha256(b["input_ids"].numpy().tobytes() + b["labels"].numpy().tobytes()).hexdigest()
            for b in loader]


def check_named(out: dict, bound: float) -> None:
    kind, message = out["error"]
    assert kind == "FastdataWorkerError", out["error"]
    assert f"(pid {out['stopped']})" in message and "worker 1 " in message, message
    assert out["after"] < bound, out["after"]
    assert not out["stopped_alive"]  # ended, not left stopped behind
    assert out["threads"] == []  # no watchdog or other fastdata thread outlives the iterator


def test_stopped_worker_with_default_timeout_is_named_and_the_epoch_resumes_exactly(path):
    first = child(path, "stop")
    check_named(first, STOPPED_AFTER + REPORT_WITHIN + 2)
    assert "stopped (SIGSTOP)" in first["error"][1]
    rest = child(path, "resume", state=json.dumps(first["state"]))
    assert rest["error"] is None
    assert first["digests"] + rest["digests"] == reference(path)


@pytest.mark.parametrize("strategy", ["file_descriptor", "file_system"])
def test_stuck_worker_ends_within_timeout_whatever_the_sharing_strategy(path, strategy):
    out = child(path, "stop", strategy, timeout="2")
    check_named(out, 2 + REPORT_WITHIN + 2)
    assert "timeout=2 s" in out["error"][1]


def test_timeout_must_not_be_negative(path):
    ds = fastdata.TokenDataset(path, seq_len=31, batch_size=2)
    with pytest.raises(fastdata.FastdataConfigError, match="timeout"):
        fastdata.DataLoader(ds, batch_size=2, backend="processes", timeout=-1)
