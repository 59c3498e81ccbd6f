"""Acceptance: a 2-node, 4-rank job streams a packed corpus from Azurite through two node caches.

Done when (the issue): "A 2-node, 4-rank job streams a packed corpus from Azurite through two
node caches with a limit smaller than the dataset, survives injected resets, a killed rank and
a corrupted cache file with every sample delivered exactly once and the cache never over its
limit." Items: A4, C1, C5 over the network; D1 under a real job; B3 + C7 + C10 (kill, corrupt,
restart); B9 (restart on wiped caches).

Every fake rank is a fresh interpreter running ``tests/_stream_worker.py`` with the torchrun
environment and a gloo group initialised from a file. Each fake node has its own cache dir
and its own fault proxy in front of Azurite, so the shard GETs of each node are counted
apart (with the time they were seen; ``time.monotonic`` is one clock for every process of
the machine). The corpus is packed twice, to Azurite and locally: the same bytes give the
same dataset fingerprint, so the pure order function over the local copy is the reference
order, and the local copy's bytes are the reference data (each rank records a digest of
every micro-batch's input_ids and labels).

The order uses one partition per rank and a shuffle window of 2 shards: each node owns half
of the shards, and a rank streams through its partition a block of 2 shards at a time, so a
cache far smaller than the node's share is enough; the limit is the smallest TokenDataset
accepts for 2 ranks per node (9 shards of the largest size).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import _jobs
import pytest
from _corpus import make_docs, write_jsonl
from _faultproxy import FaultProxy
from _fs import BOOKKEEPING, DiskMonitor, assert_exactly_once
from conftest import connection_string

import fastdata
from fastdata.sampling.order import Stripe

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(150)]

WORKER = Path(__file__).with_name("_stream_worker.py")
NODES, PER_NODE = 2, 2
WORLD_SIZE = NODES * PER_NODE
MICRO = 4
GLOBAL = MICRO * WORLD_SIZE
SEQ_LEN, SEED, WINDOW, PARTITIONS = 32, 11, 2, WORLD_SIZE
DOCS = 1200
SAVE_STEP = 120  # the checkpoint of the killed job; it is killed two steps later


# ---------------------------------------------------------------------------------- helpers


class TimedProxy(FaultProxy):
    """A FaultProxy whose request log also says when each request head went upstream."""

    def _log_requests(self, buffer, conn, skip):
        before = len(self.counters.requests)
        super()._log_requests(buffer, conn, skip)
        now = time.monotonic()
        for request in self.counters.requests[before:]:
            request.t = now


def shard_gets(proxy: FaultProxy, names: dict[str, int]) -> list[tuple[float, int]]:
    """(time, shard index) of every shard GET the proxy forwarded, in order."""
    out = []
    for r in proxy.requests:
        base = r.path.split("?", 1)[0].rsplit("/", 1)[-1]
        if r.method == "GET" and base in names:
            out.append((r.t, names[base]))
    return out


@pytest.fixture(autouse=True, scope="module")
def _kill_leftover_jobs():
    yield
    _jobs.kill_all()


class Job(_jobs.Job):
    """The 4 ranks of one job on 2 fake nodes running tests/_stream_worker.py: each node is a real
    torchrun launcher with 2 ranks (static rendezvous on loopback)."""

    def __init__(self, tmp: Path, **cfg) -> None:
        super().__init__(WORKER, tmp, NODES, PER_NODE, torchrun=True, **cfg)


def consistent(results: list[dict]) -> list[list[int]]:
    """The ranks agree (batch counts, gathered batches = their stripes, states); the batches."""
    counts = [len(r["local"]) for r in results]
    assert len(set(counts)) == 1, f"ranks yielded different numbers of batches: {counts}"
    for r in results[1:]:
        assert r["gathered"] == results[0]["gathered"]
        assert r["states"] == results[0]["states"], "the ranks' loader states differ"
    stitched = [[i for r in results for i in r["local"][k]] for k in range(counts[0])]
    assert results[0]["gathered"] == stitched, "all_gather disagrees with the ranks' micro-batches"
    assert all(r.get("barrier") for r in results)
    return stitched


def refetches(corpus: dict, gets: list[tuple[float, int]], unlinked: list) -> tuple[int, int]:
    """(GETs of a shard the node had GET before and evicted since, GETs of a shard the node had
    GET before and not evicted since: retries of an interrupted download)."""
    raw_names = {name.removesuffix(".zst"): s for name, s in corpus["names"].items()}
    gone = [(t, raw_names[name]) for t, name in unlinked]
    seen: dict[int, float] = {}
    evicted = retried = 0
    for t, s in gets:
        if s in seen:
            if any(x == s and seen[s] < u < t for u, x in gone):
                evicted += 1
            else:
                retried += 1
        seen[s] = t
    return evicted, retried


def warnings_of(results: list[dict], node: int | None = None) -> list[str]:
    return [x["message"] for r in results if node is None or r["node"] == node
            for x in r["log"] if x["level"] in ("WARNING", "ERROR")]


def cached_files(cache: str) -> dict[str, str]:
    """name -> path of the published shard files in a node cache."""
    return {n: os.path.join(root, n) for root, dirs, files in os.walk(cache)
            for n in files if not n.startswith(".") and BOOKKEEPING not in root}


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus(azurite, tmp_path_factory) -> dict:
    """The corpus packed to Azurite and locally, and the reference order and data."""
    import fsspec

    d = tmp_path_factory.mktemp("mn-corpus")
    src = write_jsonl(str(d / "c.jsonl"), make_docs(DOCS, seed=41, long_every=0))
    args = ["--shard-size", "16KB", "--compression", "zstd", "--workers", "1", "-q"]
    container = f"mn{uuid.uuid4().hex[:10]}"
    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    fs.mkdir(container)
    url = f"az://{container}/ds"
    env = dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=azurite["conn"], FASTDATA_ALLOW_INSECURE="1")
    for out, e in ((str(d / "local"), None), (url, env)):
        subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", src, "-o", out, *args],
                       check=True, timeout=120, env=e)
    ds = fastdata.TokenDataset(str(d / "local"), seq_len=SEQ_LEN, seed=SEED, batch_size=MICRO,
                               order=fastdata.OrderOptions(window=WINDOW, partitions=PARTITIONS),
                               world=fastdata.World(), cache_dir=str(d / "local-cache"))
    world = fastdata.World(rank=0, world_size=WORLD_SIZE, local_rank=0, ranks_per_node=PER_NODE)
    order = ds.epoch_order(0, world)
    shards = ds.data.shards
    raw = [int(x) for x in shards.column("raw_bytes")]
    stored = [int(x) for x in shards.column("stored_bytes")]
    names = {ds.data.manifest.shards[i].name: i for i in range(len(raw))}
    stripes = [Stripe.of(GLOBAL, r, WORLD_SIZE) for r in range(WORLD_SIZE)]
    # per step: the global batch; per rank, the digest of its micro-batch and the shards it reads
    batches, digests, needs, owns = [], [], [], []
    for step in range(order.num_steps):
        batches.append(order.global_batch(step).tolist())
        row_digests, row_needs, row_owns = [], [], []
        for stripe in stripes:
            arrays = ds.batch(order, stripe, step)
            h = hashlib.blake2b(digest_size=16)
            for key in ("input_ids", "labels"):
                h.update(arrays[key].tobytes())
            row_digests.append(h.hexdigest())
            ids = order.slots(step, stripe.lo, stripe.hi)
            row_needs.append({int(s) for s in ds.assembler().shards_of(ids)})  # what reading them touches
            row_owns.append({int(s) for s in order.shards_of(ids)})  # where they start
        digests.append(row_digests)
        needs.append(row_needs)
        owns.append(row_owns)
    limit = max(raw) * (PER_NODE * 4 + 1)  # the minimum TokenDataset accepts
    out = {"local": str(d / "local"), "url": url, "container": container, "raw": raw, "stored": stored,
           "names": names, "limit": limit, "batches": batches, "digests": digests, "needs": needs,
           "owns": owns, "m": ds.space.num_samples, "identity": ds.identity(world)}
    yield out
    fs.rm(container, recursive=True)


def node_needs(corpus: dict, node: int, steps: range, what: str = "needs") -> set[int]:
    """Shards node ``node``'s ranks read in ``steps`` (``what="owns"``: the shards where the
    samples they read start)."""
    return {s for step in steps for r in range(node * PER_NODE, (node + 1) * PER_NODE)
            for s in corpus[what][step][r]}


@pytest.fixture(scope="module")
def proxies(azurite):
    ps = [TimedProxy(azurite["port"]).start() for _ in range(NODES)]
    yield ps
    for p in ps:
        p.stop()


def job_config(corpus: dict, proxies: list[FaultProxy], caches: list[Path], **extra) -> dict:
    return {"url": corpus["url"], "conns": [connection_string(p.port) for p in proxies],
            "caches": [str(c) for c in caches], "cache_limit": corpus["limit"], "seq_len": SEQ_LEN,
            "seed": SEED, "window": WINDOW, "partitions": PARTITIONS, "batch_size": MICRO,
            "num_workers": 2, "backend": "threads", "prefetch_bytes": corpus["limit"] // 4, **extra}


def reset_proxies(proxies: list[FaultProxy], reset_after: int | None = None, fault_conns: int | None = None):
    for p in proxies:
        p.reset_counters()
        p.faults.reset_after, p.faults.fault_conns = reset_after, fault_conns


def check_data(corpus: dict, results: list[dict], start: int) -> None:
    """Every rank's micro-batches carry the reference bytes of the reference ids from ``start`` on."""
    for r, res in enumerate(results):
        want = [row[r] for row in corpus["digests"][start:start + len(res["digests"])]]
        bad = [start + k for k, (a, b) in enumerate(zip(res["digests"], want, strict=True)) if a != b]
        assert not bad, f"rank {r}: the data of steps {bad[:10]} differs from the local copy's"


def report(title: str, lines: list[str]) -> None:
    print(f"\n[{title}]\n  " + "\n  ".join(lines))  # noqa: T201 - the numbers, with -s


# ---------------------------------------------------------------------------------- tests


def test_the_cache_limit_is_the_minimum_and_smaller_than_the_dataset(corpus, tmp_path):
    """The setting under test: the limit is the smallest TokenDataset accepts for 2 ranks per
    node, far below the dataset and below each node's share of it."""
    limit, raw = corpus["limit"], corpus["raw"]
    assert limit < sum(raw) // 2, (limit, sum(raw))
    assert 20 <= len(raw) <= 40
    world = fastdata.World(rank=0, world_size=WORLD_SIZE, local_rank=0, ranks_per_node=PER_NODE)
    with pytest.raises(fastdata.FastdataConfigError, match=f"use at least {limit} bytes"):
        fastdata.TokenDataset(corpus["local"], seq_len=SEQ_LEN, world=world, cache_dir=str(tmp_path / "c"),
                              cache_limit=limit - 1)
    for node in range(NODES):
        share = sum(raw[s] for s in node_needs(corpus, node, range(len(corpus["batches"]))))
        assert share > limit, f"node {node} reads {share} bytes: the cache would never evict"


@pytest.fixture(scope="module")
def full_epoch(corpus, proxies, tmp_path_factory) -> dict:
    """One uninterrupted epoch on cold caches, no faults."""
    d = tmp_path_factory.mktemp("mn-full")
    caches = [d / f"cache-node{n}" for n in range(NODES)]
    reset_proxies(proxies)
    with DiskMonitor(caches) as monitor:
        job = Job(d / "job", **job_config(corpus, proxies, caches))
        results = job.wait()
    peaks = monitor.peaks
    return {"results": results, "peaks": peaks, "samples": monitor.samples,
            "gets": [shard_gets(p, corpus["names"]) for p in proxies],
            "bytes_down": [p.counters.bytes_down for p in proxies], "seconds": time.monotonic() - job.started}


def test_a4_every_sample_once_in_the_pure_order_over_the_network(corpus, full_epoch):
    """A4: 2 nodes × 2 ranks × 2 threads streaming from Azurite: the same number of batches on
    every rank, the global batches in exactly the pure order, each sample once, the reference
    bytes for every micro-batch, identical states, no warning."""
    results = full_epoch["results"]
    steps = len(corpus["batches"])
    for r, res in enumerate(results):
        assert res["world"]["rank"] == r and res["world"]["ranks_per_node"] == PER_NODE
        assert res["len"] == steps
    batches = consistent(results)
    assert len(batches) == steps
    assert batches == corpus["batches"], "the global batches differ from the pure order function"
    assert_exactly_once(batches, corpus["m"], GLOBAL)
    check_data(corpus, results, 0)
    states = results[0]["states"]
    assert [(s["epoch"], s["step"]) for s in states] == [(0, k) for k in range(1, steps)] + [(1, 0)]
    assert all(s["identity"] == corpus["identity"] for s in states), "not the local copy's dataset"
    assert warnings_of(results) == []
    report("A4", [f"{steps} steps of {GLOBAL} samples, {len(corpus['raw'])} shards, "
                  f"{sum(corpus['raw'])} raw / {sum(corpus['stored'])} stored bytes; "
                  f"job {full_epoch['seconds']:.1f} s, first batch after "
                  f"{max(r['t_first_batch'] - r['t_start'] for r in results):.1f} s"])


def test_c1_each_node_downloads_what_its_ranks_read_once(corpus, full_epoch):
    """C1 over the network: each node GETs exactly the shards its ranks read, each once unless
    a process of that node evicted it from the cache in between (the unlinks are recorded in the
    ranks, the GETs at the node's proxy, on one clock)."""
    results, n = full_epoch["results"], len(corpus["raw"])
    lines = []
    for node in range(NODES):
        gets = full_epoch["gets"][node]
        wanted = node_needs(corpus, node, range(len(corpus["batches"])))
        fetched = {s for _, s in gets}
        assert fetched == wanted, (f"node {node} fetched {sorted(fetched - wanted)} it never reads and "
                                   f"not {sorted(wanted - fetched)}")
        unlinked = [u for r in results if r["node"] == node for u in r["unlinked"]]
        evicted, retried = refetches(corpus, gets, unlinked)
        assert retried == 0, (f"node {node} downloaded a shard {retried} time(s) again without evicting "
                              "it in between")
        assert len(gets) <= 2 * n
        owned = node_needs(corpus, node, range(len(corpus["batches"])), "owns")
        lines.append(f"node {node}: {len(gets)} shard GETs of {len(fetched)}/{n} shards "
                     f"({len(owned)} hold the node's samples, {len(fetched - owned)} only the tails of "
                     f"samples starting in the previous shard); {evicted} GETs again after an eviction, "
                     f"{len(unlinked)} evictions; "
                     f"{sum(corpus['stored'][s] for _, s in gets)} shard bytes GET "
                     f"({full_epoch['bytes_down'][node]} bytes through the proxy in all) vs "
                     f"{sum(corpus['stored'])} stored bytes in the dataset")
    report("C1", lines)


def test_c1_each_node_downloads_only_its_partitions_shards(corpus, full_epoch):
    """C1 / the order's promise: 'when the number of nodes divides P a node reads only its own
    partitions' shards': each node downloads about half of the dataset (< 75%), and the two
    nodes share at most the shard where their halves of the shard order meet."""
    n = len(corpus["raw"])
    shared = set.intersection(*({s for _, s in gets} for gets in full_epoch["gets"]))
    assert len(shared) <= NODES - 1, f"both nodes downloaded shards {sorted(shared)}"
    for node in range(NODES):
        fetched = {s for _, s in full_epoch["gets"][node]}
        owned = node_needs(corpus, node, range(len(corpus["batches"])), "owns")
        assert len(fetched) < 0.75 * n and fetched <= owned, (
            f"node {node} downloaded {len(fetched)} of {n} shards; its samples start in {len(owned)}; "
            f"shards {sorted(fetched - owned)} are downloaded whole for the tails of samples only")


def test_c5_the_node_caches_never_exceed_the_limit(corpus, full_epoch):
    """C5: the bytes in each node's cache dir, sampled every ~5 ms from outside, never exceed
    the limit; after the run each node's usage counter equals what is on disk."""
    limit = corpus["limit"]
    assert full_epoch["samples"] >= 100
    for node, peak in enumerate(full_epoch["peaks"]):
        assert 0 < peak <= limit, f"node {node}: peak {peak} bytes, limit {limit}"
    for res in full_epoch["results"]:
        end = res["cache_end"]
        assert end["stats"]["reserved"] == 0 and end["stats"]["reservations"] == 0, end
        assert end["stats"]["files"] == end["du"] <= limit, end
    report("C5", [f"limit {limit} bytes ({limit / sum(corpus['raw']):.0%} of the raw dataset); peaks "
                  f"{full_epoch['peaks']} ({full_epoch['samples']} samples per dir)"])


# ---------------------------------------------------------------------------------- kill, corrupt, restart

# Every connection through either proxy is reset once 12,000 bytes came down it: the manifest
# (~10 KB with headers since format v1.1 records each shard's metadata hash) gets through on a
# fresh connection, and a pooled connection dies after three or four shard downloads (~3 KB GET
# bodies plus two HEADs each), mostly mid-body.
RESET_AFTER, FAULT_CONNS = 12000, None
# The restart finds the manifest copied in its node caches (one HEAD, no GET) and fetches few
# ~3 KB shards: reset sooner, or a node's connections may never carry 9,000 bytes. A shard still
# gets through on a fresh connection; a manifest GET (which should not happen) never would.
RESTART_RESET_AFTER = 5000


def retry_warnings(logs: list[str]) -> list[str]:
    """fastdata's warnings about a failed attempt it retries (shards: "fetching", manifest: "reading")."""
    return [m for m in logs if m.startswith(("fetching ", "reading ")) and " failed (attempt " in m
            and "retrying in" in m]


# What reconciling a SIGKILLed job's cache may say (dead holders' files it cannot adopt).
RECOVERY = ("node cache: deleting ", "node cache: dropping ")


@pytest.fixture(scope="module")
def killed(corpus, proxies, tmp_path_factory) -> dict:
    """The job runs with resets injected on both proxies; rank 0 checkpoints after SAVE_STEP
    steps; two steps later the whole job (every process group) is SIGKILLed."""
    d = tmp_path_factory.mktemp("mn-killed")
    caches = [d / f"cache-node{n}" for n in range(NODES)]
    reset_proxies(proxies, RESET_AFTER, FAULT_CONNS)
    config = job_config(corpus, proxies, caches, save_step=SAVE_STEP, ready_step=SAVE_STEP + 2)
    with DiskMonitor(caches) as monitor:
        job = Job(d / "job", **config)
        job.wait_ready()
    peaks = monitor.peaks
    ready = [json.loads((job.dir / f"ready-{r}.json").read_text()) for r in range(WORLD_SIZE)]
    saved = [json.loads((job.dir / f"saved-{r}.json").read_text()) for r in range(WORLD_SIZE)]
    checkpoint = json.loads((job.dir / "checkpoint.json").read_text())
    leftovers = [[n for _, _, names in os.walk(c) for n in names if n.startswith(".fastdata-tmp")]
                 for c in caches]
    return {"dir": d, "caches": caches, "ready": ready, "saved": saved, "checkpoint": checkpoint,
            "path": str(job.dir / "checkpoint.json"), "peaks": peaks, "leftovers": leftovers,
            "faults": [p.counters.faults for p in proxies],
            "gets": [shard_gets(p, corpus["names"]) for p in proxies]}


def test_d1_b3_the_killed_job_saw_resets_and_checkpointed_the_pure_order(corpus, killed):
    """Under resets on the wire the job delivers the pure order and the reference bytes up to
    the kill; every rank saved the same state; the checkpoint records exactly what was seen."""
    reference = corpus["batches"]
    assert all(f >= 1 for f in killed["faults"]), killed["faults"]
    assert all(s == killed["saved"][0] for s in killed["saved"]), "ranks saved different states"
    state = killed["checkpoint"]["loader"]
    assert state == killed["saved"][0] and (state["epoch"], state["step"]) == (0, SAVE_STEP)
    assert killed["checkpoint"]["seen"] == reference[:SAVE_STEP]
    for r, ready in enumerate(killed["ready"]):
        assert ready["gathered"] == reference[:SAVE_STEP + 2]
        assert ready["digests"] == [row[r] for row in corpus["digests"][:SAVE_STEP + 2]]
    retries = retry_warnings([x["message"] for ready in killed["ready"] for x in ready["log"]])
    # a reset body is read again by the Azure SDK's own body-read retries (3 tries, logged by
    # azure.core as "Incomplete download."), and only then by fastdata's policy (a warning):
    # on the wire, both are a GET of a shard the node neither has nor evicted
    unlinked = [[u for r, ready in enumerate(killed["ready"]) if r // PER_NODE == n
                 for u in ready["unlinked"]] for n in range(NODES)]
    retried = [refetches(corpus, killed["gets"][n], unlinked[n])[1] for n in range(NODES)]
    assert sum(retried) >= 1, f"no shard GET was retried: the resets missed them ({killed['faults']})"
    for node, peak in enumerate(killed["peaks"]):
        assert 0 < peak <= corpus["limit"], f"node {node}: peak {peak} bytes, limit {corpus['limit']}"
    report("killed run", [f"resets per proxy {killed['faults']}, shard GETs retried per node {retried}, "
                          f"fastdata retry warnings {len(retries)} {retries[:1]}; cache peaks "
                          f"{killed['peaks']}; temp files left by the kill "
                          f"{[len(x) for x in killed['leftovers']]}"])


def test_c7_c10_b3_restart_after_kill_and_corruption_is_exactly_once(corpus, proxies, killed):
    """The SIGKILLed job's caches are reused as they are, after a byte of one cached shard of
    node 0 (one node 0 reads again after the checkpoint) was flipped. The restarted job (resets
    on the wire again) resumes from the checkpoint without any cleanup, drops and re-downloads
    the damaged shard with a warning naming it, keeps the caches within the limit, and what it
    delivers after the checkpoint completes the reference epoch: each sample exactly once."""
    reference, steps = corpus["batches"], len(corpus["batches"])
    raw_index = {name.removesuffix(".zst"): i for name, i in corpus["names"].items()}
    later = {s: min(k for k in range(SAVE_STEP, steps) if s in node_needs(corpus, 0, range(k, k + 1)))
             for s in node_needs(corpus, 0, range(SAVE_STEP, steps))}
    files = cached_files(str(killed["caches"][0]))
    candidates = sorted((later[raw_index[n]], n) for n in files if raw_index.get(n) in later)
    assert candidates, f"node 0's cache holds no shard it reads after step {SAVE_STEP}: {sorted(files)}"
    victim = files[candidates[0][1]]
    with open(victim, "r+b") as f:  # flip one byte in the middle of the cached raw shard
        f.seek(os.path.getsize(victim) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))

    reset_proxies(proxies, RESTART_RESET_AFTER, FAULT_CONNS)
    config = job_config(corpus, proxies, killed["caches"], resume=killed["path"])
    with DiskMonitor(killed["caches"]) as monitor:
        job = Job(killed["dir"] / "restart", **config)
        results = job.wait()
    peaks = monitor.peaks
    gets = [shard_gets(p, corpus["names"]) for p in proxies]

    resumed = consistent(results)
    assert resumed == reference[SAVE_STEP:]
    assert killed["checkpoint"]["seen"] + resumed == reference
    assert_exactly_once(killed["checkpoint"]["seen"] + resumed, corpus["m"], GLOBAL)
    check_data(corpus, results, SAVE_STEP)
    states = results[0]["states"]
    assert ([(s["epoch"], s["step"]) for s in states]
            == [(0, k) for k in range(SAVE_STEP + 1, steps)] + [(1, 0)])

    # The damaged copy is either found on first use (a warning naming it, then a new download),
    # or evicted unread first: the restarted ranks' prefetch fills the tight cache, and entries
    # left by the killed job carry no next use, so they go first. Either way it is fetched again.
    damaged = [m for m in warnings_of(results) if "damaged" in m]
    assert all(victim in m for m in damaged), damaged
    assert all(victim not in m for m in warnings_of(results, node=1))
    assert damaged == [m for m in warnings_of(results, node=0) if "damaged" in m]
    name = os.path.basename(victim) + ".zst"
    refetch = [t for t, s in gets[0] if s == corpus["names"][name]]
    if damaged:
        gone = min(x["t"] for r in results for x in r["log"] if "damaged" in x["message"])
    else:
        evicted = [t for r in results if r["node"] == 0
                   for t, f in r["unlinked"] if f == os.path.basename(victim)]
        assert evicted, "the damaged shard was neither reported nor evicted"
        gone = min(evicted)
    assert any(t > gone for t in refetch), "the damaged shard was not downloaded again"
    assert all(p.counters.faults >= 1 for p in proxies)
    others = [m for m in warnings_of(results) if "damaged" not in m and not retry_warnings([m])]
    assert all(m.startswith(RECOVERY) for m in others), others

    for node, peak in enumerate(peaks):
        assert 0 < peak <= corpus["limit"], f"node {node}: peak {peak} bytes, limit {corpus['limit']}"
    for cache in killed["caches"]:
        assert not [n for _, _, names in os.walk(cache) for n in names if n.startswith(".fastdata-tmp")]
    for res in results:
        end = res["cache_end"]
        assert end["stats"]["files"] == end["du"] <= corpus["limit"], end
    first = [r["t_first_batch"] - r["t_iter"] for r in results]
    assert max(first) < 10, f"the restart took {max(first):.1f} s from iter() to its first batch"
    report("restart", [f"flipped a byte of {os.path.basename(victim)} (node 0 reads it at step "
                       f"{candidates[0][0]}); warnings {damaged}; GETs of it after the warning "
                       f"or eviction: {sum(t > gone for t in refetch)}",
                       f"first batch {max(first):.2f} s after iter(), "
                       f"{max(r['t_first_batch'] - r['t_start'] for r in results):.1f} s after the "
                       f"interpreter started; resets {[p.counters.faults for p in proxies]}, fastdata retry "
                       f"warnings {len(retry_warnings(warnings_of(results)))}; other warnings {others}; "
                       f"shard GETs per node {[len(g) for g in gets]}; cache peaks {peaks}"])


def test_b9_restart_on_wiped_caches(corpus, proxies, killed, tmp_path):
    """B9: the checkpoint resumes on empty cache dirs (ephemeral disks): the same sequence; before
    its first batch a node downloads only what its first steps read plus the prefetch budget,
    and it never downloads a shard needed only by the steps before the checkpoint."""
    steps = len(corpus["batches"])
    caches = [tmp_path / f"cache-node{n}" for n in range(NODES)]
    reset_proxies(proxies)
    config = job_config(corpus, proxies, caches, resume=killed["path"])
    results = Job(tmp_path / "job", **config).wait()
    resumed = consistent(results)
    assert resumed == corpus["batches"][SAVE_STEP:]
    check_data(corpus, results, SAVE_STEP)
    # shards the prefetch thread of one rank may fetch before the first batch: while less than
    # prefetch_bytes are ahead, it fetches one more
    ahead = config["prefetch_bytes"] // min(corpus["raw"]) + 1
    lines = []
    for node in range(NODES):
        gets = [(t, s) for t, s in shard_gets(proxies[node], corpus["names"])]
        first = max(r["t_first_batch"] for r in results if r["node"] == node)
        before = [s for t, s in gets if t < first]
        rest = node_needs(corpus, node, range(SAVE_STEP, steps))
        consumed_only = node_needs(corpus, node, range(SAVE_STEP)) - rest
        assert not {s for _, s in gets} & consumed_only, "downloaded a shard only the skipped steps read"
        assert {s for _, s in gets} == rest
        first_step = node_needs(corpus, node, range(SAVE_STEP, SAVE_STEP + 1))
        # the loader's threads assemble steps S (one chunk) and S+1, S+2 (the next) at once
        assembled = node_needs(corpus, node, range(SAVE_STEP, SAVE_STEP + 3))
        assert first_step <= set(before)
        assert len(before) <= len(assembled) + PER_NODE * ahead, (before, assembled, ahead)
        lines.append(f"node {node}: {len(before)} shard GETs before its first batch (first step reads "
                     f"{len(first_step)}, steps S..S+2 read {len(assembled)}, prefetch allows "
                     f"{PER_NODE}×{ahead}); {len(gets)} GETs for the rest of the epoch "
                     f"({len(rest)} shards); {len(consumed_only)} shards only the skipped steps read")
    report("B9", lines)
