"""Every example in examples/ runs, at a tiny size on CPU, and feeds exactly fastdata's order.

Each example appends one JSON line per step (``--log-batches``): every rank's batch digest
and the loss. The digests are compared, in order, with batches this test reads from the same
dataset through ``fastdata.DataLoader``; resumed runs must continue with exactly the
batches (and, for train_gpt, the losses and weights) of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEV_KEY

import fastdata

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CORPUS = EXAMPLES / "corpus"
TOPOLOGY = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
            "FASTDATA_NODE_ID", "FASTDATA_RANKS_PER_NODE", "MASTER_ADDR", "MASTER_PORT")
SEQ, BATCH = 256, 2  # seq_len 256 holds a chat's prompt and part of the answer
MODEL = ["--seq-len", str(SEQ), "--batch-size", str(BATCH), "--d-model", "32", "--n-layers", "1",
         "--n-heads", "2", "--num-workers", "1"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TOPOLOGY}
    # One thread per process: two cores are shared with the rest of the machine, and
    # oversubscribed OpenMP threads spin (a step then takes ~10x as long).
    env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="0", **extra)
    return env


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 200) -> str:
    cmd = [sys.executable, "-P", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or clean_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{shlex.join(cmd)} failed ({proc.returncode}):\n{out[-5000:]}"
    return out


def torchrun(script: str, *args: str | Path) -> str:
    return run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               EXAMPLES / script, *args)


def digest(batch: dict) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(batch["input_ids"].numpy().tobytes())
    h.update(batch["labels"].numpy().tobytes())
    return f"{int.from_bytes(h.digest(), 'little'):016x}"


def reference(data: str, steps: int, world_size: int = 1, **kw) -> tuple[list[list[str]], list[dict]]:
    """The digests of the first ``steps`` global steps (one per rank) and rank 0's batches."""
    per_rank, first = [], []
    for rank in range(world_size):
        world = fastdata.World(rank=rank, world_size=world_size, local_rank=rank, ranks_per_node=world_size)
        loader = fastdata.DataLoader(fastdata.TokenDataset(data, seq_len=SEQ, seed=0, world=world, **kw),
                                     batch_size=BATCH, num_workers=0)
        got: list[dict] = []
        while len(got) < steps:
            for batch in loader:
                got.append(batch)
                if len(got) == steps:
                    break
        per_rank.append([digest(b) for b in got])
        first = first or got
    return [list(step) for step in zip(*per_rank)], first


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> dict[str, str]:
    """The bundled corpus packed as the examples' docstrings say (small shards: several per run)."""
    d = tmp_path_factory.mktemp("packed")
    pack = ("-m", "fastdata.cli.main", "pack", "-q", "--shard-size", "64KB")
    run(*pack, CORPUS / "stdlib_docs.jsonl", "-o", d / "web")
    run(*pack, CORPUS / "chat.jsonl", "--chat", "-o", d / "chat")
    return {"web": str(d / "web"), "chat": str(d / "chat"), "web_args": pack[3:]}


@pytest.fixture(scope="module")
def pretrained(packed, tmp_path_factory) -> dict:
    """train_gpt.py under torchrun with 2 ranks: 8 steps straight, checkpoints at 4 and 8."""
    d = tmp_path_factory.mktemp("train_gpt")
    out = torchrun("train_gpt.py", "--data", packed["web"], "--out", d / "run", "--steps", "8",
                   "--ckpt-every", "4", "--log-batches", d / "run.log", *MODEL)
    return {"dir": d / "run", "log": read_log(d / "run.log"), "output": out}


def test_train_gpt_under_torchrun_resumes_exactly(packed, pretrained, tmp_path):
    straight = pretrained["log"]
    assert [line["step"] for line in straight] == list(range(8))
    expected, _ = reference(packed["web"], 8, world_size=2)
    assert [line["digests"] for line in straight] == expected  # each rank got its own slice, in order
    assert expected[0][0] != expected[0][1]
    assert sorted(os.listdir(pretrained["dir"])) == ["step-00000004.pt", "step-00000008.pt"]
    assert re.search(r"8 steps in .* tokens/s, data wait .* ms/step", pretrained["output"])

    # Resume from the step-4 checkpoint (the state a run stopped there left) in a new job.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(pretrained["dir"] / "step-00000004.pt", resumed)
    out = torchrun("train_gpt.py", "--data", packed["web"], "--out", resumed, "--steps", "8",
                   "--ckpt-every", "4", "--resume", "--log-batches", tmp_path / "resumed.log", *MODEL)
    assert "resumed at step 4, data at 0:4" in out
    second = read_log(tmp_path / "resumed.log")
    assert second == straight[4:]  # the same batches on every rank, and bit-identical losses

    import torch

    a = torch.load(pretrained["dir"] / "step-00000008.pt", weights_only=True)
    b = torch.load(resumed / "step-00000008.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    assert a["data"] == b["data"] and a["data"]["step"] == 8
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_train_gpt_with_dcp_checkpoints_resumes_exactly(packed, pretrained, tmp_path):
    """--dcp: torch.distributed.checkpoint directories written by both ranks; the same training
    as with torch.save, and a new job resumed from the step-4 one continues bit-identically."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    straight = pretrained["log"]
    run_dir = tmp_path / "run"
    torchrun("train_gpt.py", "--data", packed["web"], "--out", run_dir, "--steps", "8", "--ckpt-every", "4",
             "--dcp", "--log-batches", tmp_path / "run.log", *MODEL)
    assert read_log(tmp_path / "run.log") == straight  # the same batches and losses as with torch.save
    assert sorted(os.listdir(run_dir)) == ["dcp-step-00000004", "dcp-step-00000008"]
    assert (run_dir / "dcp-step-00000004" / ".metadata").exists()

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(run_dir / "dcp-step-00000004", resumed / "dcp-step-00000004")
    out = torchrun("train_gpt.py", "--data", packed["web"], "--out", resumed, "--steps", "8",
                   "--ckpt-every", "4", "--dcp", "--resume", "--log-batches", tmp_path / "resumed.log",
                   *MODEL)
    assert "resumed at step 4, data at 0:4 (DCP)" in out
    assert read_log(tmp_path / "resumed.log") == straight[4:]

    dcp_to_torch_save(resumed / "dcp-step-00000008", tmp_path / "b.pt")
    a = torch.load(pretrained["dir"] / "step-00000008.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert b["train"]["step"] == 8 and b["loader"] == a["data"]
    assert a["model"].keys() == b["train"]["model"].keys()
    assert all(torch.equal(a["model"][k], b["train"]["model"][k]) for k in a["model"])


def test_quickstart_trains_through_the_node_cache_and_resumes_exactly(tmp_path):
    """README command 1: pack, publish to a URL, train via the node cache, resume in a new process."""
    demo = tmp_path / "demo"
    out = run(EXAMPLES / "quickstart.py", demo, timeout=150)
    straight, resumed = read_log(demo / "train.jsonl"), read_log(demo / "resumed.jsonl")
    assert [line["step"] for line in straight] == list(range(40))
    # Process 1 trained on exactly fastdata's order of the packed dataset (read here, in place).
    loader = fastdata.DataLoader(fastdata.TokenDataset(str(demo / "stdlib"), seq_len=128, seed=0),
                                 batch_size=8, num_workers=0)
    expected = [batch["sample_ids"].tolist() for _, batch in zip(range(40), loader)]
    assert [line["sample_ids"] for line in straight] == expected
    assert resumed == straight[20:]  # the fresh process: the same batches and bit-identical losses
    assert f"resumed       step 20 sample ids: {expected[20]}" in out and "exact resume: OK" in out
    cold = json.loads((demo / "train.json").read_text())["metrics"]
    warm = json.loads((demo / "resumed.json").read_text())["metrics"]
    assert cold["fetch.shards"] == 12 and cold["cache.misses"] > 0  # every shard came over HTTP once
    assert warm.get("fetch.bytes", 0) == 0 and warm["cache.hit_rate"] == 1.0  # the node cache kept them
    assert re.search(r"process 1, cold node cache, steps 0-39: +[\d,]+ tokens/s, data-wait [\d.]+ %, "
                     r"cache hit [\d.]+ %", out)
    assert (demo / "bench.png").stat().st_size > 1000 and f"fastdata bench plot: {demo / 'bench.png'}" in out


def test_quickstart_fails_when_the_resumed_batches_differ(tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import quickstart
    finally:
        sys.path.remove(str(EXAMPLES))
    straight = [{"step": i, "sample_ids": [2 * i, 2 * i + 1], "loss": 1.0 / (i + 1)} for i in range(40)]
    assert quickstart.check_resume(straight, straight[20:])
    assert not quickstart.check_resume(straight, straight[21:] + straight[:1])  # one batch off
    assert not quickstart.check_resume(straight, [dict(line, loss=0.5) for line in straight[20:]])


def test_finetune_chat_trains_only_assistant_turns(packed, pretrained, tmp_path):
    out = run(EXAMPLES / "finetune_chat.py", "--data", packed["chat"], "--init", pretrained["dir"],
              "--out", tmp_path / "ft", "--steps", "5", "--log-batches", tmp_path / "ft.log", *MODEL)
    assert f"starting from {pretrained['dir'] / 'step-00000008.pt'}" in out
    expected, batches = reference(packed["chat"], 5, sampling={"mode": "document"})
    assert [line["digests"] for line in read_log(tmp_path / "ft.log")] == expected
    trained = sum(int((b["labels"] != -100).sum()) for b in batches)
    seen = sum(int(b["attention_mask"].sum()) for b in batches)
    assert 0 < trained < seen
    assert f"{trained:,} of {seen:,} tokens trained" in out
    assert os.listdir(tmp_path / "ft") == ["step-00000005.pt"]


def test_stream_azure_reads_abfs_with_options_from_the_environment(packed, azurite, container, tmp_path):
    env = clean_env(AZURE_STORAGE_CONNECTION_STRING=azurite["conn"], FASTDATA_ALLOW_INSECURE="1")
    # The same pack as the local copy: the same dataset, so the same order.
    run("-m", "fastdata.cli.main", "pack", *packed["web_args"], CORPUS / "stdlib_docs.jsonl",
        "-o", f"az://{container}/web", env=env)
    cache = tmp_path / "cache"
    out = run(EXAMPLES / "stream_azure.py", "--url", f"abfs://{container}/web", "--cache-dir", cache,
              "--cache-limit", "8MB", "--steps", "6", "--log-batches", tmp_path / "az.log", *MODEL, env=env)
    expected, _ = reference(packed["web"], 6)
    assert [line["digests"] for line in read_log(tmp_path / "az.log")] == expected
    assert any(n.endswith(".fds") for _, _, names in os.walk(cache) for n in names)
    assert "tokens/s" in out and "first batch after" in out
    assert DEV_KEY not in out and "AccountKey" not in out


def test_lightning_resumes_from_its_own_checkpoint(packed, tmp_path):
    pytest.importorskip("lightning")
    common = ("--data", packed["web"], "--out", tmp_path / "lit", "--log-batches", tmp_path / "lit.log",
              *MODEL)
    run(EXAMPLES / "lightning_train.py", "--steps", "3", *common)
    assert os.listdir(tmp_path / "lit") == ["last.ckpt"]
    out = run(EXAMPLES / "lightning_train.py", "--steps", "6", "--resume", *common)
    assert "Restored all states from the checkpoint" in out
    log = read_log(tmp_path / "lit.log")
    assert [line["step"] for line in log] == list(range(6))
    expected, _ = reference(packed["web"], 6)
    assert [line["digests"] for line in log] == expected  # epoch 0 from its start, resumed at step 3


def test_hf_trainer_resumes_from_the_fastdata_state_in_its_checkpoint(packed, tmp_path):
    pytest.importorskip("transformers")
    common = ("--data", packed["web"], "--steps", "6", "--save-steps", "3", *MODEL)
    run(EXAMPLES / "hf_trainer.py", "--out", tmp_path / "a", "--log-batches", tmp_path / "a.log", *common)
    straight = read_log(tmp_path / "a.log")
    assert [line["step"] for line in straight] == list(range(6))
    expected, _ = reference(packed["web"], 6)
    assert [line["digests"] for line in straight] == expected
    state = json.loads((tmp_path / "a" / "checkpoint-3" / "fastdata_loader.json").read_text())
    assert (state["epoch"], state["step"]) == (0, 3)

    # A new job from the step-3 checkpoint: fastdata's state continues the data, nothing replayed.
    shutil.copytree(tmp_path / "a" / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    out = run(EXAMPLES / "hf_trainer.py", "--out", tmp_path / "b", "--resume", "--log-batches",
              tmp_path / "b.log", *common)
    assert f"resumed at step 3 from {tmp_path / 'b' / 'checkpoint-3'}, data at 0:3" in out
    assert read_log(tmp_path / "b.log") == straight[3:]  # the same batches and bit-identical losses
    a, b = tmp_path / "a" / "checkpoint-6", tmp_path / "b" / "checkpoint-6"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert json.loads((b / "fastdata_loader.json").read_text())["step"] == 6


def test_deepspeed_resumes_from_client_state(packed, tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (scripts/test.sh installs it)")
    # A fresh extensions directory: the example must not compile a kernel at run time.
    env = clean_env(MASTER_PORT=str(free_port()), TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    common = ("--data", packed["web"], "--out", tmp_path / "ds", "--log-batches", tmp_path / "ds.log",
              *MODEL)
    run(EXAMPLES / "deepspeed_train.py", "--steps", "3", *common, env=env)
    out = run(EXAMPLES / "deepspeed_train.py", "--steps", "6", "--resume", *common, env=env)
    assert "resumed at step 3" in out
    log = read_log(tmp_path / "ds.log")
    assert [line["step"] for line in log] == list(range(6))
    expected, _ = reference(packed["web"], 6)
    assert [line["digests"] for line in log] == expected
    assert not (tmp_path / "ext").exists()


def test_azureml_job_template_runs_train_gpt_with_valid_flags(monkeypatch):
    yaml = pytest.importorskip("yaml")
    job = yaml.safe_load((EXAMPLES / "azureml" / "train_gpt.job.yml").read_text())
    assert job["type"] == "command" and job["distribution"]["type"] == "pytorch"
    words = shlex.split(job["command"].split("&&")[-1])
    assert words[0] == "torchrun"
    nnodes = int(words[words.index("--nnodes") + 1])
    assert nnodes == job["resources"]["instance_count"]
    script = words.index("examples/train_gpt.py")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import train_gpt
    finally:
        sys.path.remove(str(EXAMPLES))
    args = train_gpt.parse_args(words[script + 1:])  # argparse exits on an unknown flag
    assert args.data.startswith("abfs://") and args.resume and args.cache_limit
    assert args.out == "${{outputs.checkpoints}}" and "checkpoints" in job["outputs"]
    # The job names only the account: adlfs then signs in with the cluster's managed identity.
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
                 "FASTDATA_ALLOW_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in job["environment_variables"].items():
        monkeypatch.setenv(name, value)
    opts = train_gpt.storage_options_from_env(args.data)
    assert opts == {"account_name": "<storageaccount>", "anon": False}
