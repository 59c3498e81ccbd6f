"""The global sample order, tested as pure functions (A1, A3, parts of A2/A7, F7)."""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastdata._native as native
from fastdata.errors import FastdataConfigError
from fastdata.sampling.order import EpochOrder, OrderConfig, Stripe, document_space, packed_space
from fastdata.sampling.permute import child_keys, permute_reference

pytestmark = pytest.mark.timeout(120)


def epoch_ids(order: EpochOrder) -> np.ndarray:
    return order.slots(np.arange(order.num_steps), 0, order.config.global_batch).ravel()


@st.composite
def worlds(draw):
    nodes = draw(st.integers(1, 64))
    ranks = draw(st.integers(1, 8))
    workers = draw(st.integers(0, 8))
    micro = draw(st.integers(1, 16))
    g = nodes * ranks * micro
    parts = draw(st.sampled_from([d for d in range(1, min(g, 128) + 1) if g % d == 0]))
    kind = draw(st.integers(0, 2))
    if kind == 0:
        m = draw(st.sampled_from([0, 1, 7, 97, 1009, g, g - 1, g + 1, 3 * g, 3 * g + 1]))
    else:
        m = draw(st.integers(0, 10**6))
    return nodes, ranks, workers, micro, parts, m, draw(st.booleans()), draw(st.booleans())


def split_shards(m: int, k: int, rng: np.random.Generator) -> np.ndarray:
    cuts = np.sort(rng.integers(0, m + 1, size=max(k - 1, 0)))
    return np.diff(np.concatenate([[0], cuts, [m]]))


# 2,000 examples of whole epochs per CI run (about 15 s here); FASTDATA_A1_EXAMPLES=10000: the full sweep.
@settings(max_examples=int(os.environ.get("FASTDATA_A1_EXAMPLES", 2000)), deadline=None,
          derandomize=True)
@given(worlds(), st.integers(1, 40), st.integers(0, 2**32))
def test_a1_every_sample_once_over_every_world(w, shards, seed):
    """A1: the whole epoch's concatenation over (node, rank, worker) is a permutation of the samples plus
    flagged padding; drop_last drops exactly M mod G; every rank gets equal micro-batches."""
    nodes, ranks, workers, micro, parts, m, shuffle, drop_last = w
    world_size = nodes * ranks
    g = world_size * micro
    space = document_space(split_shards(m, shards, np.random.default_rng(seed)))
    config = OrderConfig(g, parts, seed=seed, shuffle=shuffle, window=[None, 1, 3][seed % 3],
                         drop_last=drop_last)
    order = EpochOrder(space, config, epoch=seed % 5, identity="a1", permute=native.permute)
    steps = order.num_steps
    assert steps == (m // g if drop_last or m % g == 0 else m // g + 1)
    # ranks: equal, contiguous stripes that tile the global batch
    stripes = [Stripe.of(g, r, world_size) for r in range(world_size)]
    assert [(s.lo, s.hi) for s in stripes] == [(r * micro, (r + 1) * micro) for r in range(world_size)]
    # workers: their steps partition the epoch, in turns
    nw = max(workers, 1)
    lanes = [Stripe.of(g, 0, world_size, w_, nw).steps(0, steps) for w_ in range(nw)]
    assert sorted(s for lane in lanes for s in lane) == list(range(steps))
    # samples: the whole epoch, as the concatenation of every (rank, worker) piece: each rank's
    # own call for its stripe of all steps, whose rows the workers' lanes partition (above)
    if steps == 0:
        return
    pieces = np.full((steps, g), -2, dtype=np.int64)
    every = np.arange(steps, dtype=np.int64)
    for s in stripes:
        pieces[:, s.lo : s.hi] = order.slots(every, s.lo, s.hi)
    assert (pieces != -2).all()  # every slot of every global step made by exactly one piece
    real = pieces[pieces >= 0]
    assert np.all(real < m)
    assert np.bincount(real, minlength=m).max(initial=0) <= 1, "a sample is repeated in the epoch"
    padding = int((pieces < 0).sum())
    assert padding <= g - 1
    assert len(real) == (m - m % g if drop_last else m)  # drop_last drops exactly M mod G
    assert padding == (0 if drop_last else (-m) % g)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(0, 3000), st.integers(1, 12), st.sampled_from([1, 2, 4, 6, 12, 24]),
       st.booleans(), st.booleans(), st.integers(0, 1000))
def test_full_epoch_exactly_once(m, shards, g, shuffle, drop_last, seed):
    rng = np.random.default_rng(seed)
    parts = int(rng.choice([d for d in range(1, g + 1) if g % d == 0]))
    space = document_space(split_shards(m, shards, rng))
    order = EpochOrder(space, OrderConfig(g, parts, seed=seed, shuffle=shuffle,
                                          window=[None, 1, 2][seed % 3], drop_last=drop_last),
                       epoch=1, permute=native.permute)
    ids = epoch_ids(order) if order.num_steps else np.zeros(0, np.int64)
    real = ids[ids >= 0]
    assert len(np.unique(real)) == len(real)
    if drop_last:
        assert len(real) == m - m % g and (ids >= 0).all()
    else:
        assert sorted(real.tolist()) == list(range(m))
        assert (ids < 0).sum() == (-m) % g


WORLDS = [(1, 1, 0), (1, 2, 3), (2, 2, 2), (3, 4, 1), (6, 4, 2)]  # nodes, ranks/node, workers


def test_a3_global_batches_identical_in_every_world():
    """A3: for a fixed global batch of 24, every world sees the same ordered global batches,
    and each rank's micro-batch is a contiguous stripe of it."""
    space = packed_space(np.random.default_rng(3).integers(100, 5000, size=37), seq_len=16)
    config = OrderConfig(24, 24, seed=7)
    reference = EpochOrder(space, config, epoch=2, identity="a3", permute=native.permute)
    expected = epoch_ids(reference).reshape(-1, 24)
    for nodes, ranks, workers in WORLDS:
        world_size = nodes * ranks
        order = EpochOrder(space, config, epoch=2, identity="a3", permute=native.permute)
        per_step = [[None] * world_size for _ in range(order.num_steps)]
        for rank in range(world_size):
            for worker in range(max(workers, 1)):
                stripe = Stripe.of(24, rank, world_size, worker, max(workers, 1))
                assert stripe.hi - stripe.lo == 24 // world_size
                for step in stripe.steps(0, order.num_steps):
                    per_step[step][rank] = order.slots(step, stripe.lo, stripe.hi)
        got = np.array([np.concatenate(ranks_) for ranks_ in per_step])
        assert np.array_equal(got, expected), (nodes, ranks, workers)


def test_node_reads_about_its_share_of_shards():
    """With partitions divisible by nodes, each of 2 nodes reads ~half of the shards."""
    space = document_space(np.full(64, 100))
    order = EpochOrder(space, OrderConfig(16, 16, seed=1, window=4), epoch=0, permute=native.permute)
    for node in range(2):
        ids = order.slots(np.arange(order.num_steps), node * 8, node * 8 + 8).ravel()
        shards = np.unique(order.shards_of(ids))
        assert len(shards) <= 64 // 2 + 2  # a partition boundary may split one shard


def test_seed_and_epoch_change_the_order():
    space = packed_space(np.full(40, 2000), seq_len=8)
    base = epoch_ids(EpochOrder(space, OrderConfig(8, 8, seed=1234), 0, "x", native.permute))
    for seed, epoch in [(1235, 0), (1234, 1)]:
        other = epoch_ids(EpochOrder(space, OrderConfig(8, 8, seed=seed), epoch, "x", native.permute))
        assert np.mean(base != other) >= 0.9
        assert len(np.intersect1d(base, other)) >= len(base) - 8  # only the dropped tails differ
    unshuffled = epoch_ids(EpochOrder(space, OrderConfig(8, 8, shuffle=False), 0, "x", native.permute))
    assert np.array_equal(np.sort(unshuffled[::8]), unshuffled[::8])  # partition 0 in order


def test_native_and_reference_permutations_agree():
    rng = np.random.default_rng(0)
    for _ in range(50):
        size = rng.integers(1, 10 ** int(rng.integers(1, 13)), 64)
        idx = (rng.random(64) * size).astype(np.int64)
        keys = rng.integers(0, 2**63, 64).astype(np.uint64)
        assert np.array_equal(permute_reference(idx, size, keys), native.permute(idx, size, keys))
    for n in (1, 2, 3, 5, 64, 1000, 4097):
        out = native.permute(np.arange(n), np.full(n, n), child_keys(9, np.zeros(n), np.zeros(n)))
        assert sorted(out.tolist()) == list(range(n))
    with pytest.raises(ValueError, match="outside"):
        native.permute(np.array([5]), np.array([5]), np.array([1], dtype=np.uint64))


def test_packed_space_counts_windows():
    space = packed_space(np.array([10, 0, 7, 20]), seq_len=4)
    assert space.first.tolist() == [0, 2, 2, 3, 7]  # (tokens - 1) // seq_len windows per shard
    assert packed_space(np.array([4]), seq_len=4).num_samples == 0
    assert packed_space(np.array([5]), seq_len=4).num_samples == 1


def test_bad_configs_are_refused():
    with pytest.raises(FastdataConfigError, match="partitions"):
        OrderConfig(24, 5)
    with pytest.raises(FastdataConfigError, match="not divisible by world size"):
        Stripe.of(10, 0, 4)
    with pytest.raises(FastdataConfigError, match="window"):
        OrderConfig(8, 8, window=0)


def test_f7_billion_samples_over_a_million_shards_is_cheap():
    """Planning for 10⁶ shards / 10⁹ samples: O(shards) memory, first batch fast."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    space = document_space(np.full(1_000_000, 1000, dtype=np.int64))
    order = EpochOrder(space, OrderConfig(64, 64, seed=1), epoch=0, permute=native.permute)
    ids = order.slots(0, 0, 64)
    elapsed = time.perf_counter() - t0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert space.num_samples == 10**9
    assert len(np.unique(ids)) == 64
    assert elapsed < 2.0
    assert grown_mb < 200
