"""The loader in a ``torch.distributed.checkpoint`` (DCP) checkpoint: saved by 2 gloo ranks,
loaded by 1 and by 4 ranks with the same global batch, it continues exactly where an
uninterrupted run would (sample ids of every continued global batch, in order).

``fastdata.DataLoader`` has ``state_dict()`` / ``load_state_dict()``, so DCP treats it as a
``Stateful``: ``dcp.save({"loader": loader})`` on every rank, ``dcp.load`` likewise.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _jobs import Job
from _loader import packed_dataset

import fastdata

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]

HERE = Path(__file__).parent
GLOBAL_BATCH, SAVED_AT, CONTINUED = 8, 5, 6


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("dcp")), docs=300)


def uninterrupted(dataset: str, steps: int) -> list[list[int]]:
    """The sample ids of the first ``steps`` global batches of one process reading them all."""
    loader = fastdata.DataLoader(fastdata.TokenDataset(dataset, seq_len=32, seed=1), batch_size=GLOBAL_BATCH,
                                 num_workers=0)
    out: list[list[int]] = []
    for batch in loader:
        out.append(batch["sample_ids"].tolist())
        if len(out) == steps:
            break
    return out


def global_batches(results: list[dict]) -> list[list[int]]:
    """The ranks' micro-batches of each step, one after the other in rank order."""
    return [sum((r["ids"][step] for r in results), []) for step in range(len(results[0]["ids"]))]


@pytest.fixture(scope="module")
def saved(local, tmp_path_factory):
    """A DCP checkpoint of the loader after SAVED_AT steps on 2 ranks."""
    tmp = tmp_path_factory.mktemp("dcp-save")
    checkpoint = tmp / "checkpoint"
    job = Job(HERE / "_dcp_worker.py", tmp / "job", nodes=1, per_node=2, dataset=local, mode="save",
              checkpoint=str(checkpoint), global_batch=GLOBAL_BATCH, steps=SAVED_AT)
    return checkpoint, job.wait(timeout=150)


@pytest.mark.parametrize("ranks", [1, 4])
def test_dcp_saved_on_2_ranks_continues_exactly_on(ranks, local, saved, tmp_path):
    checkpoint, before = saved
    reference = uninterrupted(local, SAVED_AT + CONTINUED)
    assert global_batches(before) == reference[:SAVED_AT]
    assert (checkpoint / ".metadata").exists()  # a real DCP checkpoint
    job = Job(HERE / "_dcp_worker.py", tmp_path, nodes=1, per_node=ranks, dataset=local, mode="load",
              checkpoint=str(checkpoint), global_batch=GLOBAL_BATCH, steps=CONTINUED)
    after = job.wait(timeout=150)
    assert all(len(b) == GLOBAL_BATCH // ranks for r in after for b in r["ids"])
    assert global_batches(after) == reference[SAVED_AT:]
    assert {r["state"]["step"] for r in after} == {SAVED_AT + CONTINUED}  # every rank at the same step
