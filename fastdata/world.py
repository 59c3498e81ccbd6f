"""Topology: which node, rank and worker this process is, computed once and passed down.

:meth:`World.from_env` turns the launcher's environment (``fastdata.environment.launcher``)
into a ``World``; :meth:`World.detect` is the only place fastdata looks at ``torch.distributed``
for the topology; :meth:`World.current_worker` and :meth:`World.in_worker` are the only places
that look at DataLoader worker info. Everything else receives a ``World`` or asks these.
``torch.distributed`` appears elsewhere only to communicate, not to learn the topology:
``loader/job_check.py`` compares the ranks' order identities through the process group's
key-value store, and ``loader/job_view.py`` all-gathers the ranks' metrics.
Node identity comes from ``FASTDATA_NODE_ID`` / ``GROUP_RANK`` / ``NODE_RANK`` (never the
host name), so several fake nodes can run on one machine in tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from fastdata import environment
from fastdata.errors import FastdataConfigError

log = logging.getLogger(__name__)
_warned = False


def _warn_once() -> None:
    global _warned
    _warned = True


@dataclass(frozen=True)
class World:
    """Where this process sits: node → rank → DataLoader worker."""

    rank: int = 0  #: global rank
    world_size: int = 1
    local_rank: int = 0  #: rank within the node
    ranks_per_node: int = 1
    worker: int = 0  #: DataLoader worker id (0 without workers)
    num_workers: int = 1  #: workers per rank (1 without workers)

    def __post_init__(self) -> None:
        checks = [
            (self.world_size >= 1, "world_size must be >= 1"),
            (0 <= self.rank < self.world_size, "rank must be in [0, world_size)"),
            (self.ranks_per_node >= 1 and self.world_size % self.ranks_per_node == 0,
             "world_size must be a multiple of ranks_per_node"),
            (0 <= self.local_rank < self.ranks_per_node, "local_rank must be in [0, ranks_per_node)"),
            (self.rank % self.ranks_per_node == self.local_rank,
             "ranks must be numbered node by node (rank % ranks_per_node == local_rank)"),
            (self.num_workers >= 1 and 0 <= self.worker < self.num_workers,
             "worker must be in [0, num_workers)"),
        ]
        for ok, why in checks:
            if not ok:
                raise FastdataConfigError(f"invalid topology {self}: {why}")

    @property
    def node(self) -> int:
        return self.rank // self.ranks_per_node

    @property
    def num_nodes(self) -> int:
        return self.world_size // self.ranks_per_node

    def with_worker(self, worker: int, num_workers: int) -> World:
        return replace(self, worker=worker, num_workers=max(num_workers, 1))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        """The rank layout torchrun (or a compatible launcher) put in the environment."""
        env = environment.launcher() if env is None else env

        def num(*names: str, default: int) -> int:
            for name in names:
                if env.get(name, "") != "":
                    try:
                        return int(env[name])
                    except ValueError:
                        raise FastdataConfigError(
                            f"environment {name}={env[name]!r} is not an integer") from None
            return default

        world_size = num("WORLD_SIZE", default=1)
        rank = num("RANK", default=0)
        ranks_per_node = num("FASTDATA_RANKS_PER_NODE", "LOCAL_WORLD_SIZE", default=world_size)
        local_rank = num("LOCAL_RANK", default=rank % ranks_per_node)
        node = num("FASTDATA_NODE_ID", "GROUP_RANK", "NODE_RANK", default=rank // ranks_per_node)
        if node != rank // ranks_per_node:
            raise FastdataConfigError(
                f"node id {node} disagrees with rank {rank} and {ranks_per_node} ranks per node "
                f"(expected node {rank // ranks_per_node}); ranks must be numbered node by node"
            )
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, ranks_per_node=ranks_per_node)

    @classmethod
    def detect(cls, explicit: World | None = None) -> World:
        """The world of this process, cross-checked against ``torch.distributed`` when it runs.

        Args:
            explicit: a world given in the configuration; it must agree with an initialised
                process group.

        Raises:
            FastdataConfigError: the configured, environment and process-group views disagree.
        """
        world = explicit or cls.from_env()
        try:
            import torch.distributed as dist
        except ImportError:  # torch without distributed support
            return world
        if dist.is_available() and dist.is_initialized():
            pg_rank, pg_size = dist.get_rank(), dist.get_world_size()
            if (pg_rank, pg_size) != (world.rank, world.world_size):
                raise FastdataConfigError(
                    f"the process group says rank {pg_rank} of {pg_size}, but fastdata was "
                    f"configured with rank {world.rank} of {world.world_size}; pass world=None to "
                    "take the process group's view, or fix the launcher's environment"
                )
        elif explicit is None and world.world_size > 1 and not _warned:
            _warn_once()
            log.warning("WORLD_SIZE=%d but no torch.distributed process group is initialised; "
                        "using the environment's rank %d", world.world_size, world.rank)
        return world

    @staticmethod
    def current_worker() -> tuple[int, int]:
        """(worker id, number of workers) of the DataLoader worker running this code."""
        try:
            from torch.utils.data import get_worker_info
        except ImportError:
            return 0, 1
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    @staticmethod
    def in_worker() -> bool:
        """Whether this code runs in a DataLoader worker process (one of one included)."""
        try:
            from torch.utils.data import get_worker_info
        except ImportError:
            return False
        return get_worker_info() is not None
