"""fastdata pack --engine ray: the same bytes as the local engine, a killed task finishes on a re-run.

One local Ray (2 CPUs) serves the whole module; every Ray pack is compared byte for byte,
file by file (manifest included: it holds no time stamps), with a local pack of the same
inputs and arguments.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from _corpus import files_bytes, make_docs, train_bpe, write_jsonl

from fastdata.cli.main import main
from fastdata.errors import FastdataConfigError, FastdataError, FastdataInputError, FastdataIOError
from fastdata.format.spec import MANIFEST_NAME
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.pipeline import PackConfig, pack
from fastdata.pack.ray_engine import AREA, JOB_RECORD, RayOptions, pack_on_ray
from fastdata.pack.shards import plan_shards
from fastdata.pack.sources import ReadOptions, expand_inputs, plan_tasks
from fastdata.pack.tokenizers import TokenizerSpec

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.timeout(150)]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """JSONL, gzipped JSONL and a Parquet file of 5 row groups: 7 input tasks; and chats."""
    d = tmp_path_factory.mktemp("ray-corpus")
    docs = make_docs(500, seed=11)
    write_jsonl(str(d / "a.jsonl"), docs[:200])
    with gzip.open(d / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in docs[200:300])
    pq.write_table(pa.table({"text": docs[300:]}), str(d / "c.parquet"), row_group_size=40)
    chats = [{"messages": [{"role": "user", "content": t[:40]}, {"role": "assistant", "content": t}]}
             for t in docs[:120]]
    (d / "chat").mkdir()
    with open(d / "chat" / "chat.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(c) + "\n" for c in chats)
    bpe = train_bpe(str(tmp_path_factory.mktemp("ray-tok") / "tokenizer.json"), docs)
    return {"plain": [str(d / n) for n in ("a.jsonl", "b.jsonl.gz", "c.parquet")],
            "chat": [str(d / "chat")], "bpe": bpe}


def config(inputs, out, *, tokenizer="bytes", chat=False, **kw) -> PackConfig:
    encode = kw.pop("encode", None) or EncodeOptions(ReadOptions(chat=chat), TokenizerSpec(tokenizer))
    return PackConfig(inputs=tuple(inputs), output=str(out), encode=encode,
                      shard_size=kw.pop("shard_size", 8192), **kw)


def assert_same_dataset(local, other) -> None:
    assert not os.path.exists(os.path.join(other, AREA)), "the temp area is left behind"
    want, got = files_bytes(str(local)), files_bytes(str(other))
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs"


@pytest.mark.parametrize(("tokenizer", "compression", "chat"), [
    ("bytes", None, False), ("bpe", "zstd", False), ("bytes", None, True)])
def test_ray_pack_equals_local_pack(tmp_path, corpus, tokenizer, compression, chat):
    inputs = corpus["chat" if chat else "plain"]
    tok = corpus["bpe"] if tokenizer == "bpe" else tokenizer
    ref = pack(config(inputs, tmp_path / "local", tokenizer=tok, chat=chat, compression=compression))
    result = pack_on_ray(config(inputs, tmp_path / "ray", tokenizer=tok, chat=chat,
                                compression=compression, workers=2))
    assert len(ref.manifest.shards) >= 8  # the stream was really cut, across task boundaries
    assert_same_dataset(tmp_path / "local", tmp_path / "ray")
    p = result.progress
    assert (p.docs, p.tokens, p.input_bytes) == (ref.progress.docs, ref.progress.tokens,
                                                 ref.progress.input_bytes)
    assert (p.shards, p.resumed_shards, p.resumed_tasks) == (len(ref.manifest.shards), 0, 0)


def test_cli_engine_ray_equals_cli_local(tmp_path, corpus, capsys):
    common = [*corpus["plain"], "--shard-size", "8KB", "--compression", "zstd", "-q"]
    assert main(["pack", *common, "-o", str(tmp_path / "local"), "--workers", "1"]) == 0
    assert main(["pack", *common, "-o", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    assert "on Ray" in capsys.readouterr().out
    assert_same_dataset(tmp_path / "local", tmp_path / "ray")


def num_tasks(corpus) -> int:
    return len(plan_tasks(expand_inputs(corpus["plain"]), ReadOptions()))


def run_catching(cfg: PackConfig, failures: list[BaseException]) -> None:
    """A Ray pack without task retries, its failure kept for the test thread."""
    try:
        pack_on_ray(cfg, RayOptions(max_retries=0))
    except BaseException as e:  # noqa: BLE001 - handed to the test thread
        failures.append(e)


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("phase", ["encode", "shard"])
def test_killed_task_then_rerun_finishes_with_identical_bytes(tmp_path, corpus, monkeypatch, phase):
    """SIGKILL one task's worker mid-run (no Ray retries): the pack fails with a clear error
    and no manifest; the re-run redoes only that task and gives the local bytes."""
    ref = pack(config(corpus["plain"], tmp_path / "local"))
    tasks, shards = num_tasks(corpus), len(ref.manifest.shards)
    out = tmp_path / "ray"
    victim = 3
    monkeypatch.setenv("FASTDATA_TEST_PAUSE", f"ray_{phase}_{victim}:1")
    monkeypatch.setenv("FASTDATA_TEST_PAUSE_DIR", str(tmp_path))
    failures: list[BaseException] = []
    runner = threading.Thread(target=run_catching, args=(config(corpus["plain"], out), failures))
    runner.start()
    ready = tmp_path / f"ray_{phase}_{victim}.ready"
    wait_for(ready.exists, "the paused task")
    others = ([out / AREA / f"seg-{i:06d}.json" for i in range(tasks) if i != victim] if phase == "encode"
              else [out / AREA / f"shard-{i:05d}.json" for i in range(shards) if i != victim])
    wait_for(lambda: all(p.exists() for p in others), "the other tasks")
    os.kill(int(ready.read_text()), signal.SIGKILL)
    runner.join(60)
    assert not runner.is_alive()
    assert len(failures) == 1 and isinstance(failures[0], FastdataIOError), failures
    assert "re-run the same command" in str(failures[0])
    assert not (out / MANIFEST_NAME).exists()

    monkeypatch.delenv("FASTDATA_TEST_PAUSE")
    result = pack_on_ray(config(corpus["plain"], out))
    assert_same_dataset(tmp_path / "local", out)
    p = result.progress
    if phase == "encode":
        assert (p.resumed_tasks, p.resumed_shards) == (tasks - 1, 0)
    else:
        assert (p.resumed_tasks, p.resumed_shards) == (tasks, shards - 1)


def test_unfinished_pack_of_another_job_is_refused_unless_overwrite(tmp_path, corpus):
    out = tmp_path / "ray"
    (out / AREA).mkdir(parents=True)
    (out / JOB_RECORD).write_text(json.dumps({"job": "0" * 32, "tasks": 2, "shards": 1}))
    (out / AREA / "seg-000001.fds").write_bytes(b"stale")
    with pytest.raises(FastdataConfigError, match="unfinished Ray pack with other inputs"):
        pack_on_ray(config(corpus["plain"], out))
    pack(config(corpus["plain"], tmp_path / "local"))
    pack_on_ray(config(corpus["plain"], out, overwrite=True))
    assert_same_dataset(tmp_path / "local", out)


def test_damaged_segment_is_encoded_again(tmp_path, corpus, monkeypatch):
    """A re-run checks finished segments by size and hash before reusing them."""
    out = tmp_path / "ray"
    monkeypatch.setenv("FASTDATA_TEST_PAUSE", "ray_shard_0:1")
    monkeypatch.setenv("FASTDATA_TEST_PAUSE_DIR", str(tmp_path))
    failures: list[BaseException] = []
    runner = threading.Thread(target=run_catching, args=(config(corpus["plain"], out), failures))
    runner.start()
    ready = tmp_path / "ray_shard_0.ready"
    wait_for(ready.exists, "the paused task")
    segment = out / AREA / "seg-000002.fds"
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    segment.write_bytes(bytes(data))
    os.kill(int(ready.read_text()), signal.SIGKILL)
    runner.join(60)
    assert len(failures) == 1 and isinstance(failures[0], FastdataError), failures
    monkeypatch.delenv("FASTDATA_TEST_PAUSE")
    result = pack_on_ray(config(corpus["plain"], out))
    assert result.progress.resumed_tasks == num_tasks(corpus) - 1
    pack(config(corpus["plain"], tmp_path / "local"))
    assert_same_dataset(tmp_path / "local", out)


def test_bad_records_raise_or_skip_as_the_local_engine(tmp_path, corpus):
    dirty = tmp_path / "dirty.jsonl"
    lines = [json.dumps({"text": t}).encode() for t in make_docs(40, seed=4)]
    lines[2], lines[30] = b'{"text": "unterminated', b'{"other": 1}'
    dirty.write_bytes(b"\n".join(lines) + b"\n")
    inputs = [corpus["plain"][0], str(dirty)]
    with pytest.raises(FastdataInputError, match=r"dirty\.jsonl:3: invalid JSON"):
        pack_on_ray(config(inputs, tmp_path / "raise"))
    assert not (tmp_path / "raise" / MANIFEST_NAME).exists()
    skip = EncodeOptions(ReadOptions(), TokenizerSpec("bytes"), skip_bad=True)
    ref = pack(config(inputs, tmp_path / "local", encode=skip))
    got = pack_on_ray(config(inputs, tmp_path / "ray", encode=skip))
    assert_same_dataset(tmp_path / "local", tmp_path / "ray")
    assert got.progress.skipped == ref.progress.skipped == {"invalid JSON": 1, "missing field 'text'": 1}
    assert got.progress.first_skipped == ref.progress.first_skipped


def test_missing_ray_is_a_config_error(tmp_path, corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FastdataConfigError, match=r"pip install 'fastdata\[ray\]'"):
        pack_on_ray(config(corpus["plain"], tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_plan_shards_cuts_where_the_global_stream_does():
    """Pure: pieces from per-task lengths equal a greedy cut over the concatenated stream."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        lengths = [rng.integers(0, 30, rng.choice([0, 1, 3, 12])) for _ in range(rng.integers(1, 9))]
        target = int(rng.integers(1, 120))
        shards = plan_shards(lengths, target)
        flat = [(t, d, int(n)) for t, ls in enumerate(lengths) for d, n in enumerate(ls)]
        want, current, total = [], [], 0
        for doc in flat:
            current.append(doc)
            total += doc[2]
            if total >= target:
                want.append(current)
                current, total = [], 0
        if current:
            want.append(current)
        got = [[(t, d, int(lengths[t][d])) for t, lo, hi in s for d in range(lo, hi)] for s in shards]
        assert got == want
        assert all(lo < hi for s in shards for _, lo, hi in s)


@pytest.mark.timeout(240)
def test_ray_pack_to_azurite_equals_local(tmp_path, corpus, azurite, container):
    from test_pack_azure import blobs

    options = {"connection_string": azurite["conn"], "allow_insecure": True}
    pack_on_ray(config(corpus["plain"], f"az://{container}/ds", compression="zstd",
                       storage_options=options))
    pack(config(corpus["plain"], tmp_path / "local", compression="zstd"))
    uploaded = blobs(azurite["conn"], f"{container}/ds")
    assert uploaded == files_bytes(str(tmp_path / "local"))
