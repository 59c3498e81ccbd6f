"""fastdata pack is crash-safe and resumable (E8): SIGKILL at pause points, re-run, same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from _corpus import files_bytes, make_docs, write_jsonl

import fastdata

pytestmark = [pytest.mark.timeout(180), pytest.mark.multiprocess]


def pack_cmd(src, out, *extra):
    return [sys.executable, "-P", "-m", "fastdata.cli.main", "pack", *src, "-o", str(out),
            "--shard-size", "8KB", "--workers", "2", "-q", *extra]


def kill_at(site: str, hit: int, cmd: list[str], tmp_path) -> None:
    """Run ``cmd`` until it reaches pause point ``site`` for the ``hit``-th time; SIGKILL it."""
    env = dict(os.environ, FASTDATA_TEST_PAUSE=f"{site}:{hit}",
               FASTDATA_TEST_PAUSE_DIR=str(tmp_path))
    ready = tmp_path / f"{site}.ready"
    ready.unlink(missing_ok=True)
    log = tmp_path / f"{site}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 90
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"pack ended before {site}: {log.read_text()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"pack never reached {site}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the pack and its worker processes
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    return [write_jsonl(str(d / f"part{k}.jsonl"), make_docs(300, seed=10 + k)) for k in range(3)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("ref") / "ds"
    subprocess.run(pack_cmd(corpus, out), check=True, timeout=120)
    return files_bytes(str(out))


@pytest.mark.parametrize(("site", "hit"), [("mid_shard", 7), ("after_shards_before_manifest", 1)])
def test_kill_then_rerun_gives_identical_bytes(tmp_path, corpus, reference, site, hit):
    out = tmp_path / "ds"
    kill_at(site, hit, pack_cmd(corpus, out), tmp_path)
    # killed: no manifest, so readers refuse the prefix
    assert not (out / "manifest.json").exists()
    with pytest.raises(fastdata.FastdataFormatError, match="does not exist"):
        fastdata.open_dataset(str(out))
    assert (out / ".fastdata-pack.json").exists()
    finished = json.loads((out / ".fastdata-pack.json").read_text())["shards"]
    assert finished, "the kill point should come after some shards were published"
    proc = subprocess.run(pack_cmd(corpus, out), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"resumed after {len(finished)} finished shards" in proc.stdout
    assert files_bytes(str(out)) == reference  # temp files and journal gone, same bytes


def test_rerun_with_other_arguments_is_refused(tmp_path, corpus):
    out = tmp_path / "ds"
    kill_at("mid_shard", 7, pack_cmd(corpus, out), tmp_path)
    proc = subprocess.run(pack_cmd(corpus, out, "--no-eos"), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "unfinished pack with other inputs or arguments" in proc.stderr
    proc = subprocess.run(pack_cmd(corpus, out, "--no-eos", "--overwrite"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_missing_shard_in_journal_restarts_from_scratch(tmp_path, corpus, reference):
    out = tmp_path / "ds"
    kill_at("mid_shard", 7, pack_cmd(corpus, out), tmp_path)
    first = json.loads((out / ".fastdata-pack.json").read_text())["shards"][0]["name"]
    (out / first).unlink()
    proc = subprocess.run(pack_cmd(corpus, out), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "missing or damaged" in proc.stderr
    assert files_bytes(str(out)) == reference
