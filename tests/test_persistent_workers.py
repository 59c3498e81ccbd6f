"""A stock torch DataLoader (and torchdata's StatefulDataLoader) with persistent_workers=True:
``ds.set_epoch`` and ``ds.load_state_dict`` in the training process reach the worker copies
made at the first ``iter()`` (fastdata/loader/epoch_share.py), in exactly the pure order.

Audit §5.2: (a) epochs 0 and 1 with set_epoch(e) equal the pure order; (b) 3 batches, break,
set_epoch(1): exactly epoch 1; (c) load_state_dict after the first iter() is applied (or
raises), never silently ignored. Each with the dataset batching (loader batch_size=None) and
per sample (loader batch_size=B), in real worker processes, fork and spawn."""

from __future__ import annotations

import itertools

import pytest
import torch
from _loader import packed_dataset

import fastdata
from fastdata.errors import FastdataStateError

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]
SEQ, SEED, WINDOW, B, WORKERS = 64, 3, 4, 4, 2


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return packed_dataset(str(tmp_path_factory.mktemp("persistent")), docs=200)


def make(data: str, batched: bool) -> fastdata.TokenDataset:
    return fastdata.TokenDataset(data, seq_len=SEQ, seed=SEED, batch_size=B if batched else None,
                                 world=fastdata.World(), order=fastdata.OrderOptions(window=WINDOW))


def pure(data: str, batched: bool, epoch: int, start: int = 0) -> list[list[int]]:
    """The loader's batches of ``epoch`` from step ``start`` on, from the pure order function.
    Per sample, worker w yields the samples of steps start + w, start + w + WORKERS, ... and
    the loader batches B of one worker's items at a time, taking the workers in turn."""
    ds = make(data, batched)
    order = ds.epoch_order(epoch, ds.resolved_world())
    steps = [order.global_batch(k).tolist() for k in range(start, order.num_steps)]
    if batched:
        return steps
    lanes = [[s[0] for s in steps[w::WORKERS]] for w in range(WORKERS)]
    chunks = [[lane[i:i + B] for i in range(0, len(lane), B)] for lane in lanes]
    return [c for row in itertools.zip_longest(*chunks) for c in row if c]


def loader(ds: fastdata.TokenDataset, batched: bool, **kw) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, batch_size=None if batched else B, num_workers=WORKERS,
                                       persistent_workers=True, **kw)


def ids(batches) -> list[list[int]]:
    return [b["sample_ids"].tolist() for b in batches]


def take(dl, n: int) -> list[list[int]]:
    return ids(itertools.islice(iter(dl), n))


MODES = pytest.mark.parametrize("batched", [True, False], ids=["dataset_batches", "per_sample"])


@MODES
def test_a_every_epoch_is_the_pure_order(data, batched):
    """(a): with set_epoch(e) before each epoch, epochs 0, 1, 2 of one persistent loader
    are each exactly the pure order of that epoch (and they differ)."""
    ds = make(data, batched)
    dl = loader(ds, batched)
    epochs = []
    for e in range(3):
        ds.set_epoch(e)
        epochs.append(ids(dl))
        assert epochs[e] == pure(data, batched, e), f"epoch {e}"
    assert epochs[0] != epochs[1] != epochs[2]


@MODES
def test_b_early_break_then_set_epoch_gives_exactly_the_next_epoch(data, batched):
    """(b): 3 batches, break, set_epoch(1): exactly epoch 1, nothing of epoch 0's prefetched
    batches and nothing skipped. Iterating again without set_epoch starts that epoch over, as
    fresh (non-persistent) workers do."""
    ds = make(data, batched)
    dl = loader(ds, batched, prefetch_factor=4)
    ds.set_epoch(0)
    assert take(dl, 3) == pure(data, batched, 0)[:3]
    ds.set_epoch(1)
    assert ids(dl) == pure(data, batched, 1)
    assert take(dl, 5) == pure(data, batched, 1)[:5]  # no set_epoch: epoch 1 again, from its start
    ds.set_epoch(2)
    assert ids(dl) == pure(data, batched, 2)


@MODES
def test_c_load_state_dict_after_the_first_iter_is_applied(data, batched):
    """(c): a state loaded after the workers exist is applied at the next iter() (and holds
    until set_epoch, as with fresh workers); a bad one raises and changes nothing."""
    ds = make(data, batched)
    dl = loader(ds, batched)
    ds.set_epoch(1)
    assert take(dl, 3) == pure(data, batched, 1)[:3]
    state = dict(make(data, batched).state_dict(), epoch=0, step=10)
    ds.load_state_dict(state)
    rest = pure(data, batched, 0, start=10)
    assert ids(dl) == rest
    assert ids(dl) == rest  # the loaded state holds until set_epoch
    with pytest.raises(FastdataStateError, match="seed"):
        ds.load_state_dict(dict(state, identity=dict(state["identity"], seed=SEED + 1)))
    assert take(dl, 2) == rest[:2], "a failed load changed what the workers do"
    ds.set_epoch(2)
    assert ids(dl) == pure(data, batched, 2)


def test_spawned_persistent_workers(data):
    """The same under the spawn start method (the record travels as a file descriptor)."""
    ds = make(data, True)
    dl = loader(ds, True, multiprocessing_context="spawn")
    ds.set_epoch(0)
    assert take(dl, 3) == pure(data, True, 0)[:3]
    ds.set_epoch(1)
    assert ids(dl) == pure(data, True, 1)
    ds.load_state_dict(dict(ds.state_dict(), epoch=0, step=7))
    assert ids(dl) == pure(data, True, 0, start=7)


def test_stateful_dataloader_with_persistent_workers(data):
    """torchdata's StatefulDataLoader, persistent workers: its per-worker state resumes
    exactly, and set_epoch then reaches the resumed workers for the next epoch."""
    sdl = pytest.importorskip("torchdata.stateful_dataloader")

    def stateful(ds):
        return sdl.StatefulDataLoader(ds, batch_size=None, num_workers=WORKERS, persistent_workers=True)

    want = [pure(data, True, e) for e in (0, 1)]
    ds = make(data, True)
    dl = stateful(ds)
    ds.set_epoch(0)
    it = iter(dl)
    assert ids(itertools.islice(it, 5)) == want[0][:5]
    saved = dl.state_dict()
    assert ids(it) == want[0][5:]
    ds.set_epoch(1)
    it = iter(dl)
    assert ids(itertools.islice(it, 6)) == want[1][:6]
    saved_1 = dl.state_dict()
    assert ids(it) == want[1][6:]

    resumed = make(data, True)
    dl = stateful(resumed)
    dl.load_state_dict(saved)
    assert ids(dl) == want[0][5:]
    resumed.set_epoch(1)
    assert ids(dl) == want[1], "set_epoch did not reach the resumed persistent workers"

    again = make(data, True)
    dl = stateful(again)
    dl.load_state_dict(saved_1)
    assert ids(dl) == want[1][6:]


def test_a_blend_loaded_under_new_weights_reanchors_the_workers(tmp_path_factory):
    """A blend's state loaded under other weights (allow_mixture_change) after the first
    iter(): the persistent workers take the new anchor, this epoch and the next."""
    root = tmp_path_factory.mktemp("blend")
    web, code = (packed_dataset(str(root / n), docs=120, seed=s) for n, s in (("web", 1), ("code", 2)))

    def blend(weights, **kw):
        return fastdata.TokenDataset([fastdata.Source(web, weights[0]), fastdata.Source(code, weights[1])],
                                     seq_len=SEQ, seed=SEED, batch_size=B, world=fastdata.World(), **kw)

    saved = blend((3, 1))
    it = iter(saved)
    for _ in range(9):
        next(it)
    state = saved.state_dict()

    def reference(epoch_after: bool) -> list[list[int]]:
        ds = blend((1, 1), allow_mixture_change=True)
        ds.load_state_dict(state)
        if epoch_after:
            ds.set_epoch(1)
        return ids(ds)

    ds = blend((1, 1), allow_mixture_change=True)
    dl = loader(ds, True)
    ds.set_epoch(0)
    first = take(dl, 3)  # the workers are made before the load, without its anchor
    assert first == ids(itertools.islice(iter(blend((1, 1))), 3))
    ds.load_state_dict(state)
    assert ids(dl) == reference(False)
    ds.set_epoch(1)
    assert ids(dl) == reference(True)


def test_the_start_record_leaves_nothing_behind(data):
    """Each dataset's record is one unlinked in-memory file: dropping datasets closes it
    (no descriptor grows), nothing appears in /dev/shm, and an ordinary pickle carries none."""
    import gc
    import os
    import pickle

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    gc.collect()
    before = fds()
    for _ in range(50):
        ds = make(data, True)
        ds.set_epoch(1)
        copy = pickle.loads(pickle.dumps(ds))  # its own record, not this one's descriptor
        assert copy._share._fd != ds._share._fd
        del ds, copy
    gc.collect()
    assert fds() <= before + 2
    if shm:
        assert not {n for n in set(os.listdir("/dev/shm")) - shm if "fastdata-epoch" in n}
