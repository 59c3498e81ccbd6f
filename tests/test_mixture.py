"""Changing a blend's mixture on resume, and schedules of weights by step (issue 13).

A blend saved under 3:1 resumes under 1:1 (or with a source added or removed) with
``allow_mixture_change=True``: from the resumed step on every global batch carries the new
quotas, and every source continues its own epoch exactly where it was (its sample ids go on
in the order an uninterrupted run under the old weights gave them, until that source epoch
ends); a new source starts at its epoch 0. Without the flag the state is refused, naming
both weight sets. Sequences are compared in exact order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _jobs import Job
from _loader import packed_dataset

import fastdata
from fastdata.sampling.blend import quotas
from fastdata.sampling.mixture import Cursor, MixturePlan, epoch_length

pytestmark = pytest.mark.timeout(120)
HERE = Path(__file__).parent
SEQ, G, SEED, CHANGE = 64, 8, 5, 20


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture")
    return {name: packed_dataset(str(root / name), docs=docs, seed=seed)
            for name, docs, seed in [("web", 150, 1), ("code", 60, 2), ("extra", 50, 3)]}


def blend(corpora, weights: dict, *, batch=G, workers=0, backend="threads", world=None, **kw):
    sources = [fastdata.Source(corpora[n], w) for n, w in weights.items()]
    ds = fastdata.TokenDataset(sources, seq_len=SEQ, seed=SEED, world=world, **kw)
    return fastdata.DataLoader(ds, batch_size=batch, num_workers=workers, backend=backend)


def run(dl, steps: int) -> list[list[int]]:
    """Sample ids of the next ``steps`` batches, across epochs."""
    out: list[list[int]] = []
    while len(out) < steps:
        for batch in dl:
            out.append(batch["sample_ids"].tolist())
            if len(out) == steps:
                break
    return out


def by_source(dl, batches) -> dict[str, list[list[int]]]:
    """Per source name (its folder): the local ids of each batch, in slot order."""
    ds = dl.dataset
    names = {s.url: Path(s.url).parent.name for s in ds.sources}
    out: dict[str, list[list[int]]] = {names[s.url]: [] for s in ds.sources}
    offsets = ds.assembler().offsets
    for b in batches:
        ids = np.asarray(b)
        src = np.searchsorted(offsets, ids, side="right") - 1
        for s, source in enumerate(ds.sources):
            out[names[source.url]].append((ids[src == s] - offsets[s]).tolist())
    return out


def flat(rows: list[list[int]]) -> list[int]:
    return [i for r in rows for i in r]


@pytest.fixture(scope="module")
def old(corpora):
    """3:1 for two blend epochs, uninterrupted; and the state after CHANGE steps."""
    dl = blend(corpora, {"web": 3, "code": 1})
    batches = run(dl, 2 * len(dl))
    cut = blend(corpora, {"web": 3, "code": 1})
    assert run(cut, CHANGE) == batches[:CHANGE]
    return batches, cut.state_dict(), by_source(dl, batches)


@pytest.fixture(scope="module")
def changed(corpora, old):
    """The state of ``old`` resumed under 1:1, for the rest of its epoch and three more."""
    dl = blend(corpora, {"web": 1, "code": 1}, allow_mixture_change=True)
    dl.load_state_dict(old[1])
    return dl, run(dl, len(dl) - CHANGE + 3 * len(dl))


def test_3_to_1_becomes_1_to_1_after_20_steps(corpora, old, changed):
    batches, state, old_per_source = old
    dl, after = changed
    assert state["version"] == 2 and [c["weight"] for c in state["mixture"]] == [3.0, 1.0]
    assert len(json.dumps(state)) < 2048  # O(sources)
    new = by_source(dl, after)
    counts = {n: {len(r) for r in rows} for n, rows in new.items()}
    assert counts == {"web": {4}, "code": {4}} == {n: {int(q)} for n, q in
                                                  zip(new, quotas([1, 1], G))}
    for name, q_old in (("web", 6), ("code", 2)):
        m = dl.dataset.spaces[list(new).index(name)].num_samples
        first = epoch_length(m, q_old)  # the source epoch that was running at the change
        seq = flat(old_per_source[name][:CHANGE]) + flat(new[name])
        assert seq[:first] == flat(old_per_source[name])[:first]  # continued exactly, in order
        second = seq[first : first + epoch_length(m, 4)]  # its next epoch, under the new quota
        if name == "code":
            assert len(second) == epoch_length(m, 4)
        assert len(set(second)) == len(second) and max(second) < m
    # a state taken after the change resumes exactly (and says where every source is)
    again = blend(corpora, {"web": 1, "code": 1}, allow_mixture_change=True)
    again.load_state_dict(old[1])
    run(again, 25)
    later = again.state_dict()
    assert [c["weight"] for c in later["mixture"]] == [1.0, 1.0]
    fresh = blend(corpora, {"web": 1, "code": 1})  # same weights: no flag needed
    fresh.load_state_dict(later)
    assert run(fresh, 60) == after[25:85]


def test_refused_without_the_flag_naming_both_weight_sets(corpora, old):
    dl = blend(corpora, {"web": 1, "code": 1})
    with pytest.raises(fastdata.FastdataStateError) as err:
        dl.load_state_dict(old[1])
    text = str(err.value)
    assert "{web/ds: 3, code/ds: 1}" in text and "{web/ds: 1, code/ds: 1}" in text
    assert "allow_mixture_change" in text and "'dataset'" in text
    assert run(dl, 3) == run(blend(corpora, {"web": 1, "code": 1}), 3)  # never resumed elsewhere


def test_change_with_2_to_1_ranks_and_other_workers(corpora, old, changed):
    _, after = changed

    def world(rank, size):
        return fastdata.World(rank=rank, world_size=size, local_rank=rank, ranks_per_node=size)

    two = [blend(corpora, {"web": 3, "code": 1}, batch=G // 2, world=world(r, 2)) for r in range(2)]
    iters = [iter(dl) for dl in two]
    saved = [sum((next(it)["sample_ids"].tolist() for it in iters), []) for _ in range(CHANGE)]
    assert saved == old[0][:CHANGE]
    states = [dl.state_dict() for dl in two]
    assert states[0] == states[1] == old[1]
    for workers, backend in ((0, "threads"), (2, "threads"), (2, "processes")):
        one = blend(corpora, {"web": 1, "code": 1}, workers=workers, backend=backend,
                    allow_mixture_change=True)
        one.load_state_dict(states[0])
        assert run(one, 30) == after[:30], (workers, backend)
    # and back to 2 ranks after the change: the same global batches
    one = blend(corpora, {"web": 1, "code": 1}, allow_mixture_change=True)
    one.load_state_dict(states[0])
    run(one, 10)
    two = [blend(corpora, {"web": 1, "code": 1}, batch=G // 2, world=world(r, 2)) for r in range(2)]
    for dl in two:
        dl.load_state_dict(one.state_dict())
    iters = [iter(dl) for dl in two]
    assert [sum((next(it)["sample_ids"].tolist() for it in iters), []) for _ in range(30)] == after[10:40]


def test_change_through_the_dataset_state_and_from_a_version_1_state(corpora, old, changed):
    _, after = changed
    sources = [fastdata.Source(corpora["web"], 3), fastdata.Source(corpora["code"], 1)]
    ds = fastdata.TokenDataset(sources, seq_len=SEQ, seed=SEED, batch_size=G)
    it = iter(ds)
    assert [next(it)["sample_ids"].tolist() for _ in range(CHANGE)] == old[0][:CHANGE]
    state = ds.state_dict()
    new = fastdata.TokenDataset([fastdata.Source(corpora["web"], 1), fastdata.Source(corpora["code"], 1)],
                                seq_len=SEQ, seed=SEED, batch_size=G, allow_mixture_change=True)
    new.load_state_dict(state)
    it = iter(new)
    assert [next(it)["sample_ids"].tolist() for _ in range(30)] == after[:30]
    new.load_state_dict(state)  # the anchor travels to a stock loader's worker processes
    stock = torch.utils.data.DataLoader(new, batch_size=None, num_workers=2)
    assert [b["sample_ids"].tolist() for b in stock][:30] == after[:30]
    v1 = {k: v for k, v in old[1].items() if k != "mixture"} | {"version": 1}  # no cursors: implied
    dl = blend(corpora, {"web": 1, "code": 1}, allow_mixture_change=True)
    dl.load_state_dict(v1)
    assert run(dl, 30) == after[:30]


def test_a_source_added_mid_run_then_one_removed(corpora, old):
    batches, state, old_per_source = old
    three = {"web": 2, "code": 1, "extra": 1}
    dl = blend(corpora, three, allow_mixture_change=True)
    dl.load_state_dict(state)
    after = run(dl, 40)
    new = by_source(dl, after)
    assert {n: {len(r) for r in rows} for n, rows in new.items()} == {"web": {4}, "code": {2}, "extra": {2}}
    for name in ("web", "code"):  # continue their epoch exactly
        seq = flat(old_per_source[name][:CHANGE]) + flat(new[name])
        assert seq == flat(old_per_source[name])[: len(seq)]
    fresh = blend(corpora, three)  # the new source starts at its epoch 0 (quota 2 from the start)
    assert flat(new["extra"]) == flat(by_source(fresh, run(fresh, 40))["extra"])
    # remove "code" after 40 more steps: the others go on, nothing of "code" is read
    mid = dl.state_dict()
    going_on = blend(corpora, three, allow_mixture_change=True)
    going_on.load_state_dict(mid)
    more = run(going_on, 30)
    two = blend(corpora, {"web": 1, "extra": 1}, allow_mixture_change=True)
    two.load_state_dict(mid)
    dropped = run(two, 30)
    rest, kept = by_source(going_on, more), by_source(two, dropped)
    assert set(kept) == {"web", "extra"} and {len(r) for r in kept["web"]} == {4}
    for name, cursor in zip(("web", "extra"), (mid["mixture"][0], mid["mixture"][2])):
        m = two.dataset.spaces[list(kept).index(name)].num_samples
        left = epoch_length(m, cursor["quota"]) - cursor["offset"]  # until its epoch ends
        seq = flat(kept[name])[:left]
        assert len(seq) == min(left, 30 * 4) and seq == flat(rest[name])[: len(seq)]


def test_a_single_source_grows_into_a_blend(corpora):
    alone = fastdata.DataLoader(fastdata.TokenDataset(corpora["web"], seq_len=SEQ, seed=SEED), batch_size=G,
                                num_workers=0)
    whole = flat(run(alone, len(alone)))  # its epoch 0, G slots a step
    cut = fastdata.DataLoader(fastdata.TokenDataset(corpora["web"], seq_len=SEQ, seed=SEED), batch_size=G,
                              num_workers=0)
    assert flat(run(cut, CHANGE)) == whole[: CHANGE * G]
    dl = blend(corpora, {"web": 1, "code": 1}, allow_mixture_change=True)
    dl.load_state_dict(cut.state_dict())
    new = by_source(dl, run(dl, 60))
    assert {len(r) for r in new["web"]} == {4}
    assert flat(new["web"]) == whole[CHANGE * G : CHANGE * G + 240]  # its epoch goes on, in order
    with pytest.raises(fastdata.FastdataStateError, match="'dataset'"):
        blend(corpora, {"web": 1, "code": 1}).load_state_dict(cut.state_dict())
    four = fastdata.OrderOptions(partitions=4)  # its order is not a blend source's: refused
    other = fastdata.DataLoader(fastdata.TokenDataset(corpora["web"], seq_len=SEQ, seed=SEED, order=four),
                                batch_size=G, num_workers=0)
    run(other, 3)
    with pytest.raises(fastdata.FastdataStateError, match="'partitions' is 4"):
        blend(corpora, {"web": 1, "code": 1}, order=four, allow_mixture_change=True).load_state_dict(
            other.state_dict())


def test_schedule_resumes_exactly_on_either_side_of_a_change(corpora, old, changed):
    _, after = changed
    web, code = corpora["web"], corpora["code"]

    def scheduled():
        ds = fastdata.TokenDataset([fastdata.Source(web), fastdata.Source(code)], seq_len=SEQ, seed=SEED,
                                   mixture_schedule=[(0, {web: 3, code: 1}), (CHANGE, [1, 1])])
        return fastdata.DataLoader(ds, batch_size=G, num_workers=0)

    dl = scheduled()
    full = run(dl, 80)
    counts = [len(flat(r)) for r in zip(*by_source(dl, full).values())]
    assert full == old[0][:CHANGE] + after[: 80 - CHANGE]  # the same as a change on resume
    per = by_source(dl, full)
    assert {len(r) for r in per["code"][:CHANGE]} == {2} and {len(r) for r in per["code"][CHANGE:]} == {4}
    assert counts == [G] * 80
    for cut in (CHANGE - 5, CHANGE, CHANGE + 5):
        first = scheduled()
        assert run(first, cut) == full[:cut]
        resumed = scheduled()
        resumed.load_state_dict(first.state_dict())
        assert run(resumed, 80 - cut) == full[cut:], cut
    other = fastdata.TokenDataset([fastdata.Source(web), fastdata.Source(code)], seq_len=SEQ, seed=SEED,
                                  mixture_schedule=[(0, [3, 1]), (CHANGE + 1, [1, 1])])
    with pytest.raises(fastdata.FastdataStateError, match="schedule"):
        fastdata.DataLoader(other, batch_size=G).load_state_dict(first.state_dict())
    with pytest.raises(fastdata.FastdataConfigError, match="not both"):
        fastdata.TokenDataset([fastdata.Source(web, 1), fastdata.Source(code, 1)], seq_len=SEQ,
                              mixture_schedule=[(0, [3, 1])])


def simulate(sizes, schedule, steps, anchor=None):
    """Brute force: each source's (epoch, offset, quota) slot by slot, step by step."""
    table = [(k, quotas(w, G)) for k, w in schedule]
    start = 0 if anchor is None else anchor[0]
    quota_at = {k: q for k, q in table}
    current = [q for k, q in table if k <= start][-1]
    given = [None] * len(sizes) if anchor is None else anchor[1]
    state = [[0, 0, int(current[s])] if c is None else [c.epoch, c.offset, c.quota]
             for s, c in enumerate(given)]
    out = {}
    for k in range(start, steps):
        current = quota_at.get(k, current)
        for s, m in enumerate(sizes):
            row = []
            for _ in range(int(current[s])):
                e, o, g = state[s]
                if o == (m // g) * g:  # this source epoch is over: the next starts under today's quota
                    e, o, g = e + 1, 0, int(current[s])
                row.append((e, o, g))
                state[s] = [e, o + 1, g]
            out[k, s] = row
    return out


def test_plan_matches_a_slot_by_slot_simulation():
    sizes = [37, 11, 23]
    schedule = [(0, [3, 1, 1]), (7, [1, 1, 2]), (19, [1, 3, 1]), (30, [5, 1, 1])]
    anchors = [None, (12, [Cursor(2, 5, 4), None, Cursor(0, 16, 2)]), (7, [Cursor(0, 11, 1), None, None])]
    for anchor in anchors:
        plan = MixturePlan(sizes, schedule, G, anchor)
        truth = simulate(sizes, schedule, 45, anchor)
        for k in range(0 if anchor is None else anchor[0], 45):
            seg = int(plan.segment_of(k))
            for s in range(3):
                q = int(plan.segments[seg].quotas[s])
                e, o, g = plan.positions(seg, s, np.array([k]), np.arange(q))
                assert list(zip(e[0].tolist(), o[0].tolist(), g[0].tolist())) == truth[k, s], (anchor, k, s)
                c = plan.cursors_at(k)[s]  # the cursor before step k is where its first slot starts
                e0, o0, g0 = truth[k, s][0]
                ended = (e0 - 1, epoch_length(sizes[s], c.quota), c.quota)  # kept until its next slot
                assert (c.epoch, c.offset, c.quota) in ((e0, o0, g0), ended)


@pytest.mark.multiprocess
@pytest.mark.timeout(180)
def test_two_real_ranks_save_one_resumes_under_new_weights(corpora, old, changed, tmp_path):
    _, after = changed
    job = Job(HERE / "_mixture_worker.py", tmp_path, nodes=1, per_node=2, seq_len=SEQ, seed=SEED,
              sources=[[corpora["web"], 3], [corpora["code"], 1]], global_batch=G, steps=CHANGE)
    results = job.wait(timeout=150)
    assert [a + b for a, b in zip(results[0]["ids"], results[1]["ids"])] == old[0][:CHANGE]
    assert results[0]["state"] == results[1]["state"] == old[1]
    dl = blend(corpora, {"web": 1, "code": 1}, allow_mixture_change=True)
    dl.load_state_dict(results[0]["state"])
    assert run(dl, 40) == after[:40]
