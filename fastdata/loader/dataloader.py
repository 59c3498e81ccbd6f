"""``fastdata.DataLoader``: batches of a :class:`TokenDataset`, in order, with exact resume.

Two backends produce the same batches in the same order:

* ``"threads"`` (default): batches are assembled in this process by a small thread pool.
  The native gather releases the GIL, so threads run in parallel, and nothing is pickled
  or copied between processes. ``benchmarks/`` measured this faster than worker processes.
* ``"processes"``: a stock ``torch.utils.data.DataLoader`` with worker processes, for
  per-sample Python work that needs them.

The loader counts the batches it has handed to the training loop, so ``state_dict()``
is exact even when more batches are already prepared: those are simply made again after
a resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from fastdata import metrics
from fastdata.errors import FastdataConfigError, FastdataStateError
from fastdata.loader.cursor import Cursor
from fastdata.loader.dataset import TokenDataset
from fastdata.loader.job_check import check_job
from fastdata.loader.job_view import job_view
from fastdata.loader.plan import RankPlan
from fastdata.loader.sigterm import graceful_sigterm
from fastdata.loader.stalls import Made, Stalls, shares
from fastdata.loader.state import StreamState, parse_state
from fastdata.loader.stream import stream
from fastdata.loader.watchdog import watched
from fastdata.world import World

log = logging.getLogger(__name__)
metrics_log = logging.getLogger("fastdata.metrics")
BACKENDS = ("threads", "processes")


class _StepStream(torch.utils.data.IterableDataset):
    """What worker processes iterate: (step, batch, metrics, made) of the steps in their lane,
    where metrics is what this worker's figures grew by since it last sent them (or None) and
    made the record of the batch's making (``fastdata.loader.stalls``). Steps are made one at
    a time (a batch sent to the training process owns its buffers) by the one stepping
    generator, which prefetches remote shards here too."""

    #: Seconds between two metric updates from a worker (and one with its last batch).
    report_every = 0.25

    def __init__(self, dataset: TokenDataset, world: World, epoch: int, start: int,
                 prefetch_bytes: int) -> None:
        self.dataset, self.world, self.epoch, self.start = dataset, world, epoch, start
        self.prefetch_bytes = prefetch_bytes

    def __iter__(self) -> Iterator[tuple[int, dict[str, torch.Tensor], dict | None, Made]]:
        worker, num_workers = World.current_worker()
        plan = self.dataset.plan(self.epoch, self.world.with_worker(worker, num_workers))
        sent, sent_at = metrics.registry.export(), time.monotonic()  # a forked worker inherits figures
        steps = plan.stripe.steps(self.start, plan.num_steps)

        def make(part: range) -> list[dict[str, torch.Tensor]]:
            return [{k: torch.from_numpy(v) for k, v in plan.batch(step).items()} for step in part]

        for step, batch, record in stream(plan, steps, make, largest=1, prefetch_bytes=self.prefetch_bytes):
            update = None
            if step == steps[-1] or time.monotonic() - sent_at >= self.report_every:
                now = metrics.registry.export()
                update, sent, sent_at = metrics.delta(now, sent), now, time.monotonic()
            yield step, batch, update, record


class DataLoader:
    """Micro-batches of a :class:`TokenDataset` for this rank, resumable exactly.

    Args:
        dataset: the dataset; its ``batch_size`` is set to ``batch_size``.
        batch_size: samples per rank per step (the global batch is this times the world size).
        num_workers: threads (or processes) preparing batches.
        pin_memory: pin batches in page-locked memory for fast host-to-GPU copies (needs CUDA).
        prefetch: batches prepared ahead of the training loop (default ``2 * num_workers``).
        backend: ``"threads"`` (default) or ``"processes"``.
        timeout: the longest wait in seconds for one batch from a worker process (default 600;
            0: forever): past it, or once that worker is stopped (SIGSTOP) for 5 s, it is ended
            and FastdataWorkerError names it within 6 s more (``fastdata.loader.watchdog``).
        prefetch_bytes: how far ahead (in shard bytes) remote shards are fetched into the
            cache by a background thread (threads backend; 0 turns it off).
        log_every: log a line of :meth:`metrics` (logger ``fastdata.metrics``, level INFO)
            every this many steps; 0 (default) logs nothing.
    """

    def __init__(  # noqa: PLR0913 - mirrors torch's DataLoader arguments
        self, dataset: TokenDataset, batch_size: int, *, num_workers: int = 2,
        pin_memory: bool = False, prefetch: int | None = None, backend: str = "threads",
        timeout: float = 600, prefetch_bytes: int = 2 << 30, log_every: int = 0,
    ) -> None:
        if backend not in BACKENDS:
            raise FastdataConfigError(f"unknown backend {backend!r}; use one of {BACKENDS}")
        if batch_size < 1 or num_workers < 0 or not timeout >= 0:
            raise FastdataConfigError(f"need batch_size >= 1, num_workers >= 0 and timeout >= 0, got "
                                      f"{batch_size}, {num_workers} and {timeout}")
        # the micro-batch shapes the order; each worker process pins its own shards
        dataset.bind(batch_size, processes=num_workers if backend == "processes" and num_workers else 1)
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()
        if pin_memory and not self.pin_memory:
            log.warning("pin_memory=True ignored: no CUDA device")
        self.prefetch = prefetch or 2 * max(num_workers, 1)
        self.prefetch_bytes = prefetch_bytes
        self.backend, self.timeout = backend, timeout
        self.world = dataset.resolved_world()
        self.cursor = Cursor(restart=True)  # every iter() starts an epoch, as torch's loader does
        self._generation = 0  # bumped by load_state_dict to retire live iterators
        self.log_every = log_every
        self._stats = metrics.Registry()  # this loader's step timings, and its workers' figures
        self._buffer: tuple[list, list, list] = ([], [], [])  # tokens, waits, steps not yet in _stats
        self._stalls = Stalls()  # the waits per stage, not yet in _stats
        self._compute = 0.0  # the loop's own seconds between batches, not yet in _stats
        self._started: float | None = None  # when the training loop first asked for a batch

    def __len__(self) -> int:
        return self.dataset.steps_per_epoch(self.world)

    # ------------------------------------------------------------------ state

    def set_epoch(self, epoch: int) -> None:
        """Start the next ``iter()`` at ``epoch`` (a loaded state still wins)."""
        self.cursor.set_epoch(epoch)

    def _steps_of(self, epoch: int) -> int:
        return self.dataset.epoch_order(epoch, self.world).num_steps

    def state_dict(self) -> dict[str, Any]:
        """Where the training loop is: the same on every rank at the same step; small JSON."""
        if self.cursor.pending is not None:
            return self.cursor.pending.to_dict()
        epoch, step = self.cursor.saved(self._steps_of)
        mixture = self.dataset.mixture_at(epoch, step, self.world)  # a blend's per-source cursors
        return StreamState(epoch, step, self.dataset.identity(self.world), mixture=mixture).to_dict()

    def load_state_dict(self, state: Mapping[str, Any] | str) -> None:
        """Make the next ``iter(loader)`` continue exactly where ``state`` was taken.

        Works across processes, ``num_workers`` and world sizes with the same global batch.
        An iterator that is still running is retired: its next ``next()`` raises.

        Raises:
            FastdataStateError: the state is malformed, per-worker, or from other settings.
        """
        parsed = parse_state(state)
        if parsed.lane is not None:
            raise FastdataStateError("state field 'lane' is set: this is one worker's state from a "
                                     "stock DataLoader, not a fastdata.DataLoader state")
        parsed = self.dataset.adopt_state(parsed, self.world)  # checks it; a blend continues from its cursors
        self.cursor.load(parsed, self._steps_of)
        self._generation += 1

    # ------------------------------------------------------------------ metrics

    def metrics(self, all_ranks: bool = False) -> dict[str, float]:
        """Where the time goes, as a flat ``{name: number}`` snapshot (seconds, bytes, counts).

        ``loader.*`` is measured where the training loop calls ``next()``: ``loader.wait`` is
        the time it waited for each batch, first batches included (p50/p99), split by stage
        into ``loader.wait.<stage>.seconds`` (``fastdata.metrics.STAGES``), ``loader.step``
        the time between two ``next()`` calls, ``loader.data_wait_share`` the share of the
        loop's time spent waiting, ``loader.first_batch`` the wait for each iterator's first
        batch and ``loader.data_wait_share.steady`` the share without those. ``fetch.*``,
        ``cache.*``, ``prefetch.*`` and ``reader.*`` come from this process and its worker
        processes (every dataset the process reads). See ``docs/metrics.md``.

        With ``all_ranks=True`` every rank of the process group must call this at the same
        time; ``job.*`` figures then hold the whole job's view, with ``job.slowest_rank`` the
        rank that waited longest for data and ``job.slowest_rank.stage`` its dominant stage.
        """
        self._flush()
        snap = metrics.combined(metrics.registry, self._stats)
        elapsed = time.perf_counter() - self._started if self._started is not None else 0.0
        snap.update(shares(snap))
        if elapsed > 0:
            snap["loader.tokens_per_second"] = snap.get("loader.tokens", 0.0) / elapsed
            snap["fetch.mb_per_s"] = snap.get("fetch.bytes", 0.0) / elapsed / 1e6
        snap["loader.elapsed"] = elapsed
        looked_up = snap.get("cache.hits", 0.0) + snap.get("cache.misses", 0.0)
        if looked_up:
            snap["cache.hit_rate"] = snap.get("cache.hits", 0.0) / looked_up
        blocks = snap.get("cache.block_hits", 0.0) + snap.get("fetch.blocks", 0.0)
        if blocks:  # block-granular reads (CacheConfig(blocks=True))
            snap["cache.block_hit_rate"] = snap.get("cache.block_hits", 0.0) / blocks
        if snap.get("loader.tokens"):  # per byte of the input tokens delivered (in the shards' dtype)
            delivered = snap["loader.tokens"] * self.dataset.data.dtype.itemsize
            snap["fetch.bytes_per_consumed"] = snap.get("fetch.bytes", 0.0) / delivered
        if all_ranks:
            snap.update(job_view(snap))
        return snap

    def _record(self, asked: float, got: float, first: bool, step_before: float | None,
                batch: Mapping[str, torch.Tensor], record: Made) -> None:
        """One batch's figures: its wait (from ``asked`` to ``got``) split by stage, and the
        previous step's time (None for an iterator's first batch). Kept in plain lists and
        floats (only the training loop's thread writes them) and folded into the registry
        every 1,024 batches and by metrics(): list appends per batch, no lock."""
        waited = got - asked
        self._buffer[0].append(batch["input_ids"].numel() if "input_ids" in batch else 0)
        self._buffer[1].append(waited)
        if first:
            self._stats.observe("loader.first_batch", waited)
        if step_before is not None:
            self._buffer[2].append(step_before)
        self._stalls.add(asked, got, record)
        if len(self._buffer[0]) >= 1024:
            self._flush()

    def _flush(self) -> None:
        tokens, waits, steps = self._buffer
        self._buffer = ([], [], [])
        counts = self._stalls.take()
        if self._compute:
            counts.append(("loader.compute.seconds", self._compute))
            self._compute = 0.0
        if tokens:
            counts += [("loader.batches", len(tokens)), ("loader.tokens", sum(tokens))]
        if counts:
            self._stats.record(counts)
        self._stats.observe_many("loader.wait", waits)
        self._stats.observe_many("loader.step", steps)

    def _log(self, step: int) -> None:
        if self.log_every and (step + 1) % self.log_every == 0:
            metrics_log.info("step %d: %s", step + 1, metrics.summary_line(self.metrics()))

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch (or the rest of a loaded state's). Nothing moves until the first
        ``next()``: frameworks that call ``iter()`` only to see that the loader is iterable
        (Lightning does) neither skip an epoch nor consume a loaded state."""
        return self._epoch()

    def _epoch(self) -> Iterator[dict[str, torch.Tensor]]:
        check_job(self.dataset, self.world)  # every rank reads the same dataset (loader/job_check.py)
        epoch, start, _ = self.cursor.start(self._steps_of)  # a state at an epoch's very end: the next
        yield from self._run(epoch, start, self._generation)

    def _run(self, epoch: int, start: int, generation: int) -> Iterator[dict[str, torch.Tensor]]:
        source = (self._threaded(epoch, start) if self.backend == "threads" or self.num_workers == 0
                  else self._processes(epoch, start))
        # A step runs from one next() to the following one: the loop's own work plus the wait.
        # Each is recorded with the next batch; every wait counts, the first batch's too.
        asked, previous, first = time.perf_counter(), None, True
        if self._started is None:
            self._started = asked
        try:
            with graceful_sigterm():  # an unhandled SIGTERM unwinds like Ctrl-C (loader/sigterm.py)
                for step, batch, record in source:
                    if generation != self._generation:
                        raise FastdataStateError("this iterator was replaced by load_state_dict(); "
                                                 "call iter(loader) again")
                    self.cursor.moved(epoch, step + 1)
                    got = time.perf_counter()
                    self._record(asked, got, first, None if previous is None else asked - previous, batch,
                                 record)
                    yield batch
                    previous, asked, first = asked, time.perf_counter(), False
                    self._compute += asked - got
                    if self.log_every:
                        self._log(step)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _chunk_steps(self) -> int:
        """Steps assembled together: about 4 MiB of tokens, so per-batch overhead stays small."""
        row = (self.dataset.samples.seq_len + 1) * 8 * self.batch_size
        return max(1, min(64, (4 << 20) // row))

    def _make(self, plan: RankPlan, steps: range) -> list[dict[str, torch.Tensor]]:
        """The batches of ``steps``, as tensors (pinned with ``pin_memory``)."""
        batches = []
        for arrays in plan.batches(steps):
            batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
            batches.append({k: v.pin_memory() for k, v in batch.items()} if self.pin_memory else batch)
        return batches

    def _threaded(self, epoch: int, start: int) -> Iterator[tuple[int, dict[str, torch.Tensor], Made]]:
        plan = self.dataset.plan(epoch, self.world)

        def make(steps: range) -> list[dict[str, torch.Tensor]]:
            return self._make(plan, steps)

        threads = 0
        if self.num_workers:  # a tight node cache: one assembling thread (TokenDataset.keeps_few_shards)
            threads = 1 if self.dataset.keeps_few_shards else self.num_workers
        largest = self._chunk_steps()
        yield from stream(plan, range(start, plan.num_steps), make, largest=largest, threads=threads,
                          in_flight=max(2, -(-self.prefetch // largest)), prefetch_bytes=self.prefetch_bytes)

    def _processes(self, epoch: int, start: int) -> Iterator[tuple[int, dict[str, torch.Tensor], Made]]:
        loader = torch.utils.data.DataLoader(
            _StepStream(self.dataset, self.world, epoch, start, self.prefetch_bytes), batch_size=None,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
            prefetch_factor=max(1, self.prefetch // self.num_workers),  # the watchdog keeps time
        )
        iterator = iter(loader)
        interrupted = True
        try:
            for step, batch, update, record in (stream := watched(iterator, self.timeout)):
                if update:
                    self._stats.merge(update)
                yield step, batch, record
            interrupted = False
        except (Exception, GeneratorExit):
            interrupted = False
            raise
        finally:
            stream.close()  # stops the watchdog
            if interrupted:  # Ctrl-C: torch would give each worker 5 s to finish a stalled fetch
                for worker in getattr(iterator, "_workers", ()):
                    worker.terminate()
            # Stop the workers now, even when a worker died: torch only does it when its
            # iterator is garbage, and a traceback can keep that alive while torch's SIGCHLD
            # handler goes on reporting the dead worker into unrelated code.
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
