"""``fastdata doctor`` with the job's order settings reports the live set a node's cache must
hold, by the loader's own rule: at that limit a TokenDataset keeps its working set pinned,
one byte less and it does not (and the doctor says which window would fit)."""

from __future__ import annotations

import pytest
from _loader import packed_dataset

import fastdata
from fastdata.doctor import DoctorOptions
from fastdata.doctor.cache import cache_checks
from fastdata.reader.manifest import load_manifest
from fastdata.storage.remote import Store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def zstd_data(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("live")), docs=900, seed=4, compression="zstd")


def space(url: str, tmp_path, limit: int | None, **job):
    options = DoctorOptions(cache_dir=str(tmp_path / "c"), cache_limit=limit, url=url, ranks_per_node=1,
                            **job)
    [check] = [c for c in cache_checks(options, load_manifest(Store(url))) if c.name == "cache-space"]
    return check


def test_the_live_set_is_the_loaders_advised_limit(zstd_data, tmp_path):
    job = {"batch_size": 2, "partitions": 2, "window": 8}
    live = space(zstd_data, tmp_path, None, **job).values["live_set"]
    order = fastdata.OrderOptions(partitions=2, window=8)
    def loader_dataset(limit: int, where: str):
        return fastdata.TokenDataset(zstd_data, seq_len=32, batch_size=2, order=order,
                                     cache_dir=str(tmp_path / where), cache_limit=limit)

    at, below = loader_dataset(live, "a"), loader_dataset(live - 1, "b")
    assert not at.keeps_few_shards and below.keeps_few_shards
    ok = space(zstd_data, tmp_path, live, **job)
    assert ok.status == "pass" and f"this job's live set on this node is {live} bytes" in ok.detail
    short = space(zstd_data, tmp_path, live - 1, **job)
    assert short.status == "fail"
    assert f"below the live set of this job on this node, {live} bytes" in short.detail
    assert "OrderOptions(window=7) fits this limit" in short.detail


def test_without_the_jobs_batch_size_no_live_set_is_claimed(zstd_data, tmp_path):
    check = space(zstd_data, tmp_path, 1 << 30)
    assert "live_set" not in check.values and "live set" not in check.detail


def test_the_command_line_reports_the_live_set(zstd_data, tmp_path):
    import json
    import subprocess
    import sys

    job = ["--batch-size", "2", "--partitions", "2", "--window", "8"]
    live = space(zstd_data, tmp_path, None, batch_size=2, partitions=2, window=8).values["live_set"]
    args = ["doctor", "--quick", "--json", "--cache-dir", str(tmp_path / "c"), "--url", zstd_data,
            "--cache-limit", str(live - 1), *job]
    out = subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", *args], capture_output=True,
                         text=True, timeout=100)
    report = json.loads(out.stdout)
    [check] = [c for c in report["checks"] if c["name"] == "cache-space"]
    assert out.returncode == 1 and check["status"] == "fail" and check["values"]["live_set"] == live
