"""One dataset per job: every rank reads the same dataset with the same order settings.

Two ranks given different datasets (config drift, or a dataset republished at the same URL
while the job starts) would each follow a different order and train on it silently. So when
a rank starts iterating a dataset (the first ``next()`` of a :class:`fastdata.DataLoader`,
or the first ``TokenDataset.__iter__`` in the main process), and a ``torch.distributed``
process group with more than one rank is initialised, the ranks compare the order identity
(``TokenDataset.identity``: the dataset fingerprint, seq_len, mode, seed, shuffle, window,
global batch, partitions, drop_last) through the process group's key-value store. A rank
that differs from rank 0 makes every rank raise :class:`~fastdata.errors.FastdataConfigError`
naming both fingerprints, before any batch.

The check is no collective: it is a few store requests (set, get, add, wait), so ranks that
never start the dataset cannot deadlock it. The n-th dataset a rank starts is compared with
the n-th dataset of every other rank; when some rank has not started its n-th dataset within
:data:`WAIT` seconds (an evaluation set read by rank 0 only), the check is passed over with
a warning. Each dataset object is checked once per process. Not checked: a stock
``torch.utils.data.DataLoader`` with worker processes (the main process never iterates the
dataset), and processes without an initialised process group.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import weakref
from datetime import timedelta
from typing import Any

from fastdata.errors import FastdataConfigError
from fastdata.world import World

log = logging.getLogger(__name__)

#: Seconds a rank waits for the others to start the same dataset before passing the check over.
WAIT = 60.0
_checked: weakref.WeakSet[Any] = weakref.WeakSet()
_ordinal = itertools.count()
_lock = threading.Lock()


def check_job(dataset: Any, world: World) -> None:
    """Compare ``dataset``'s order identity across the ranks of the job, once per dataset.

    Raises:
        FastdataConfigError: a rank reads another dataset or order than rank 0.
    """
    import torch

    if world.world_size <= 1 or World.in_worker():
        return
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    with _lock:
        if dataset in _checked:
            return
        _checked.add(dataset)
        n = next(_ordinal)
    store = dist.distributed_c10d._get_default_store()
    compare(store, f"fastdata.job_check/{n}/", dataset.identity(world), world.rank, world.world_size)


def compare(store: Any, prefix: str, identity: dict[str, Any], rank: int, world_size: int,
            wait: float = WAIT) -> None:
    """The protocol, over ``store`` under ``prefix``: constant requests per rank."""
    mine = json.dumps(identity, sort_keys=True)
    timeout = timedelta(seconds=wait)
    try:
        store.set(f"{prefix}{rank}", mine)
        store.wait([f"{prefix}0"], timeout)
        reference = store.get(f"{prefix}0").decode()
        if mine != reference:
            store.set(f"{prefix}culprit", json.dumps([rank, identity]))
            store.add(f"{prefix}bad", 1)
        if store.add(f"{prefix}arrived", 1) == world_size:
            store.set(f"{prefix}all", "1")
        store.wait([f"{prefix}all"], timeout)
        bad = store.add(f"{prefix}bad", 0)
        culprit = json.loads(store.get(f"{prefix}culprit").decode()) if bad else None
    except (RuntimeError, ValueError) as error:  # DistStoreError (timeout) derives from RuntimeError
        log.warning("fastdata: not every rank of the job started this dataset within %g s, so "
                    "its identity was not compared across ranks (%s)", wait, error)
        return
    if culprit is None:
        return
    other_rank, other = culprit
    first = json.loads(reference)
    differ = [k if k == "dataset" else f"{k} {first[k]!r} vs {other.get(k)!r}"
              for k in first if first[k] != other.get(k)]
    raise FastdataConfigError(
        f"ranks of this job read different datasets or orders: rank 0 has dataset "
        f"{first['dataset']}, rank {other_rank} has dataset {other['dataset']} (fields that differ: "
        f"{', '.join(differ)}); give every rank "
        "the same dataset and settings (a dataset republished at the same URL while the job "
        "starts gives two fingerprints: restart the job)")
