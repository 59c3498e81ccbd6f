"""``job.*``: one all-gather of every rank's loader figures (``DataLoader.metrics(all_ranks=True)``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fastdata import metrics
from fastdata.loader.stalls import WAIT_KEYS

#: Figures gathered from every rank, then each rank's wait per stage.
_KEYS = ("loader.data_wait_share", "loader.wait.seconds", "loader.tokens_per_second", "fetch.bytes",
         "fetch.retries", "cache.hits", "cache.misses", *WAIT_KEYS)


def job_view(snap: Mapping[str, float]) -> dict[str, float]:
    """``job.*`` figures over every rank (one all-gather); this rank's alone without a group.

    ``job.slowest_rank`` is the rank that waited longest for data, ``job.slowest_rank.stage``
    the index in ``fastdata.metrics.STAGES`` of the stage that carried most of its wait, and
    ``job.slowest_rank.wait.<stage>.seconds`` its wait per stage.
    """
    import torch.distributed as dist

    mine = torch.tensor([float(snap.get(k, 0.0)) for k in _KEYS], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            mine = mine.cuda()
        parts = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, mine)
        table = torch.stack(parts).cpu()
    else:
        table = mine.reshape(1, -1)
    share, wait, tps, fetched, retries, hits, misses = table[:, :7].T
    stages = table[:, 7:]
    slowest = int(torch.argmax(wait))
    out = {"job.ranks": float(len(table)), "job.slowest_rank": float(slowest),
           "job.data_wait_share.max": float(share.max()), "job.data_wait_share.mean": float(share.mean()),
           "job.tokens_per_second": float(tps.sum()), "job.fetch.bytes": float(fetched.sum()),
           "job.fetch.retries": float(retries.sum())}
    for name, seconds in zip(metrics.STAGES, stages[slowest].tolist()):
        out[f"job.slowest_rank.wait.{name}.seconds"] = seconds
    for name, seconds in zip(metrics.STAGES, stages.sum(0).tolist()):
        out[f"job.wait.{name}.seconds"] = seconds
    out["job.slowest_rank.stage"] = float(int(torch.argmax(stages[slowest]))) if float(
        stages[slowest].sum()) else float(metrics.STAGES.index("queue"))
    if float((hits + misses).sum()):
        out["job.cache.hit_rate"] = float(hits.sum() / (hits + misses).sum())
    return out
