"""``fastdata bench``: the loader against a simulated step, locally, on Azurite and under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _loader import packed_dataset

from fastdata import metrics

pytestmark = pytest.mark.timeout(180)


def bench(*args: str, env: dict | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "bench", *args], text=True,
                          capture_output=True, timeout=150, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("bench")), docs=300)


def test_bench_a_local_directory(local, tmp_path):
    report = tmp_path / "r.json"
    out = bench(local, "--seq-len", "32", "--batch-size", "4", "--steps", "60", "--step-ms", "5",
                "--interval", "0.1", "--report", str(report))
    assert out.returncode == 0, out.stderr
    doc = json.loads(report.read_text())
    assert doc["metrics"]["loader.batches"] == 60
    assert doc["timeline"][-1]["steps"] == 60
    assert len(doc["timeline"]) >= 2
    assert all(s["tokens_per_s"] > 0 for s in doc["timeline"])
    for s in doc["timeline"]:  # the stages plotted stacked add up to the interval's data-wait
        assert sum(s[f"wait_{stage}_pct"] for stage in metrics.STAGES) == pytest.approx(s["data_wait_pct"])
    # 5 ms of "training" per step: the step time reported is at least that
    assert doc["metrics"]["loader.step.p50"] >= 0.005 * 0.8
    assert "data-wait" in out.stderr and "M tok/s" in out.stderr
    png = tmp_path / "r.png"
    if "plot skipped" not in out.stdout:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_azurite(azurite, tmp_path):
    import fsspec

    env = dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=azurite["conn"], FASTDATA_ALLOW_INSECURE="1")
    fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True).mkdir("bench")
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} " * 40}) + "\n" for i in range(400)))
    subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", str(src), "-o", "az://bench/ds",
                    "--shard-size", "16KB", "-q"], check=True, timeout=120, env=env)
    report = tmp_path / "r.json"
    out = bench("az://bench/ds", "--seq-len", "32", "--batch-size", "4", "--seconds", "3", "--step-ms", "2",
                "--cache-dir", str(tmp_path / "cache"), "--cache-limit", "8MB", "--report", str(report),
                env=env)
    assert out.returncode == 0, out.stderr
    m = json.loads(report.read_text())["metrics"]
    assert m["fetch.bytes"] > 0 and m["fetch.shards"] > 0
    assert m["cache.hits"] + m["cache.misses"] > 0
    key = azurite["conn"].split("AccountKey=")[1].split(";")[0]
    assert key not in out.stdout + out.stderr + report.read_text()


@pytest.mark.multiprocess
def test_bench_under_torchrun(local, tmp_path):
    report = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out = subprocess.run(
        [sys.executable, "-P", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "fastdata.cli.main", "bench", local, "--seq-len", "32", "--batch-size", "2", "--steps", "20",
         "--step-ms", "1", "--report", str(report), "--workers", "1"],
        text=True, capture_output=True, timeout=150, env=dict(env, OMP_NUM_THREADS="1"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads(report.read_text())["metrics"]
    assert m["job.ranks"] == 2
    assert m["loader.batches"] == 20
