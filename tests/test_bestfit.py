"""Best-fit packing (``sampling={"mode": "bestfit"}``, issue 13): whole documents, exactly once
per epoch, checked against a slow reference implementation written here from the rules in
docs/loader.md ("Best-fit packing"), a golden file, resume at any step and any world size."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from pathlib import Path

import _jobs
import numpy as np
import pytest
from _loader import packed_dataset
from _state import assert_resumes_exactly

import fastdata
from fastdata.sampling.bestfit import best_fit, split_documents
from fastdata.sampling.order import EpochOrder, OrderConfig, SampleSpace
from fastdata.sampling.permute import child_keys, derive_key, permute_reference

pytestmark = pytest.mark.timeout(120)
HERE = Path(__file__).parent
GOLDEN = HERE / "data" / "golden_bestfit.json"
# the golden's settings (tests/data/make_bestfit_fixture.py uses the same)
SEQ_LEN, SEED, WINDOW, BATCH = 96, 1234, 8, 4
SAMPLING = {"mode": "bestfit", "pack_window": WINDOW, "doc_ids": True, "position_ids": True}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return packed_dataset(str(tmp_path_factory.mktemp("bestfit")))


def dataset(path: str, **kw) -> fastdata.TokenDataset:
    kw.setdefault("order", fastdata.OrderOptions(drop_last=False))
    return fastdata.TokenDataset(path, seq_len=kw.pop("seq_len", SEQ_LEN), seed=kw.pop("seed", SEED),
                                 sampling=kw.pop("sampling", SAMPLING), **kw)


def epoch_batches(path: str, epochs: int = 1, batch: int = BATCH, **kw) -> list[dict]:
    dl = fastdata.DataLoader(dataset(path, **kw), batch_size=batch, num_workers=kw.pop("workers", 0))
    return [{k: v.numpy() for k, v in b.items()} for _ in range(epochs) for b in dl]


def digest(batches: list[dict]) -> str:
    h = hashlib.sha256()
    for b in batches:
        for key in sorted(b):
            h.update(key.encode())
            h.update(np.ascontiguousarray(b[key]).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------ the slow reference


def slow_best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing by scanning every open bin: longest first (ties in input order),
    into the fullest bin that still fits (ties: the earliest bin), else a new bin."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        best = None
        for b in range(len(bins)):
            if room[b] >= lengths[i] and (best is None or room[b] < room[best]):
                best = b
        if best is None:
            bins.append([])
            room.append(capacity)
            best = len(bins) - 1
        bins[best].append(i)
        room[best] -= lengths[i]
    return bins


def reference_bins(path: str, epoch: int, seq_len: int = SEQ_LEN, window: int = WINDOW,
                   seed: int = SEED, shuffle: bool = True) -> list[list[list[tuple[int, int, int]]]]:
    """Per shard, its bins of ``epoch``; a bin is a list of (shard-local doc, start, length)."""
    cap = seq_len + 1
    with fastdata.open_dataset(path) as raw:
        key = derive_key(derive_key(raw.manifest.fingerprint, seed, epoch), "bestfit")
        out = []
        for shard in range(len(raw.shards)):
            lengths = np.diff(raw.shard(shard).doc_offsets()).astype(int).tolist()
            n = len(lengths)
            docs = list(range(n))
            if shuffle and n > 1:
                keys = child_keys(key, np.full(n, shard), np.zeros(n, dtype=np.int64))
                docs = permute_reference(np.arange(n), np.full(n, n), keys).tolist()
            bins = []
            for w in range(0, n, window):
                full, items = [], []
                for d in docs[w : w + window]:
                    size = lengths[d]
                    if size <= cap:
                        if size:
                            items.append((d, 0, size))
                        continue
                    k = (size - 1) // seq_len
                    full += [[(d, i * seq_len, cap)] for i in range(k)]
                    if size - k * seq_len >= 2:
                        items.append((d, k * seq_len, size - k * seq_len))
                packed = slow_best_fit([it[2] for it in items], cap)
                bins += full + [[items[i] for i in b] for b in packed]
            out.append(bins)
    return out


def reference_batches(path: str, epoch: int, batch: int = BATCH) -> list[dict]:
    """The epoch's batches built by hand from ``reference_bins`` and the documents' tokens."""
    per_shard = reference_bins(path, epoch)
    first = np.concatenate([[0], np.cumsum([len(b) for b in per_shard])])
    flat = [b for bins in per_shard for b in bins]
    shard_of = [s for s, bins in enumerate(per_shard) for _ in bins]
    with fastdata.open_dataset(path) as raw:
        order = EpochOrder(SampleSpace(first.astype(np.int64)),
                           OrderConfig(global_batch=batch, partitions=batch, seed=SEED, drop_last=False),
                           epoch, raw.manifest.fingerprint)
        doc_first = np.concatenate([[0], np.cumsum(raw.shards.column("docs"))])
        eos = raw.tokenizer.eos_id
        out = []
        for step in range(order.num_steps):
            ids = order.global_batch(step)
            rows = {k: [] for k in ("input_ids", "labels", "attention_mask", "doc_ids", "position_ids")}
            cu = []
            for r, q in enumerate(ids.tolist()):
                tokens, owner, begins = [], [], []
                for d, start, length in flat[q] if q >= 0 else []:
                    g = int(doc_first[shard_of[q]]) + d
                    doc = raw.doc(g).astype(int).tolist()
                    begins.append(len(tokens))
                    tokens += doc[start : start + length]
                    owner += [g] * length
                real = len(tokens)
                tokens += [eos] * (SEQ_LEN + 1 - real)
                owner += [-1] * (SEQ_LEN + 1 - real)
                labels = [tokens[i + 1] if i + 1 < real and i + 1 not in begins else -100
                          for i in range(SEQ_LEN)]
                pos, seg = [], 0
                for i in range(SEQ_LEN):
                    if i == 0 or owner[i] != owner[i - 1] or i in begins:
                        seg = i
                        cu.append(r * SEQ_LEN + i)
                    pos.append(i - seg)
                rows["input_ids"].append(tokens[:SEQ_LEN])
                rows["labels"].append(labels)
                rows["attention_mask"].append([1 if i < real else 0 for i in range(SEQ_LEN)])
                rows["doc_ids"].append(owner[:SEQ_LEN])
                rows["position_ids"].append(pos)
            b = {k: np.array(v, dtype=np.int64) for k, v in rows.items()}
            b["sample_ids"] = np.where(ids >= 0, ids | (epoch << 40), ids)
            b["cu_seqlens"] = np.array(cu + [batch * SEQ_LEN], dtype=np.int32)
            out.append(b)
    return out


# ------------------------------------------------------------------ tests


def test_best_fit_matches_the_slow_reference():
    rng = random.Random(5)
    for trial in range(60):
        cap = rng.choice([2, 7, 65, 257])
        lengths = [rng.randint(1, cap) if rng.random() < 0.8 else rng.randint(1, 3)
                   for _ in range(rng.randint(0, 90))]
        bins, _ = best_fit(np.array(lengths, dtype=np.int64), cap)
        expected = slow_best_fit(lengths, cap)
        opened = int(bins.max()) + 1 if lengths else 0
        got = [sorted(np.flatnonzero(bins == b).tolist()) for b in range(opened)]
        assert got == [sorted(b) for b in expected], (trial, cap, lengths)


def test_split_documents_by_hand():
    """seq_len 4 (bins of 5): short documents whole; long ones in pieces every 4 tokens, the
    tail packed unless it is only the token the last full piece already shares."""
    doc, start, length, full = split_documents(np.array([0, 1, 5, 6, 9, 10]), 4)
    assert doc.tolist() == [1, 2, 3, 3, 4, 4, 5, 5, 5]
    assert start.tolist() == [0, 0, 0, 4, 0, 4, 0, 4, 8]
    assert length.tolist() == [1, 5, 5, 2, 5, 5, 5, 5, 2]
    assert full.tolist() == [False, False, True, False, True, True, True, True, False]


def test_batches_equal_the_slow_reference_two_epochs(data):
    """Every array of every batch of epochs 0 and 1, in order, against the hand-built batches
    (labels -100 on padding and across document boundaries, cu_seqlens from doc_ids)."""
    got = epoch_batches(data, epochs=2)
    expected = reference_batches(data, 0) + reference_batches(data, 1)
    assert len(got) == len(expected)
    for step, (g, e) in enumerate(zip(got, expected)):
        assert sorted(g) == sorted(e)
        for key in e:
            assert np.array_equal(g[key], e[key]), (step, key)
    assert [b["sample_ids"].tolist() for b in got[: len(got) // 2]] != \
        [(b["sample_ids"] - (1 << 40)).tolist() for b in got[len(got) // 2 :]], "epoch 1 repeats epoch 0"


def test_every_document_exactly_once_and_short_ones_never_split(data):
    ds = dataset(data, batch_size=BATCH)
    world = fastdata.World()
    with fastdata.open_dataset(data) as raw:
        doc_first = np.concatenate([[0], np.cumsum(raw.shards.column("docs"))])
        lengths = [int(x) for s in range(len(raw.shards))
                   for x in np.diff(raw.shard(s).doc_offsets().astype(np.int64))]
        assert len(lengths) == doc_first[-1]
    cap = SEQ_LEN + 1
    assert any(n > cap for n in lengths) and sum(0 < n <= cap for n in lengths) > 100
    for epoch in (0, 1):
        order = ds.epoch_order(epoch, world)
        ids = np.concatenate([order.global_batch(k) for k in range(order.num_steps)])
        assert (ids == -1).sum() < BATCH
        bins = ids[ids >= 0] & ((1 << 40) - 1)
        assert sorted(bins.tolist()) == list(range(order.plan.num_bins))
        row, shard, doc, start, length = order.plan.pieces(bins)
        pieces: dict[int, list[tuple[int, int, int]]] = {}
        for r, s, d, a, n in zip(row.tolist(), shard.tolist(), doc.tolist(), start.tolist(), length.tolist()):
            pieces.setdefault(int(doc_first[s]) + d, []).append((a, n, r))
        for g, size in enumerate(lengths):
            got = sorted(pieces.get(g, []))
            if size == 0:
                assert not got
            elif size <= cap:
                assert [(a, n) for a, n, _ in got] == [(0, size)], (epoch, g)  # whole, once
            else:
                k = (size - 1) // SEQ_LEN
                want = [(i * SEQ_LEN, cap) for i in range(k)]
                if size - k * SEQ_LEN >= 2:
                    want.append((k * SEQ_LEN, size - k * SEQ_LEN))
                assert [(a, n) for a, n, _ in got] == want, (epoch, g)
                assert len({r for _, _, r in got}) == len(got)  # no two pieces in one bin
        fill = np.bincount(row, weights=length)
        assert fill.max() <= cap


def test_cu_seqlens_consistent_with_doc_ids(data):
    for b in epoch_batches(data, batch=3)[:40]:
        docs, pos, cu = b["doc_ids"], b["position_ids"], b["cu_seqlens"].astype(np.int64)
        flat = docs.ravel()
        assert cu[0] == 0 and cu[-1] == flat.size and (np.diff(cu) > 0).all()
        for lo, hi in zip(cu[:-1], cu[1:]):
            assert len(set(flat[lo:hi].tolist())) == 1  # one document (or padding) per segment
            assert lo // SEQ_LEN == (hi - 1) // SEQ_LEN  # never across rows
            assert pos.ravel()[lo:hi].tolist() == list(range(hi - lo))
        starts = set(cu[:-1].tolist())
        changes = {i for i in range(1, flat.size) if flat[i] != flat[i - 1]}
        changes |= set(range(0, flat.size, SEQ_LEN))
        assert changes <= starts
        assert ((docs == -1) == (b["attention_mask"] == 0)).all()
        assert (b["labels"][docs == -1] == -100).all()


def test_golden_file_and_reference_agree(data):
    """The golden (tests/data/make_bestfit_fixture.py) guards against drift; the slow
    reference proves the golden itself is the documented packing, not just a past output."""
    golden = json.loads(GOLDEN.read_text())
    with fastdata.open_dataset(data) as raw:
        assert raw.manifest.fingerprint == golden["dataset_fingerprint"]
    batches = epoch_batches(data, epochs=2)
    assert [b["sample_ids"].tolist() for b in batches[:8]] == golden["first_sample_ids"]
    assert digest(batches) == golden["sha256"]
    assert digest(reference_batches(data, 0) + reference_batches(data, 1)) == golden["sha256"]
    assert golden["padding_share"] == round(
        float(sum((b["attention_mask"] == 0).sum() for b in batches)
              / sum(b["attention_mask"].size for b in batches)), 6)


def test_resume_at_any_step(data):
    """A state taken after k batches (in epoch 0, at its end, or in epoch 1), loaded into a
    new loader, continues with exactly the batches of an uninterrupted two-epoch run."""
    def loader():
        return fastdata.DataLoader(dataset(data), batch_size=BATCH, num_workers=2)

    def batch_digest(b) -> str:  # every key's bytes, compared batch by batch
        return digest([{k: v.numpy() for k, v in b.items()}])

    dl = loader()
    full = [batch_digest(b) for _ in range(3) for b in dl]  # each iter() is the next epoch
    steps = len(full) // 2
    assert steps > 20
    assert_resumes_exactly(loader, (0, 1, 7, steps // 2, steps - 1, steps, steps + 1, steps + 5), full=full,
                           item=batch_digest)


def test_same_global_batches_for_1_2_and_4_ranks(data):
    g = 8

    def global_batches(world_size: int) -> list[list[np.ndarray]]:
        per_rank = []
        for rank in range(world_size):
            world = fastdata.World(rank=rank, world_size=world_size)
            dl = fastdata.DataLoader(dataset(data, world=world), batch_size=g // world_size, num_workers=1)
            per_rank.append([(b["sample_ids"].numpy(), b["input_ids"].numpy(), b["labels"].numpy())
                             for _ in range(2) for b in dl])
        return [[np.concatenate([r[k][i] for r in per_rank]) for i in range(3)]
                for k in range(len(per_rank[0]))]

    one = global_batches(1)
    assert len(one) > 10
    for w in (2, 4):
        other = global_batches(w)
        assert len(other) == len(one)
        for a, b in zip(one, other):
            assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_process_workers_give_the_same_batches(data):
    """backend="processes": the dataset (with its plans) travels to the worker processes."""
    threads = epoch_batches(data, batch=BATCH)
    ds = dataset(data)
    dl = fastdata.DataLoader(ds, batch_size=BATCH, num_workers=2, backend="processes")
    procs = [{k: v.numpy() for k, v in b.items()} for b in dl]
    assert digest(procs) == digest(threads)


def test_refusals(data):
    with pytest.raises(fastdata.FastdataConfigError, match="pack_window"):
        dataset(data, sampling={"mode": "bestfit", "pack_window": 0})
    with pytest.raises(fastdata.FastdataConfigError, match="bestfit"):
        fastdata.TokenDataset([fastdata.Source(data, 1), fastdata.Source(data, 2)], seq_len=SEQ_LEN,
                              sampling={"mode": "bestfit"})
    dl = fastdata.DataLoader(dataset(data), batch_size=BATCH, num_workers=0)
    next(iter(dl))
    state = dl.state_dict()
    other = fastdata.DataLoader(dataset(data, sampling={"mode": "bestfit", "pack_window": 9}),
                                batch_size=BATCH, num_workers=0)
    with pytest.raises(fastdata.FastdataStateError, match="bestfit/8"):
        other.load_state_dict(state)


# ------------------------------------------------------------------ several processes


@pytest.mark.multiprocess
@pytest.mark.timeout(150)
def test_four_rank_job_matches_the_single_process_order(tmp_path, data):
    """2 fake nodes × 2 ranks (gloo) in bestfit mode: every rank's micro-batches stitch into
    the global batches a single process computes, and the data matches the sample ids."""
    worker = HERE / "_mp_worker.py"
    job = _jobs.Job(worker, tmp_path, 2, 2, dataset=data, mode="bestfit", batch_size=2, seq_len=SEQ_LEN,
                    seed=SEED, window=16)
    try:
        results = job.wait(130)
    finally:
        _jobs.kill_all()
    runs = [r["epochs"][0] for r in results]
    stitched = [[i for run in runs for i in run["local"][k]] for k in range(len(runs[0]["local"]))]
    assert all(run["gathered"] == stitched for run in runs)
    ds = fastdata.TokenDataset(data, seq_len=SEQ_LEN, seed=SEED, batch_size=8, sampling={"mode": "bestfit"},
                               world=fastdata.World())
    order = ds.epoch_order(0, fastdata.World())
    assert stitched == [order.global_batch(k).tolist() for k in range(order.num_steps)]
    seen = Counter(i for b in stitched for i in b)
    assert max(seen.values()) == 1 and len(seen) == order.num_steps * 8
    assert os.path.exists(tmp_path / "result-3.json")
