"""Exact resume of fastdata.DataLoader in one process per run (B1, B2, B5–B8, F4–F6)."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import signal
import threading
import time

import pytest
import torch
from _loader import ids_of, packed_dataset
from _state import assert_resumes_exactly, batch_ids, cut, flat, in_fresh_process

import fastdata

pytestmark = pytest.mark.timeout(120)
HERE = os.path.dirname(os.path.abspath(__file__))
STATE_V1 = os.path.join(HERE, "data", "state_v1.json")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("resume")))


def loader(data, *, workers=2, batch=4, seed=9, seq_len=32, backend="threads", **kw):
    ds = fastdata.TokenDataset(data, seq_len=seq_len, seed=seed, **kw)
    return fastdata.DataLoader(ds, batch_size=batch, num_workers=workers, backend=backend)


def uninterrupted(data, epochs=2, **kw) -> list[int]:
    dl = loader(data, **kw)
    return [i for _ in range(epochs) for i in ids_of(dl)]


@pytest.mark.parametrize("workers", [0, 2])
def test_b1_cut_points(data, workers):
    """Cut a two-epoch run anywhere in epoch 0 (state through JSON), resume in a new loader:
    the rest of epoch 0 and epoch 1 follow exactly."""
    steps = len(loader(data))
    per = 4
    runs = assert_resumes_exactly(lambda: loader(data, workers=workers), (0, 1, steps // 2, steps - 1, steps),
                                  epochs_run=2)
    for k, run in runs.items():
        assert len(flat(run.before)) == k * per
    end = runs[steps]  # a cut exactly at the end resumes at epoch 1, step 0: all of epoch 1
    assert end.state["epoch"] == 1 and end.state["step"] == 0
    assert len(flat(end.epochs[0])) == steps * per, "the resumed epoch is empty or short (Mosaic #700)"


def test_b1_same_topology_cut_on_four_ranks(data):
    """Every rank of a 4-rank world cuts at the same steps and resumes its own stripe exactly
    (the order is a pure function of the world; real processes: tests/test_multiprocess.py)."""
    worlds = [fastdata.World(rank=r, world_size=4, local_rank=r, ranks_per_node=4) for r in range(4)]
    for w in worlds:
        def make(w=w):
            return loader(data, world=w, batch=2)

        steps = len(ids_of(make())) // 2
        # two epochs: after a cut the rest of epoch 0 and then epoch 1 must follow exactly
        runs = assert_resumes_exactly(make, (1, steps // 2, steps - 1, steps), epochs_run=2,
                                      json_roundtrip=False, note=f"rank {w.rank}")
        end = runs[steps]
        assert (end.state["epoch"], end.state["step"]) == (1, 0)
        assert len(end.epochs[0]) == steps, "the resumed epoch is empty or short"


def test_b1_first_step_of_next_epoch(data):
    """All of epoch 0 and one batch of epoch 1, cut: the resumed loader gives the rest of epoch 1."""
    steps = len(loader(data))
    runs = assert_resumes_exactly(lambda: loader(data), [steps + 1], epochs_run=2, json_roundtrip=False)
    run = runs[steps + 1]
    assert (run.state["epoch"], run.state["step"]) == (1, 1)


def test_b1_resume_in_a_fresh_process(data, tmp_path):
    build = (f"import fastdata\nds = fastdata.TokenDataset({data!r}, seq_len=32, seed=9)\n"
             "dl = fastdata.DataLoader(ds, batch_size=4, num_workers=2)")
    assert_resumes_exactly(lambda: loader(data), [7], resume=in_fresh_process(build, tmp_path))


def test_b2_prefetched_batches_are_not_lost(data):
    """Consume 3 batches, wait (a hook on the loader's batch making, no sleep) until at least 4
    more are made and waiting in the look-ahead, take the state: the resumed stream starts at
    batch 4 and holds each prefetched batch exactly once, in place."""
    full = uninterrupted(data, epochs=1, workers=2)
    dl = loader(data, workers=2)
    dl.prefetch = 4
    made: dict[int, list[int]] = {}  # step -> ids of each batch the worker threads finished
    ready = threading.Condition()
    make = dl._make

    def counted(plan, steps):
        batches = make(plan, steps)
        with ready:
            made.update({s: b["sample_ids"].tolist() for s, b in zip(steps, batches)})
            ready.notify_all()
        return batches

    dl._make = counted
    it = iter(dl)
    got = [int(i) for _ in range(3) for i in next(it)["sample_ids"]]
    with ready:  # the 4 batches after the 3 consumed ones are made and wait (threads finish in any order)
        assert ready.wait_for(lambda: all(s in made for s in range(3, 7)), timeout=30), (
            f"only steps {sorted(made)} were made: nothing waits in the look-ahead")
        ahead = list(itertools.takewhile(lambda s: s in made, itertools.count(3)))
        prefetched = [made[s] for s in ahead]
    state = dl.state_dict()
    assert state["step"] == 3  # counted at the training loop, not at the producers
    del it
    resumed = loader(data, workers=2)
    resumed.load_state_dict(state)
    rest = ids_of(resumed)
    assert got + rest == full
    flat = [i for batch in prefetched for i in batch]
    assert rest[: len(flat)] == flat  # the prefetched batches come next, in order
    assert all(rest.count(i) == 1 for i in flat)  # and once


@pytest.mark.parametrize(("save_workers", "load_workers", "backend"),
                         [(2, 0, "threads"), (2, 3, "threads"), (0, 2, "processes")])
def test_b5_worker_count_change(data, save_workers, load_workers, backend):
    full = [batch_ids(b) for b in loader(data, seq_len=64)]
    def resumed():
        return loader(data, workers=load_workers, backend=backend, seq_len=64)

    assert_resumes_exactly(lambda: loader(data, workers=save_workers, seq_len=64), [5], full=full,
                           make_resumed=resumed, json_roundtrip=False)


def test_b4_world_size_change_in_process(data):
    """Global batch 8: 4 ranks × 2 → 2 ranks × 4 (ranks simulated one after another)."""
    def world(rank, size):
        return fastdata.World(rank=rank, world_size=size, local_rank=rank % 2, ranks_per_node=2)

    def rank_loaders(size, batch):
        return [loader(data, batch=batch, world=world(r, size)) for r in range(size)]

    four = rank_loaders(4, 2)
    iters = [iter(dl) for dl in four]
    reference = []
    for _ in range(len(four[0])):
        reference.append([i for it in iters for i in next(it)["sample_ids"].tolist()])
    s = 5
    four = rank_loaders(4, 2)
    iters = [iter(dl) for dl in four]
    for _ in range(s):
        for it in iters:
            next(it)
    states = [dl.state_dict() for dl in four]
    assert all(st == states[0] for st in states)  # one state for the whole job
    two = rank_loaders(2, 4)
    for dl in two:
        dl.load_state_dict(states[0])
    iters = [iter(dl) for dl in two]
    resumed = [[i for it in iters for i in next(it)["sample_ids"].tolist()]
               for _ in range(len(reference) - s)]
    assert resumed == reference[s:]


@pytest.mark.parametrize(("field", "change"), [
    ("seed", {"seed": 10}), ("seq_len", {"seq_len": 16}), ("global_batch", {"batch": 8}),
    ("partitions", {"order": None}), ("dataset", {"data": "other"}),
])
def test_b6_incompatible_state_is_rejected(data, tmp_path, field, change):
    _, state = cut(loader(data), 3)
    kwargs = {"seed": 9, "seq_len": 32, "batch": 4}
    kwargs.update({k: v for k, v in change.items() if k in kwargs})
    source = data
    if change.get("data") == "other":
        source = packed_dataset(str(tmp_path / "other"), seed=77)
    order = fastdata.OrderOptions(partitions=2) if "order" in change else None
    target = loader(source, seed=kwargs["seed"], seq_len=kwargs["seq_len"], batch=kwargs["batch"],
                    order=order)
    def same_settings():
        return loader(source, seed=kwargs["seed"], seq_len=kwargs["seq_len"], batch=kwargs["batch"],
                      order=order)

    # the target already holds a state of its own (step 5): a failed load must leave it
    # exactly as it was before the call (docs/loader.md), never restart at epoch 0
    _, own = cut(same_settings(), 5)
    target.load_state_dict(own)
    with pytest.raises(fastdata.FastdataStateError) as err:
        target.load_state_dict(state)
    saved, current = state["identity"][field], target.dataset.identity(target.world)[field]
    assert saved != current
    assert f"'{field}'" in str(err.value)
    assert f"is {saved!r} but this stream has {current!r}" in str(err.value)  # both values
    assert target.state_dict() == own
    reference = same_settings()
    reference.load_state_dict(own)
    first = next(iter(target))["sample_ids"].tolist()
    assert first == next(iter(reference))["sample_ids"].tolist()
    assert first != next(iter(same_settings()))["sample_ids"].tolist(), "restarted at epoch 0"


def test_b6_malformed_states(data):
    dl = loader(data)
    _, good = cut(loader(data), 2)
    cases = {
        "version": {**good, "version": 99},
        "step": {**good, "step": 10**9},
        "epoch": {**good, "epoch": -1},
        "identity": {k: v for k, v in good.items() if k != "identity"},
    }
    for name, bad in cases.items():
        with pytest.raises(fastdata.FastdataStateError, match=f"'{name}'"):
            dl.load_state_dict(bad)
    with pytest.raises(fastdata.FastdataStateError, match="not valid JSON"):
        dl.load_state_dict(json.dumps(good)[:-5])
    extra = {**good, "payload": "cos\nsystem\n(S'echo pwned'\ntR."}  # G1(c): ignored, JSON only
    dl.load_state_dict(extra)
    assert "payload" not in dl.state_dict()


def test_b7_lifecycle(data):
    _, state = cut(loader(data), 4)
    dl = loader(data)
    dl.load_state_dict(state)
    assert dl.state_dict() == state  # (a) load then state, no iteration
    it = iter(loader(data))  # (b) an iterator created before the load
    dl2 = loader(data)
    it = iter(dl2)
    next(it)
    dl2.load_state_dict(state)
    with pytest.raises(fastdata.FastdataStateError, match="replaced by load_state_dict"):
        next(it)
    assert next(iter(dl2))["sample_ids"].tolist() == next(iter(dl))["sample_ids"].tolist()
    # (c) resume, finish the epoch, then the next epoch starts at its own position 0
    dl3 = loader(data)
    dl3.load_state_dict(state)
    ids_of(dl3)
    epoch1 = uninterrupted(data, epochs=2)[len(uninterrupted(data, epochs=1)):]
    assert ids_of(dl3) == epoch1
    # (d) load, break early, start another epoch: applied once, next epoch at 0
    dl4 = loader(data)
    dl4.load_state_dict(state)
    for _ in iter(dl4):
        break
    assert ids_of(dl4) == epoch1


def test_b8_state_is_small_versioned_json(data, tmp_path):
    _, state = cut(loader(data), 3)
    text = json.dumps(state)
    assert json.loads(text) == state and len(text) < 16 << 10
    assert isinstance(state["version"], int)
    big = packed_dataset(str(tmp_path / "big"), docs=3000, shard_size=1 << 20)
    _, big_state = cut(loader(big, seq_len=2), 3)
    assert abs(len(json.dumps(big_state)) - len(text)) < 64  # independent of the sample count


def test_b8_committed_v1_state_resumes(data):
    """A state written by this version and committed: it must keep loading, and resume right."""
    with open(STATE_V1) as f:
        fixture = json.load(f)
    full = uninterrupted(data, epochs=1)
    dl = loader(data)
    dl.load_state_dict(fixture["state"])
    assert full[: fixture["consumed"]] + ids_of(dl) == full


def test_f4_memory_flat_across_epochs(data):
    def uss_kb() -> int:
        with open("/proc/self/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))

    dl = loader(data, workers=2, seq_len=16)
    readings = []
    for _ in range(3):
        ids_of(dl)
        readings.append(uss_kb())
    assert readings[2] - readings[1] < 0.02 * readings[1]
    assert len(pickle.dumps(dl.dataset)) < 1 << 20


@pytest.mark.multiprocess
def test_f4_worker_process_memory_flat_across_epochs(data):
    """F4 in the worker processes, where copy-on-access growth happens: a stock DataLoader with
    persistent workers, 3 epochs; each worker's USS grows < 2 % (+ 1 MiB) from epoch 2 to 3,
    and the dataset a worker receives pickles small whatever the sample count."""
    import psutil
    import torch

    ds = fastdata.TokenDataset(data, seq_len=16, seed=9, batch_size=4)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    readings = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert sum(1 for _ in dl) > 0
        workers = [psutil.Process(w.pid) for w in dl._iterator._workers]  # the persistent ones
        assert len(workers) == 2 and all(w.is_running() for w in workers)
        readings.append([w.memory_full_info().uss for w in workers])
    for before, after in zip(readings[1], readings[2]):
        assert after - before < 0.02 * before + (1 << 20), readings
    small = fastdata.TokenDataset(data, seq_len=2048, seed=9, batch_size=4)
    assert len(pickle.dumps(ds)) < 1 << 20 and abs(len(pickle.dumps(ds)) - len(pickle.dumps(small))) < 4096
    del dl


def test_f5_clean_shutdown_after_early_break(data):
    baseline = set(threading.enumerate())  # threads of earlier tests may end meanwhile: compare sets
    dl = loader(data, workers=3)
    for _ in dl:
        break
    del dl
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [t.name for t in set(threading.enumerate()) - baseline] == []
    procs = loader(data, workers=2, backend="processes")
    it = iter(procs)
    next(it)
    import multiprocessing

    assert multiprocessing.active_children()
    del it
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


def test_f6_killed_worker_process_raises(data):
    dl = loader(data, workers=2, backend="processes", seq_len=8)
    dl.timeout = 20
    it = iter(dl)
    next(it)
    import multiprocessing

    victim = multiprocessing.active_children()[0]
    os.kill(victim.pid, signal.SIGKILL)
    t0 = time.monotonic()
    # torch reports the death itself ("DataLoader worker ... is killed"), or fails to receive
    # the batch the dead worker had queued (connection reset, or EOF while fetching its shared
    # memory): either way, an error, no hang
    with pytest.raises((RuntimeError, ConnectionError, EOFError)) as err:
        for _ in it:
            pass
    assert isinstance(err.value, (ConnectionError, EOFError)) or "worker" in str(err.value).lower()
    assert time.monotonic() - t0 < 25
    # shut the dead loader down now: torch's SIGCHLD handler would otherwise keep reporting
    # the killed worker, into whatever test runs next
    it.close()
    del it, err, dl
    import gc

    gc.collect()
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


def test_torchdata_stateful_dataloader(data):
    pytest.importorskip("torchdata")
    from torchdata.stateful_dataloader import StatefulDataLoader

    def make():
        return StatefulDataLoader(fastdata.TokenDataset(data, seq_len=32, seed=9, batch_size=4),
                                  batch_size=None, num_workers=2)

    full = [batch_ids(b) for b in make()]
    assert_resumes_exactly(make, [5], full=full, json_roundtrip=False)
    ids = flat(full)
    assert torch.tensor(ids).unique().numel() == len(ids)


def test_iter_without_next_moves_nothing(data):
    """Lightning calls iter() once only to check the loader is iterable: that must neither skip
    epoch 0 nor consume a loaded state."""
    dl = loader(data)
    iter(dl)  # dropped unused
    assert ids_of(dl) == uninterrupted(data, epochs=1)
    _, state = cut(loader(data), 4)
    dl = loader(data)
    dl.load_state_dict(state)
    it = iter(dl)
    assert dl.state_dict() == state
    rest = ids_of(it)
    expected = uninterrupted(data, epochs=1)
    assert rest == expected[len(expected) - len(rest):] and len(rest) < len(expected)
