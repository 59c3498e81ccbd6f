"""``TokenDataset``: a PyTorch ``IterableDataset`` over a packed dataset.

It composes the pieces and owns no I/O of its own: the manifest and shards come from
:func:`fastdata.open_dataset`, the order from :mod:`fastdata.sampling.order`, the arrays
from :class:`~fastdata.loader.batch.BatchAssembler`. Iterating it yields this rank's part
of every global step, in order; DataLoader workers take steps in turns.

With ``batch_size`` set, each item is a micro-batch (use ``DataLoader(ds, batch_size=None)``
or :class:`fastdata.DataLoader`); without, each item is one sample (a stock
``DataLoader(ds, batch_size=B)`` batches them; the order then follows a micro-batch of 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import IterableDataset

from fastdata.config import CacheConfig, StorageConfig, resolve
from fastdata.errors import FastdataConfigError, FastdataStateError
from fastdata.format.reader import permute
from fastdata.loader import cache_fit
from fastdata.loader.batch import BatchAssembler, SampleConfig
from fastdata.loader.blend import BlendAssembler
from fastdata.loader.cache_fit import CACHED_OPEN_SHARDS  # noqa: F401 - kept importable from here
from fastdata.loader.cursor import Cursor, check
from fastdata.loader.epoch_share import StartShare, starts_from_main
from fastdata.loader.job_check import check_job
from fastdata.loader.mixture import Schedule
from fastdata.loader.plan import RankPlan
from fastdata.loader.sources import Source, as_sources, mixture_of, open_source
from fastdata.loader.state import StreamState, check_identity, identity_of, parse_state
from fastdata.loader.stepping import step_items
from fastdata.loader.stream import stream
from fastdata.reader.dataset import Dataset
from fastdata.sampling.blend import BlendOrder
from fastdata.sampling.order import EpochOrder, OrderConfig, SampleSpace, Stripe, document_space, packed_space
from fastdata.sampling.sources import IdSpace, concat
from fastdata.storage.remote import redact
from fastdata.world import World

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderOptions:
    """Order settings beyond ``shuffle`` and ``seed``; they must stay fixed across a resume."""

    window: int | None = 16  #: shards per local-shuffle block; None shuffles whole partitions
    partitions: int | None = None  #: canonical partitions; default: the global batch size
    drop_last: bool = True  #: drop the last partial global batch of an epoch (else pad it)


class TokenDataset(IterableDataset):  # noqa: PLR0904 - the documented user-facing class
    """Deterministic, resumable training samples from a packed dataset.

    Args:
        source: dataset directory or fsspec URL (the folder holding ``manifest.json``), or a
            Megatron-Core ``<prefix>.idx`` / ``<prefix>.bin`` (docs/megatron.md).
        seq_len: tokens per sample.
        shuffle: shuffle shards and samples (per epoch, keyed by ``seed``).
        seed: the order's seed.
        batch_size: micro-batch per rank; set by :class:`fastdata.DataLoader`.
        sampling: sample mode and extra outputs: a :class:`SampleConfig` (its ``seq_len``
            equal to ``seq_len``), or a mapping of its fields except seq_len.
        order: window, partitions and tail policy (:class:`OrderOptions`).
        world: explicit topology; default: detected from torch.distributed / torchrun.
        storage_options: fsspec options for a remote ``source`` (never logged).
        cache_dir: local directory for remote or compressed shards (one per node).
        cache_limit: bytes (or "400GB") the node cache may hold, temp files included; with
            it the cache is shared by every process on the node and evicts what no process
            holds, the shard needed farthest in the future first.
        storage: :class:`~fastdata.config.StorageConfig` (fsspec options and retries), instead
            of ``storage_options``.
        cache: :class:`~fastdata.config.CacheConfig`, instead of ``cache_dir``/``cache_limit``.
        mixture_schedule: a blend's weights by global step, ``[(0, weights), (step, weights)]``
            (a list, or a mapping by source URL or index); docs/loader.md, "Changing the mixture".
        allow_mixture_change: resume a blend from a state saved under other weights or sources;
            each source continues its own epoch, a new one starts at its epoch 0.

    Raises:
        FastdataConfigError: the settings are invalid or the dataset has no sample.
    """

    #: Steps one gather reads at most when iterated directly (chunks grow 1, 2, 4, ... to it).
    CHUNK_STEPS = 64
    #: Bytes of shards fetched ahead of the iteration (when they are fetched), within the
    #: cache's room; ``fastdata.DataLoader(prefetch_bytes=...)`` sets its own.
    prefetch_bytes = 2 << 30

    def __init__(  # noqa: PLR0913 - the documented user-facing constructor
        self, source: str | Source | Sequence[Source], *, seq_len: int, shuffle: bool = True, seed: int = 0,
        batch_size: int | None = None, sampling: SampleConfig | Mapping[str, Any] | None = None,
        order: OrderOptions | None = None, world: World | None = None,
        storage_options: Mapping[str, Any] | None = None, cache_dir: str | None = None,
        cache_limit: int | str | None = None, mixture_schedule: Schedule | None = None,
        allow_mixture_change: bool = False, storage: StorageConfig | None = None,
        cache: CacheConfig | None = None,
    ) -> None:
        super().__init__()
        self.samples = _samples(seq_len, sampling)
        storage, cache = resolve(storage, cache, storage_options=storage_options, cache_dir=cache_dir,
                                 cache_limit=cache_limit)
        given = as_sources(source)
        self.datasets: list[Dataset] = [open_source(s.url, storage=storage, cache=cache) for s in given]
        # a SAS query in a URL is a credential: only the opened stores keep it (never pickled)
        self.sources = [Source(redact(s.url), s.weight) for s in given]
        self.prefetch_cap: int | None = None  # bytes this rank may fetch ahead without crowding the cache
        self._cache_limit = cache.limit
        self._cache_world = World.detect(world) if cache.limit is not None else None
        self.spaces = [self._space(d) for d in self.datasets]
        for d, space in zip(self.datasets, self.spaces):
            if space.num_samples == 0:
                raise FastdataConfigError(
                    f"{d.store.display} gives no sample of {seq_len + 1} tokens "
                    f"({d.num_tokens} tokens, {d.num_docs} documents); use a shorter "
                    "seq_len or more data")
        self.data = self.datasets[0]
        self.space = self.spaces[0] if len(self.spaces) == 1 else concat(self.spaces)
        self.mixture = mixture_of(given, self.datasets, self.spaces, mixture_schedule, allow_mixture_change)
        self.weights = self.mixture.weights if self.mixture is not None else None
        if self.weights is not None and (self.samples.doc_ids or self.samples.mode == "bestfit"):
            raise FastdataConfigError("doc_ids / cu_seqlens / bestfit are not for blends of sources")
        self.shuffle, self.seed = shuffle, seed
        self.order_options = order or OrderOptions()
        if batch_size is not None and batch_size < 1:
            raise FastdataConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.fit_cache()
        World.detect(world)  # fail now if the configured world contradicts the process group
        self.world = world
        self._assembler: BatchAssembler | BlendAssembler | None = None
        self._orders: dict[tuple[int, int], EpochOrder | BlendOrder] = {}
        self.cursor = Cursor(restart=False)  # (epoch, next step) as yielded in-process, a loaded state
        self._share = StartShare()  # reaches persistent DataLoader workers (loader/epoch_share.py)

    def __repr__(self) -> str:
        where = ", ".join(repr(d.store.display) for d in self.datasets)
        return (f"TokenDataset({where}, seq_len={self.samples.seq_len}, "
                f"mode={self.samples.mode!r}, samples={self.space.num_samples}, seed={self.seed})")

    def _space(self, data: Dataset) -> SampleSpace:
        shards = data.shards
        if self.samples.mode == "packed":
            return packed_space(shards.column("tokens"), self.samples.seq_len)
        return document_space(shards.column("docs"))

    # ------------------------------------------------------------------ order

    def resolved_world(self) -> World:
        """The topology of this process (the worker fields are filled in workers)."""
        return World.detect(self.world)

    def order_config(self, world: World) -> OrderConfig:
        micro = self.batch_size or 1
        g = micro * world.world_size
        o = self.order_options
        return OrderConfig(global_batch=g, partitions=o.partitions or g, seed=self.seed,
                           shuffle=self.shuffle, window=o.window, drop_last=o.drop_last)

    def epoch_order(self, epoch: int, world: World) -> EpochOrder | BlendOrder:
        config = self.order_config(world)
        key = (epoch, config.global_batch)
        order = self._orders.get(key)
        if order is None:
            fingerprints = [d.manifest.fingerprint for d in self.datasets]
            if self.mixture is None:  # one source: its own assembler (a blend has a BlendAssembler)
                one = cast(BatchAssembler, self.assembler())
                order = one.epoch_order(self.space, config, epoch, fingerprints[0])
            else:
                plan = self.mixture.plan(config.global_batch)
                order = BlendOrder(self.spaces, plan, config, epoch, fingerprints, permute)
            self._orders = {key: order}
            if config.partitions % world.num_nodes:
                log.warning("%d partitions do not divide among %d nodes: nodes will share shards",
                            config.partitions, world.num_nodes)
        return order

    def identity(self, world: World) -> dict[str, Any]:
        c = self.order_config(world)
        dataset = self.data.manifest.fingerprint if self.mixture is None else self.mixture.identity()
        return identity_of(dataset=dataset, seq_len=self.samples.seq_len,
                           mode=self.samples.order_mode, seed=c.seed, shuffle=c.shuffle, window=c.window,
                           global_batch=c.global_batch, partitions=c.partitions, drop_last=c.drop_last)

    def steps_per_epoch(self, world: World | None = None) -> int:
        return self.epoch_order(0, world or self.resolved_world()).num_steps

    def assembler(self) -> BatchAssembler | BlendAssembler:
        if self._assembler is None:
            parts = [BatchAssembler(d, self.samples) for d in self.datasets]
            self._assembler = parts[0] if len(parts) == 1 else BlendAssembler(parts, IdSpace(self.spaces))
        return self._assembler

    @property
    def fetches(self) -> bool:
        """Whether some shards come from remote storage or need decompressing (worth prefetching)."""
        return any(not d.files.in_place for d in self.datasets)

    def plan(self, epoch: int, world: World) -> RankPlan:
        """What this process reads of ``epoch``: its stripe of every step (a worker's, in a
        DataLoader worker), the shards each step needs (``loader/plan.py``)."""
        order = self.epoch_order(epoch, world)
        return self.plan_of(order, Stripe.of(order.config.global_batch, world.rank, world.world_size,
                                             world.worker, world.num_workers))

    def plan_of(self, order: EpochOrder | BlendOrder, stripe: Stripe) -> RankPlan:
        return RankPlan(order, stripe, self.assembler(), self.datasets,
                        open_limit=min(d.max_open_shards for d in self.datasets),
                        per_batch=self.samples.doc_ids, prefetch_room=self.prefetch_cap)

    def shards_of(self, order: EpochOrder | BlendOrder, stripe: Stripe, step: int) -> np.ndarray:
        """Shards (as ``source << 40 | shard``) that this rank's micro-batch of ``step`` reads."""
        return self.plan_of(order, stripe).shards_of(step)

    def batch(self, order: EpochOrder, stripe: Stripe, step: int) -> dict[str, np.ndarray]:
        """This rank's micro-batch of global step ``step`` as numpy arrays."""
        return self.plan_of(order, stripe).batch(step)

    def bind(self, batch_size: int, processes: int = 1) -> None:
        """Take the micro-batch of the loader that reads this dataset (``fastdata.DataLoader``
        calls it once) and fit the node cache to it and its ``processes`` reading processes.

        Raises:
            FastdataConfigError: the dataset was built with another ``batch_size``.
        """
        if self.batch_size not in (None, batch_size):
            raise FastdataConfigError(f"the dataset was built with batch_size={self.batch_size}, "
                                      f"the loader asks for {batch_size}")
        self.batch_size = batch_size
        self.fit_cache(processes)

    def fit_cache(self, processes: int = 1) -> None:
        """With a node cache: how many shards each process keeps mapped (and pinned), the
        refusal of a limit that cannot work, and the prefetch room (``loader/cache_fit.py``).
        ``fastdata.DataLoader`` calls it again when it sets ``batch_size`` (with its worker
        processes), and the order's working set follows the micro-batch."""
        if self._cache_limit is None:
            return
        world, limit = self._cache_world, self._cache_limit
        if world is None:  # set with the limit in __init__
            world = self._cache_world = World.detect(getattr(self, "world", None))
        largest = max((int(d.shards.column("raw_bytes").max()) for d in self.datasets if len(d.shards)),
                      default=0)
        fitted = cache_fit.fit(limit, largest, world.ranks_per_node, self.working_set(world), processes)
        for d in self.datasets:
            d.keep_open(fitted.per_process)
        self._tight = fitted.tight
        if fitted.tight and self.fetches:
            cfg, shards = self.order_config(world), sum(len(d.shards) for d in self.datasets)
            window = cache_fit.fitting_window(limit, largest, world.ranks_per_node * processes, shards,
                                              cfg.partitions, cfg.global_batch, self.batch_size or 1)
            instead = (f", or OrderOptions(window={window}) fits this limit" if self.shuffle and window
                       and window < (cfg.window or shards) else "")
            log.warning("cache_limit %d bytes holds less than the shards per process this order reads at "
                        "once: shards will be opened repeatedly and may be fetched again; %d bytes or more "
                        "keeps them%s", limit, fitted.advised, instead)
        self.prefetch_cap = fitted.prefetch_room

    def working_set(self, world: World) -> int:
        """Shards one rank reads from at once: the partitions its micro-batch draws from, each
        within its current shuffle block (``window`` shards, or the whole partition)."""
        cfg = self.order_config(world)
        return cache_fit.working_set(sum(len(d.shards) for d in self.datasets), cfg.partitions,
                                     cfg.global_batch, self.batch_size or 1, cfg.window, self.shuffle)

    @property
    def keeps_few_shards(self) -> bool:
        """Whether a node cache limits the shards this process keeps mapped (pinned) to what one
        micro-batch reads, the number its minimum limit counts on. Several threads gathering at once would
        then take turns unpinning each other's shards, and a tight cache would evict and fetch
        them again: ``fastdata.DataLoader`` assembles such batches on one thread (the gather
        is a small share of a batch's time; downloads stay parallel in the prefetcher)."""
        return self._cache_limit is not None and self.fetches and self._tight

    # ------------------------------------------------------------------ epochs and state

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at ``epoch`` (as with DistributedSampler); with a stock
        DataLoader call it before every epoch: it reaches (persistent) workers at ``iter()``."""
        if epoch < 0:
            raise FastdataConfigError(f"epoch must be >= 0, got {epoch}")
        self._share.set_epoch(self, epoch)
        self.cursor.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Position of this dataset's own iteration (exact with ``num_workers=0``); inside a
        DataLoader worker (torchdata's StatefulDataLoader asks each one) that worker's lane."""
        if self.cursor.pending is not None:
            return self.cursor.pending.to_dict()
        world = self.resolved_world()
        worker, num_workers = World.current_worker()
        epoch, step = self.cursor.saved(self._steps_of(world))
        lane = (worker, num_workers) if num_workers > 1 else None
        mixture = self.mixture_at(epoch, step, world)
        return StreamState(epoch, step, self.identity(world), lane, mixture).to_dict()

    def load_state_dict(self, state: Mapping[str, Any] | str) -> None:
        """Resume the next iteration exactly where ``state`` was taken.

        Raises:
            FastdataStateError: the state is malformed or was saved with other settings.
        """
        world = self.resolved_world()
        parsed = self.adopt_state(parse_state(state), world)
        check(parsed, self._steps_of(world), slack=parsed.lane[1] if parsed.lane else 0)
        self._share.loaded(self, state)  # may refuse too: the cursor changes last
        self.cursor.pending = parsed

    def mixture_at(self, epoch: int, step: int, world: World) -> Any:
        """A blend's per-source cursors before ``step`` of ``epoch`` (None for one source)."""
        return self.mixture and self.mixture.at(epoch, step, self.order_config(world).global_batch)

    def adopt_state(self, state: StreamState, world: World) -> StreamState:
        """Check a parsed state against this stream and return it as this stream would save
        it; a blend goes on from the state's per-source cursors (:meth:`Mixture.adopt`)."""
        current = self.identity(world)
        if self.mixture is None:
            check_identity(state.identity, current)
            return state
        self._orders = {}
        return self.mixture.adopt(state, current, self.order_config(world).global_batch)

    def _steps_of(self, world: World) -> Callable[[int], int]:
        return lambda epoch: self.epoch_order(epoch, world).num_steps

    def take_start(self, world: World) -> tuple[int, int, bool]:
        """(epoch, first step, whether ``step`` is this worker's own lane position)."""
        epoch, step, pending = self.cursor.start(self._steps_of(world))
        if pending is None:
            return epoch, step, False
        same_lane = pending.lane == ((world.worker, world.num_workers) if world.num_workers > 1 else None)
        if pending.lane is not None and not same_lane:
            raise FastdataStateError(
                f"state field 'lane' is {list(pending.lane)} (a per-worker state) but this worker is "
                f"{[world.worker, world.num_workers]}; resume with the same num_workers or from a "
                "fastdata.DataLoader state")
        return pending.epoch, pending.step, pending.lane is not None

    # ------------------------------------------------------------------ iteration

    @starts_from_main
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, num_workers = World.current_worker()
        world = self.resolved_world().with_worker(worker, num_workers)
        check_job(self, world)  # in the training process: every rank reads the same dataset
        epoch, start, own_lane = self.take_start(world)
        plan = self.plan(epoch, world)
        if own_lane:
            steps = range(start, plan.num_steps, num_workers)
        else:
            steps = plan.stripe.steps(start, plan.num_steps)
        in_worker = World.in_worker()

        def make(part: range) -> list[dict[str, torch.Tensor]]:
            return list(step_items(plan, self.samples, part, batched=self.batch_size is not None,
                                   in_worker=in_worker))

        for step, item, _ in stream(plan, steps, make, largest=self.CHUNK_STEPS,
                                    prefetch_bytes=self.prefetch_bytes):
            self.cursor.moved(epoch, step + num_workers)
            yield item
        first_next = worker if num_workers > 1 else 0
        self.cursor.moved(epoch + 1, first_next)


def _samples(seq_len: int, sampling: SampleConfig | Mapping[str, Any] | None) -> SampleConfig:
    if isinstance(sampling, SampleConfig):
        if sampling.seq_len != seq_len:
            raise FastdataConfigError(f"sampling=SampleConfig(seq_len={sampling.seq_len}) disagrees with "
                                      f"seq_len={seq_len}")
        return sampling
    return SampleConfig(seq_len=seq_len, **dict(sampling or {}))
