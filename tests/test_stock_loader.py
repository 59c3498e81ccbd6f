"""TokenDataset under the stock torch DataLoader with worker processes: how a worker's batch
crosses to the training process (fastdata.loader.wire) and that nothing about the batches
changes: same keys, dtypes, shapes and values, in exactly the in-process order."""

from __future__ import annotations

import json
import subprocess
import sys
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
from _loader import packed_dataset
from torch.utils.data import DataLoader, IterableDataset, default_collate

import fastdata
from fastdata.loader import wire

pytestmark = pytest.mark.timeout(120)
SEQ = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("stock")))


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    """A dataset packed with --chat: it has a loss mask (user turns get no loss)."""
    d = tmp_path_factory.mktemp("stockchat")
    src = d / "chat.jsonl"
    convo = [{"role": "user", "content": "hello there " * 3},
             {"role": "assistant", "content": "general kenobi " * 4}]
    src.write_text("\n".join(json.dumps({"messages": convo}) for _ in range(40)) + "\n")
    subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", str(src), "-o",
                    str(d / "ds"), "--chat", "--shard-size", "2KB", "-q"], check=True, timeout=60)
    return str(d / "ds")


def assert_same(got: dict, want: dict) -> None:
    """Same keys in the same order, and per key the same dtype, shape and values."""
    assert list(got) == list(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        assert torch.equal(got[key], value), key


def over_the_wire(batch: dict) -> dict:
    """What the training process receives for a batch a worker yields (the loader's pickler)."""
    assert isinstance(batch, wire.WireBatch)
    return ForkingPickler.loads(bytes(ForkingPickler.dumps(batch)))


def in_process(ds) -> list[dict]:
    return [{k: v.clone() for k, v in b.items()} for b in ds]


def test_packed_batch_crosses_as_one_narrow_window(data):
    """No loss mask: labels are input_ids shifted by one, so a batch travels as one uint16
    (B, L + 1) window plus its ids, and arrives as int64 input_ids and labels in one storage."""
    ds = fastdata.TokenDataset(data, seq_len=SEQ, seed=1, batch_size=4)
    batch = next(iter(ds))
    sent = wire.WireBatch(batch)
    entries, payload = wire.encode(sent)
    roles = {e[0]: (np.dtype(e[3]), e[5]) for e in entries}
    assert roles["input_ids"][1] == wire.WINDOW and roles["labels"][1] == wire.SHIFTED
    # bytes tokens (0..256) travel as uint8/uint16, not int64; labels add nothing
    assert roles["input_ids"][0].itemsize <= 2 and roles["input_ids"][0].kind == "u"
    window, ids = roles["input_ids"][0].itemsize, roles["sample_ids"][0].itemsize
    assert len(payload) == 4 * (SEQ + 1) * window + 4 * ids
    got = over_the_wire(sent)
    assert type(got) is dict
    assert_same(got, batch)
    assert got["input_ids"].dtype == torch.int64 and got["input_ids"].is_contiguous()
    assert got["labels"].is_contiguous()
    assert got["input_ids"].untyped_storage().data_ptr() == got["labels"].untyped_storage().data_ptr()
    assert torch.equal(got["labels"][:, :-1], got["input_ids"][:, 1:])


def test_loss_mask_padding_and_extra_outputs_keep_their_values(data, chat_data):
    """Labels with -100 (loss mask, padding, padded documents) are not a shifted window: each
    array travels on its own, narrowed only as far as its values allow, and arrives equal."""
    cases = [
        fastdata.TokenDataset(chat_data, seq_len=120, shuffle=False, batch_size=2),
        fastdata.TokenDataset(data, seq_len=48, shuffle=False, batch_size=5, sampling={"mode": "document"}),
        fastdata.TokenDataset(data, seq_len=SEQ, seed=1, batch_size=4,
                              sampling={"position_ids": True, "doc_ids": True}),
        fastdata.TokenDataset(data, seq_len=SEQ, seed=1, batch_size=3,
                              order=fastdata.OrderOptions(drop_last=False)),
    ]
    masked = 0
    for ds in cases:
        batches = in_process(ds)
        for batch in batches[:3] + batches[-2:]:  # the last one of drop_last=False pads
            got = over_the_wire(wire.WireBatch(batch))
            assert_same(got, batch)
            if (batch["labels"] == -100).any():
                masked += 1
                roles = {e[0]: e[5] for e in wire.encode(batch)[0]}
                assert roles["labels"] == "" and got["labels"].dtype == torch.int64
    assert masked >= 3  # chat masks, document padding, the padded tail batch


def test_per_sample_items_are_views_of_one_window_with_the_per_array_values(data, chat_data):
    """Without batch_size a packed sample without a loss mask is one L + 1 window gathered once:
    input_ids and labels are its two contiguous halves; the values equal the per-array path
    (BatchAssembler on that one id). With a loss mask the per-array path is used as before."""
    for path, windows in ((data, True), (chat_data, False)):
        ds = fastdata.TokenDataset(path, seq_len=SEQ, seed=4)
        items = list(ds)
        for item in items:
            ref = ds.assembler()(item["sample_ids"].reshape(1).numpy())
            want = {k: torch.from_numpy(v[0, ...]) for k, v in ref.items() if k != "cu_seqlens"}
            assert_same(item, want)
            x, y = item["input_ids"], item["labels"]
            assert x.is_contiguous() and y.is_contiguous() and x.dtype == torch.int64
            shared = x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
            assert shared == windows
            if windows:
                assert y.data_ptr() == x.data_ptr() + x.element_size()
        assert len(items) == ds.steps_per_epoch() > 8


def test_values_the_format_does_not_cover_go_the_stock_way():
    batch = {"input_ids": torch.arange(6).reshape(2, 3), "note": "text",
             "x": torch.ones(2, dtype=torch.bfloat16)}
    assert wire.encode(batch) is None
    got = ForkingPickler.loads(bytes(ForkingPickler.dumps(wire.WireBatch(batch))))
    assert type(got) is dict and got["note"] == "text" and torch.equal(got["input_ids"], batch["input_ids"])
    assert got["x"].dtype == torch.bfloat16
    floats = {"input_ids": torch.arange(4), "w": torch.tensor([0.5, -1.25]), "m": torch.tensor([True, False])}
    assert_same(over_the_wire(wire.WireBatch(floats)), floats)


def lane_order(samples: list[dict], workers: int, batch: int) -> list[dict]:
    """Per-sample items as a stock DataLoader(batch_size=batch, num_workers=workers) collates
    them: worker w takes steps w, w + workers, ...; batches come round robin."""
    lanes = [[default_collate(samples[w::workers][i : i + batch])
              for i in range(0, len(samples[w::workers]), batch)] for w in range(workers)]
    out = []
    for i in range(max(len(lane) for lane in lanes)):
        out += [lane[i] for lane in lanes if i < len(lane)]
    return out


@pytest.mark.parametrize("loader", ["torch", "stateful"])
def test_two_worker_processes_yield_the_in_process_batches_in_order(data, loader):
    """Micro-batches (batch_size=None) and single samples (collated by the loader) through two
    worker processes equal in-process iteration, batch by batch, in exact order."""
    if loader == "stateful":
        from torchdata.stateful_dataloader import StatefulDataLoader as Loader
    else:
        Loader = DataLoader  # noqa: N806
    def make(batch_size=None):  # a fresh dataset each time: iterating one moves its epoch on
        return fastdata.TokenDataset(data, seq_len=SEQ, seed=5, batch_size=batch_size)

    want = in_process(make(4))
    got = list(Loader(make(4), batch_size=None, num_workers=2))
    assert len(got) == len(want) > 8
    for g, w in zip(got, want):
        assert type(g) is dict
        assert_same(g, w)
    want = lane_order(in_process(make()), workers=2, batch=4)
    got = list(Loader(make(), batch_size=4, num_workers=2))
    assert len(got) == len(want) > 8
    for g, w in zip(got, want):
        assert type(g) is dict
        assert_same(g, w)


class _Edited(IterableDataset):
    """User code in the worker that edits each batch before it leaves."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __iter__(self):
        for batch in self.ds:
            batch["input_ids"].add_(1)  # in place: labels must not change with it
            batch["twice"] = batch["labels"] * 2
            yield batch


def test_what_leaves_a_worker_is_what_the_worker_holds(data):
    """The wire format reads the values being sent: edits made in the worker arrive."""
    want = in_process(fastdata.TokenDataset(data, seq_len=SEQ, seed=2, batch_size=4))
    ds = fastdata.TokenDataset(data, seq_len=SEQ, seed=2, batch_size=4)
    got = list(DataLoader(_Edited(ds), batch_size=None, num_workers=2))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g["input_ids"], w["input_ids"] + 1)
        assert torch.equal(g["labels"], w["labels"]) and torch.equal(g["twice"], w["labels"] * 2)
        assert torch.equal(g["sample_ids"], w["sample_ids"])


def _probe(batch):
    """default_collate in the worker, reporting whether the result lives in shared memory."""
    out = default_collate(batch)
    out["shared"] = torch.tensor([out["input_ids"].is_shared(), out["labels"].is_shared()])
    return out


def test_samples_collated_in_a_worker_need_no_shared_memory(data):
    """default_collate stacks a worker's per-sample items into ordinary memory (they cross as
    bytes); the batches equal collating the same samples in-process."""
    want = lane_order(in_process(fastdata.TokenDataset(data, seq_len=SEQ, seed=3)), workers=1, batch=4)
    got = list(DataLoader(fastdata.TokenDataset(data, seq_len=SEQ, seed=3), batch_size=4, num_workers=1,
                          collate_fn=_probe))
    assert len(got) == len(want) > 8
    for g, w in zip(got, want):
        assert not g.pop("shared").any()
        assert_same(g, w)
