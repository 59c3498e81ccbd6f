"""Real multi-process acceptance tests of the training loader: A4, A5, A8 (a, b, c), B3, B4.

Every fake rank is a fresh interpreter running ``tests/_mp_worker.py`` with the torchrun
environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, FASTDATA_NODE_ID) and a gloo
process group initialised from a file in the test's tmp dir. Children only record the sample
ids they see per step (and the loader states); this process compares them, in exact order,
with the pure order function ``TokenDataset.epoch_order``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import _jobs
import pytest
import torch
from _corpus import make_docs, write_jsonl
from _fs import assert_exactly_once

import fastdata

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(90)]

WORKER = Path(__file__).with_name("_mp_worker.py")
SEQ_LEN, SEED, WINDOW = 32, 7, 4
GLOBAL_BATCH = 16
SAVE_STEP = 9  # B3/B4: the checkpoint is taken after this many steps


# ---------------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _kill_leftover_jobs():
    yield
    _jobs.kill_all()


class Job(_jobs.Job):
    """The ranks of one fake training job running tests/_mp_worker.py."""

    def __init__(self, tmp: Path, nodes: int, per_node: int, **cfg) -> None:
        super().__init__(WORKER, tmp, nodes, per_node, **cfg)

    def wait(self, timeout: float = 75) -> list[dict]:
        return super().wait(timeout)

    def wait_ready(self, timeout: float = 75) -> None:
        super().wait_ready(timeout)


def pure_order(path: str, world_size: int, per_node: int, batch_size: int, epoch: int = 0,
               drop_last: bool = True, mode: str = "packed") -> tuple[list[list[int]], int]:
    """(global batches of ``epoch`` from the pure order function, number of samples M)."""
    ds = fastdata.TokenDataset(path, seq_len=SEQ_LEN, shuffle=True, seed=SEED, batch_size=batch_size,
                               sampling={"mode": mode}, world=fastdata.World(),
                               order=fastdata.OrderOptions(window=WINDOW, drop_last=drop_last))
    world = fastdata.World(rank=0, world_size=world_size, local_rank=0, ranks_per_node=per_node)
    order = ds.epoch_order(epoch, world)
    return [order.global_batch(k).tolist() for k in range(order.num_steps)], ds.space.num_samples


def assert_consistent_job(results: list[dict], epoch: int = 0) -> list[list[int]]:
    """Per-rank views agree: same batch count, same gathered global batches, each equal to the
    concatenation of the ranks' own micro-batches, identical states at every step; returns the
    global batches."""
    runs = [r["epochs"][epoch] for r in results]
    counts = [len(run["local"]) for run in runs]
    assert len(set(counts)) == 1, f"ranks yielded different numbers of batches: {counts}"
    for run in runs[1:]:
        assert run["gathered"] == runs[0]["gathered"]
    stitched = [[i for run in runs for i in run["local"][k]] for k in range(counts[0])]
    assert runs[0]["gathered"] == stitched, "all_gather disagrees with the ranks' own micro-batches"
    for k in range(counts[0]):
        states = [run["states"][k] for run in runs]
        assert all(s == states[0] for s in states), f"states differ across ranks at step {k}: {states}"
    assert all(r.get("barrier") for r in results)
    return stitched


def sha256_ids(batches: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(batches).encode()).hexdigest()


def pack_dataset(tmp: Path, docs: list[str], shard_size: str) -> str:
    src = write_jsonl(str(tmp / "docs.jsonl"), docs)
    out = tmp / "ds"
    subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", src, "-o", str(out),
                    "--shard-size", shard_size, "--workers", "1", "-q"], check=True, timeout=120)
    return str(out)


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> str:
    """~1,670 packed samples of 32 byte tokens in ~16 shards of a few KB."""
    path = pack_dataset(tmp_path_factory.mktemp("packed"), make_docs(300, seed=3, long_every=0), "6KB")
    assert 12 <= len(fastdata.open_dataset(path).shards) <= 24
    return path


@pytest.fixture(scope="module")
def prime(tmp_path_factory) -> str:
    """211 (a prime) documents, used as 211 document-mode samples."""
    docs = [d or "x" for d in make_docs(211, seed=5, long_every=0)]
    path = pack_dataset(tmp_path_factory.mktemp("prime"), docs, "2KB")
    assert fastdata.open_dataset(path).num_docs == 211
    return path


@pytest.fixture(scope="module")
def reference4(tmp_path_factory, packed) -> list[dict]:
    """The uninterrupted epoch 0 of 2 fake nodes × 2 ranks × 2 worker threads, micro-batch 4."""
    job = Job(tmp_path_factory.mktemp("ref4"), 2, 2, dataset=packed, batch_size=4, backend="threads")
    return job.wait()


# ---------------------------------------------------------------------------------- A4


def check_a4(results: list[dict], packed: str, states: bool = True) -> None:
    expected, m = pure_order(packed, 4, 2, 4)
    for r, res in enumerate(results):
        assert res["world"]["rank"] == r and res["world"]["world_size"] == 4
        assert res["world"]["local_rank"] == r % 2 and res["world"]["ranks_per_node"] == 2
        assert res["len"] == len(expected)
        assert not [x for x in res["log"] if x["level"] in ("WARNING", "ERROR")], res["log"]
    batches = assert_consistent_job(results)
    assert len(batches) == len(expected) == m // GLOBAL_BATCH
    assert batches == expected, "global batches differ from the pure order function"
    assert_exactly_once(batches, m, GLOBAL_BATCH, drop_last=True)
    if not states:
        return
    states = results[0]["epochs"][0]["states"]
    assert [(s["epoch"], s["step"]) for s in states] == [(0, k) for k in range(1, len(expected))] + [(1, 0)]
    assert all(s["identity"]["global_batch"] == GLOBAL_BATCH for s in states)


def test_a4_exactly_once_threads(reference4, packed):
    """A4: 2 nodes × 2 ranks × 2 worker threads: each sample once, the pure order per step."""
    check_a4(reference4, packed)


def test_a4_exactly_once_processes(tmp_path, packed):
    """A4 with 2 DataLoader worker processes per rank (12 processes in all)."""
    job = Job(tmp_path, 2, 2, dataset=packed, batch_size=4, backend="processes")
    check_a4(job.wait(), packed)


@pytest.fixture(scope="module")
def stock4(tmp_path_factory, packed) -> list[dict]:
    """Two epochs of a stock torch DataLoader (2 worker processes) over TokenDataset(batch_size=4)
    on 2 nodes × 2 ranks: what users of a plain PyTorch training loop get."""
    job = Job(tmp_path_factory.mktemp("stock4"), 2, 2, dataset=packed, batch_size=4, backend="stock",
              epochs=2)
    return job.wait()


def test_a4_exactly_once_stock_torch_dataloader(stock4, packed):
    """A4 through torch.utils.data.DataLoader(num_workers=2): worker processes take steps in
    turns and the rank still sees the pure order."""
    check_a4(stock4, packed, states=False)


def test_a7_stock_torch_dataloader_second_epoch_is_epoch_1(stock4, packed):
    """With a stock DataLoader the training loop calls ds.set_epoch(e) (docs/loader.md): the
    workers are copies of the dataset, so only the main process can advance the epoch."""
    second = assert_consistent_job(stock4, epoch=1)
    assert second != assert_consistent_job(stock4, epoch=0), "epoch 0 was repeated"
    assert second == pure_order(packed, 4, 2, 4, epoch=1)[0]


def test_b7_stock_torch_dataloader_applies_a_loaded_state_until_set_epoch(packed):
    """B7 with a stock DataLoader and worker processes: the loaded state holds until the loop
    moves on with ds.set_epoch(e), as documented; it is never silently ignored."""
    def ds():
        return fastdata.TokenDataset(packed, seq_len=SEQ_LEN, seed=SEED, batch_size=4, world=fastdata.World(),
                                     order=fastdata.OrderOptions(window=WINDOW))

    expected = [pure_order(packed, 1, 1, 4, epoch=e)[0] for e in (0, 1)]
    resumed = ds()
    resumed.load_state_dict(dict(ds().state_dict(), step=SAVE_STEP))
    stock = torch.utils.data.DataLoader(resumed, batch_size=None, num_workers=2)
    first = [b["sample_ids"].tolist() for b in stock]
    assert first == expected[0][SAVE_STEP:]
    resumed.set_epoch(1)
    second = [b["sample_ids"].tolist() for b in stock]
    assert second == expected[1]


# ---------------------------------------------------------------------------------- A5


@pytest.mark.parametrize(("drop_last", "backend"), [(True, "threads"), (False, "processes")])
def test_a5_uneven_data_never_hangs(tmp_path, prime, drop_last, backend):
    """A5: a prime number of samples over 4 ranks, one rank 3× slower per batch: every rank
    finishes with the same number of batches and a barrier after the loop returns."""
    job = Job(tmp_path, 2, 2, dataset=prime, mode="document", drop_last=drop_last, batch_size=4,
              backend=backend, slow_rank=1, sleep=0.01)
    results = job.wait()
    expected, m = pure_order(prime, 4, 2, 4, drop_last=drop_last, mode="document")
    assert m == 211
    assert len(expected) == (211 // 16 if drop_last else 211 // 16 + 1)
    batches = assert_consistent_job(results)
    assert batches == expected
    assert_exactly_once(batches, m, GLOBAL_BATCH, drop_last)


# ---------------------------------------------------------------------------------- A8


@pytest.fixture(scope="module")
def explicit_world(tmp_path_factory, packed) -> list[dict]:
    """A gloo group of 4 whose ranks configure the dataset with World() (1 rank)."""
    return Job(tmp_path_factory.mktemp("a8a"), 2, 2, dataset=packed, scenario="explicit_world").wait()


def test_a8a_explicit_world_inside_bigger_group_fails_loudly(explicit_world):
    """A8a: no rank may iterate with a world that contradicts the process group; the error
    names both views."""
    for r, res in enumerate(explicit_world):
        for stage in ("dataloader", "stock_iter"):
            assert res[stage]["raised"] == "FastdataConfigError", (stage, res)
            assert f"rank {r} of 4" in res[stage]["message"]
            assert "rank 0 of 1" in res[stage]["message"]
        assert res["stock_ids"] == []


def test_a8a_construction_itself_raises(explicit_world):
    for r, res in enumerate(explicit_world):
        assert res["construct"]["raised"] == "FastdataConfigError", res
        assert f"rank {r} of 4" in res["construct"]["message"]


def test_a8c_two_ranks_claim_the_same_rank(tmp_path, packed):
    """A8c: a group of 2 whose launcher put RANK=0 in both environments: the rank whose claim
    contradicts the process group refuses to load, naming both values; the true rank 0 runs."""
    results = Job(tmp_path, 1, 2, dataset=packed, scenario="explicit_world", explicit_world=False,
                  claim_env={"RANK": "0", "LOCAL_RANK": "0", "FASTDATA_NODE_ID": "0"}).wait()
    for stage in ("construct", "dataloader", "stock_iter"):
        assert results[0][stage]["raised"] is None, results[0]
    assert len(results[0]["stock_ids"]) == pure_order(packed, 2, 2, 4)[1] // 8
    for stage in ("construct", "dataloader", "stock_iter"):
        assert results[1][stage]["raised"] == "FastdataConfigError", (stage, results[1])
        assert "rank 1 of 2" in results[1][stage]["message"]
        assert "rank 0 of 2" in results[1][stage]["message"]
    assert results[1]["stock_ids"] == []


def test_a8b_env_world_without_process_group(tmp_path, packed):
    """A8b: WORLD_SIZE=2 in the environment but no process group: one explicit warning, the
    environment's rank is used, and the two ranks read disjoint stripes of the same order."""
    results = Job(tmp_path, 1, 2, dataset=packed, batch_size=4, pg=False).wait()
    for r, res in enumerate(results):
        warnings = [x for x in res["log"] if x["level"] == "WARNING"]
        assert len(warnings) == 1, res["log"]
        assert "WORLD_SIZE=2" in warnings[0]["message"]
        assert f"rank {r}" in warnings[0]["message"]
        assert res["world"]["rank"] == r and res["world"]["world_size"] == 2
    local = [res["epochs"][0]["local"] for res in results]
    assert local[0] != local[1]
    assert not set(map(tuple, local[0])) & set(map(tuple, local[1]))
    expected, m = pure_order(packed, 2, 2, 4)
    stitched = [a + b for a, b in zip(*local, strict=True)]
    assert stitched == expected
    assert_exactly_once(stitched, m, 8, drop_last=True)


# ---------------------------------------------------------------------------------- B3


def test_b3_sigkill_and_restart_from_checkpoint_file(tmp_path, packed):
    """B3: a single-rank job checkpoints the loader after SAVE_STEP steps (temp + rename), runs
    on, is SIGKILLed; a new process resumes from the file and yields exactly the rest."""
    ds = fastdata.TokenDataset(packed, seq_len=SEQ_LEN, seed=SEED, world=fastdata.World(),
                               order=fastdata.OrderOptions(window=WINDOW))
    loader = fastdata.DataLoader(ds, batch_size=4, num_workers=2)
    reference = [[b["sample_ids"].tolist() for b in loader] for _ in range(2)]  # epochs 0 and 1
    expected0, m = pure_order(packed, 1, 1, 4)
    assert reference[0] == expected0 and reference[1] == pure_order(packed, 1, 1, 4, epoch=1)[0]

    killed = Job(tmp_path / "killed", 1, 1, dataset=packed, batch_size=4, backend="processes",
                 pg=False, save_step=SAVE_STEP, ready_step=SAVE_STEP + 3)
    killed.wait_ready()
    assert json.loads((killed.dir / "ready-0.json").read_text())["local"] == reference[0][:SAVE_STEP + 3]
    checkpoint_file = killed.dir / "checkpoint.json"
    assert not list(killed.dir.glob("checkpoint.json.tmp*")), "a temp checkpoint was left behind"
    checkpoint = json.loads(checkpoint_file.read_text())
    assert checkpoint["model"] == {"steps": SAVE_STEP}
    assert (checkpoint["loader"]["epoch"], checkpoint["loader"]["step"]) == (0, SAVE_STEP)
    assert checkpoint["seen"] == reference[0][:SAVE_STEP]

    resumed = Job(tmp_path / "resumed", 1, 1, dataset=packed, batch_size=4, backend="processes",
                  pg=False, resume=str(checkpoint_file), epochs=2).wait()[0]
    assert resumed["loaded_state"] == checkpoint["loader"]
    rest, following = (e["local"] for e in resumed["epochs"])
    assert sha256_ids(rest) == sha256_ids(reference[0][SAVE_STEP:])
    assert rest == reference[0][SAVE_STEP:]
    assert checkpoint["seen"] + rest == reference[0]
    assert following == reference[1], "the epoch after the resumed one does not start at its step 0"
    assert_exactly_once(checkpoint["seen"] + rest, m, 4, drop_last=True)


# ---------------------------------------------------------------------------------- B4


@pytest.fixture(scope="module")
def checkpoint4(tmp_path_factory, packed, reference4) -> dict:
    """2 nodes × 2 ranks (micro-batch 4, 2 worker processes each) run SAVE_STEP steps, rank 0
    checkpoints, they run on and the whole job is SIGKILLed."""
    job = Job(tmp_path_factory.mktemp("b4-killed"), 2, 2, dataset=packed, batch_size=4,
              backend="processes", save_step=SAVE_STEP, ready_step=SAVE_STEP + 3)
    job.wait_ready()
    saved = [json.loads((job.dir / f"saved-{r}.json").read_text()) for r in range(4)]
    assert all(s == saved[0] for s in saved), f"ranks saved different states: {saved}"
    checkpoint = json.loads((job.dir / "checkpoint.json").read_text())
    assert checkpoint["loader"] == saved[0]
    assert (saved[0]["epoch"], saved[0]["step"]) == (0, SAVE_STEP)
    reference = reference4[0]["epochs"][0]
    assert checkpoint["seen"] == reference["gathered"][:SAVE_STEP]
    assert saved[0] == reference["states"][SAVE_STEP - 1], "the state depends on more than the step"
    checkpoint["path"] = str(job.dir / "checkpoint.json")
    return checkpoint


@pytest.mark.parametrize(("nodes", "per_node"), [(1, 2), (1, 1), (2, 4)], ids=["1x2-b8", "1x1-b16", "2x4-b2"])
def test_b4_elastic_resume_constant_global_batch(tmp_path, packed, reference4, checkpoint4, nodes,
                                                 per_node):
    """B4: the 4-rank checkpoint resumes on 2, 1 and 8 ranks (micro-batch scaled to keep the
    global batch 16): the remaining global batches are the 4-rank reference's, in order; the epoch
    is exactly-once across the kill."""
    world_size = nodes * per_node
    job = Job(tmp_path, nodes, per_node, dataset=packed, batch_size=GLOBAL_BATCH // world_size,
              resume=checkpoint4["path"], pg=world_size > 1)
    results = job.wait()
    reference = reference4[0]["epochs"][0]
    if world_size > 1:
        resumed = assert_consistent_job(results)
    else:
        resumed = results[0]["epochs"][0]["local"]
    for res in results:
        assert res["loaded_state"] == checkpoint4["loader"]
        # states are world-independent: the same as the 4-rank reference's at the same step
        assert res["epochs"][0]["states"] == reference["states"][SAVE_STEP:]
    assert resumed == reference["gathered"][SAVE_STEP:]
    assert resumed == pure_order(packed, world_size, per_node, GLOBAL_BATCH // world_size)[0][SAVE_STEP:]
    m = fastdata.TokenDataset(packed, seq_len=SEQ_LEN, world=fastdata.World()).space.num_samples
    assert_exactly_once(checkpoint4["seen"] + resumed, m, GLOBAL_BATCH, drop_last=True)
