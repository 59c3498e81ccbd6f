"""One dataset per job (issue 12 item 5, audit §5.6): the ranks of a gloo job compare their
dataset fingerprint and order settings when the loader starts, and refuse, on every rank and
before the first batch, naming both fingerprints; the same dataset starts with no error."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

import _jobs
import pytest
import torch.distributed as dist
from _loader import packed_dataset

import fastdata
from fastdata.loader.job_check import compare

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]
WORKER = Path(__file__).with_name("_job_check_worker.py")


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobcheck")
    return [packed_dataset(str(root / f"v{i}"), docs=120, seed=i) for i in (1, 2)]


def fingerprint(path: str) -> str:
    ds = fastdata.TokenDataset(path, seq_len=31, batch_size=2)
    return ds.identity(ds.resolved_world())["dataset"]


def run_job(tmp_path: Path, paths: list[str], *, seeds=(0, 0), mode: str = "plain",
            backend: str = "threads", republish: tuple[str, str] | None = None) -> list[dict]:
    job = _jobs.Job(WORKER, tmp_path / "job", 1, 2, paths=paths, seeds=list(seeds), mode=mode,
                    backend=backend)
    try:
        if republish is not None:  # rank 0 has opened v1: v2 replaces it at the same path
            opened = job.dir / "opened-0"
            deadline = time.monotonic() + 60
            while not opened.exists():
                assert time.monotonic() < deadline, job.logs()
                time.sleep(0.02)
            target, new = republish
            shutil.rmtree(target)
            shutil.copytree(new, target)
            (job.dir / "republished").touch()
        job.wait(timeout=90)
        return [json.loads((job.dir / f"result-{r}.json").read_text()) for r in range(2)]
    finally:
        job.kill()


def check_refused(results: list[dict], first: str, second: str) -> None:
    assert first != second
    for r in results:
        assert not r["batch"], "a batch was delivered before the check refused"
        assert r["error"] is not None and first in r["error"] and second in r["error"], r["error"]


@pytest.mark.parametrize("backend", ["threads", "processes", "in-process"])
def test_ranks_given_different_datasets_both_refuse_naming_both_fingerprints(tmp_path, versions, backend):
    results = run_job(tmp_path, versions, backend=backend)
    check_refused(results, fingerprint(versions[0]), fingerprint(versions[1]))


def test_a_dataset_republished_at_the_same_path_while_the_job_starts_is_refused(tmp_path, versions):
    target = tmp_path / "published" / "ds"
    shutil.copytree(versions[0], target)
    results = run_job(tmp_path, [str(target)] * 2, mode="republish",
                      republish=(str(target), versions[1]))
    assert [r["fingerprint"] for r in results] == [fingerprint(versions[0]), fingerprint(versions[1])]
    check_refused(results, fingerprint(versions[0]), fingerprint(versions[1]))


def test_other_order_settings_are_refused_too(tmp_path, versions):
    results = run_job(tmp_path, [versions[0]] * 2, seeds=(0, 1))
    for r in results:
        assert not r["batch"] and "seed 0 vs 1" in r["error"], r["error"]


def test_the_same_dataset_starts_without_error_or_delay(tmp_path, versions):
    results = run_job(tmp_path, [versions[0]] * 2)
    for r in results:
        assert r["batch"] and r["error"] is None
        assert r["check_s"] < 0.5, r["check_s"]  # a few store requests (measured ~ms)


def test_a_rank_that_never_starts_the_dataset_is_passed_over_with_a_warning(tmp_path, caplog):
    store = dist.FileStore(str(tmp_path / "store"), 2)  # a real store; rank 1 never comes
    done = threading.Event()

    def rank0() -> None:
        compare(store, "p/", {"dataset": "a"}, 0, 2, wait=0.5)
        done.set()

    with caplog.at_level(logging.WARNING, "fastdata.loader.job_check"):
        t = threading.Thread(target=rank0)
        t.start()
        t.join(10)
    assert done.is_set()
    assert "not every rank of the job started this dataset" in caplog.text
