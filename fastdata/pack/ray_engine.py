"""``fastdata pack --engine ray``: the same pack, tokenized and written by Ray tasks.

Shard boundaries depend on the whole ordered document stream (:class:`ShardCutter`),
which no single task sees, so the pack runs in two phases of Ray tasks with a cheap plan
on the driver in between:

1. *encode*: one task per input task (``pack/sources.py``) reads and tokenizes it with
   the local engine's code, publishes the documents as a *segment* (a raw shard file)
   under ``.fastdata-ray/`` in the output, and returns only the document lengths;
2. the driver feeds the lengths, in task order, to the local engine's :class:`ShardCutter`,
   so the cut points are the local ones;
3. *write*: one task per shard reads its pieces of segments (checked against their
   hashes) and publishes the shard with :func:`publish_shard`, returning its ShardInfo;
4. the driver writes the manifest last and removes ``.fastdata-ray/``.

The output is therefore byte-identical to ``fastdata pack`` with the local engine. Every
task is idempotent: after publishing its file it writes a small record next to it, and a
task that finds its record (same job, file present with the recorded size; segments also
with the recorded hash) returns without redoing the work. A re-run after a killed task
or driver thus redoes only what was not finished.

Tasks are plain ``ray.remote`` functions rather than a ``ray.data`` pipeline: the work is a
fixed list of independent, idempotent tasks with a driver-side plan between two phases,
and plain tasks give exact control over retries and over which task failed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastdata._testing import pause_point
from fastdata.atomic import sweep_stale_temps
from fastdata.errors import FastdataConfigError, FastdataError, FastdataIntegrityError, FastdataIOError
from fastdata.format.hashing import hash_file
from fastdata.format.manifest import ShardInfo
from fastdata.format.reader import open_shard
from fastdata.format.writer import WrittenFile, write_shard
from fastdata.pack.encode import EncodeOptions, TaskResult, encode_task
from fastdata.pack.pipeline import (
    JOURNAL_NAME,
    PackConfig,
    PackPlan,
    PackProgress,
    PackResult,
    _Journal,
    plan_pack,
    write_manifest,
)
from fastdata.pack.shards import ShardCutter, ShardForm, publish_shard, target_tokens
from fastdata.pack.sources import Task
from fastdata.storage.remote import Store, redact

log = logging.getLogger(__name__)

AREA = ".fastdata-ray"
JOB_RECORD = f"{AREA}/job.json"
#: Environment every task sets before it tokenizes: one tokenizer thread per task, since
#: Ray already runs one task per CPU (the local engine's workers do the same).
TASK_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}
#: The crash-test kill points (fastdata/_testing.py) reach the workers as the driver has them.
_FORWARDED_ENV = ("FASTDATA_TEST_PAUSE", "FASTDATA_TEST_PAUSE_DIR")

#: A shard's content: (input task, first document, end document) pieces, in order.
Pieces = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray tasks run."""

    address: str | None = None  #: Ray cluster address ("auto", "ray://head:10001"); None: a local Ray
    max_retries: int = 3  #: re-runs of a task whose worker or node died (Ray's own fault tolerance)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise FastdataConfigError(f"max_retries must be >= 0, got {self.max_retries}")


@dataclass(frozen=True)
class _Area:
    """What a task needs to find the output and its records; travels to the workers."""

    url: str
    job: str
    form: ShardForm
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    env: tuple[tuple[str, str | None], ...] = ()  #: variables to set (None: unset) in the task

    def open(self) -> Store:
        """Set the task's environment and open the output (once per worker process and job).

        Ray reuses worker processes, so the environment is set per task rather than when
        the worker starts; it is set before the first tokenizer of the process is loaded.
        """
        for key, value in self.env:
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        key = (self.url, self.job)
        if key not in _STORES:
            _STORES[key] = Store(self.url, self.storage_options)
        return _STORES[key]


#: The output of the current job in this worker: one Store (one fsspec client) for all its tasks.
_STORES: dict[tuple[str, str], Store] = {}


@dataclass
class _Encoded:
    """What an encode task returns to the driver: no tokens, only their shape."""

    index: int
    lengths: np.ndarray
    input_bytes: int
    skipped: dict[str, int]
    first_skipped: list[str]
    reused: bool


def _segment(index: int) -> str:
    return f"{AREA}/seg-{index:06d}.fds"


def _record(name: str) -> str:
    return name.rsplit(".fds", 1)[0] + ".json"


def _shard_record(index: int) -> str:
    return f"{AREA}/shard-{index:05d}.json"


def _load_json(store: Store, name: str) -> dict[str, Any] | None:
    if store.size(name) is None:
        return None
    try:
        doc = json.loads(store.read_bytes(name))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _fetch_segment(store: Store, index: int, expected: tuple[int, str], staging: str) -> str:
    """A local path of segment ``index``, verified against its size and hash.

    Raises:
        FastdataIntegrityError: the segment is missing or not the one recorded; its record
            is removed, so that a re-run encodes the task again.
    """
    name = _segment(index)
    path = store.path(name)
    if not store.local and store.size(name) is not None:
        path = os.path.join(staging, os.path.basename(name))
        with open(path, "wb") as f:
            f.write(store.read_bytes(name))
    found = (os.path.getsize(path), hash_file(path)) if os.path.exists(path) else None
    if found != tuple(expected):
        store.remove(_record(name))
        raise FastdataIntegrityError(
            f"{store.describe(name)} is missing or damaged (size and xxh3-128 {found}, recorded "
            f"{tuple(expected)}); re-run the same command to encode its input again")
    return path


def _encode(area: _Area, index: int, task: Task, options: EncodeOptions) -> _Encoded:
    """Ray task: tokenize input task ``index`` into its segment, or find it already done."""
    store = area.open()
    name = _segment(index)
    with tempfile.TemporaryDirectory(prefix="fastdata-ray-") as staging:
        done = _load_json(store, _record(name))
        if done is not None and done.get("job") == area.job and done.get("task") == asdict(task):
            try:
                path = _fetch_segment(store, index, done["segment"], staging)
                with open_shard(path) as view:
                    lengths = np.diff(view.doc_offsets().astype(np.int64))
                return _Encoded(index, lengths, done["input_bytes"], done["skipped"],
                                done["first_skipped"], reused=True)
            except (FastdataError, KeyError, TypeError, ValueError) as e:
                log.warning("encoding task %d again: %s", index, e)
        pause_point(f"ray_encode_{index}")
        result = encode_task(task, options)
        written = _publish_segment(store, name, result, staging)
    record = {"job": area.job, "task": asdict(task), "segment": (written.size, written.xxh3_128),
              "input_bytes": result.input_bytes, "skipped": dict(result.skipped),
              "first_skipped": result.first_skipped}
    store.write_bytes(_record(name), json.dumps(record).encode())
    return _Encoded(index, result.lengths, result.input_bytes, dict(result.skipped),
                    result.first_skipped, reused=False)


def _publish_segment(store: Store, name: str, result: TaskResult, staging: str) -> WrittenFile:
    dtype = "uint16" if result.tokens.dtype == np.uint16 else "uint32"
    path = store.path(name) if store.local else os.path.join(staging, os.path.basename(name))
    try:
        written = write_shard(path, result.tokens, result.lengths, result.mask, dtype)
    except OSError as e:
        hint = " (on a Ray cluster a local output directory must be shared by every node)"
        raise FastdataIOError(
            f"writing {path} failed: {e.strerror or e}{hint if store.local else ''}") from None
    if not store.local:
        store.publish(path, name)
        os.unlink(path)
    return written


def _write(area: _Area, index: int, pieces: Pieces) -> tuple[int, ShardInfo, bool]:
    """Ray task: assemble shard ``index`` from its segment pieces and publish it.

    Returns:
        ``index``, the shard's ShardInfo, and whether an earlier run had already published it.
    """
    store = area.open()
    plan = [list(p) for p in pieces]
    done = _load_json(store, _shard_record(index))
    if done is not None and done.get("job") == area.job and done.get("pieces") == plan:
        info = ShardInfo(**done["info"])
        if store.size(info.name) == info.stored_bytes:
            return index, info, True
    pause_point(f"ray_shard_{index}")
    with tempfile.TemporaryDirectory(prefix="fastdata-ray-") as staging:
        docs = _gather(store, area.job, pieces, staging)
        info = publish_shard(store, area.form, index, docs, staging)
    store.write_bytes(_shard_record(index),
                      json.dumps({"job": area.job, "pieces": plan, "info": asdict(info)}).encode())
    return index, info, False


def _gather(store: Store, job: str, pieces: Pieces, staging: str) -> TaskResult:
    """Concatenate the documents ``pieces`` name, from segments checked against their records."""
    toks, lens, masks = [], [], []
    for task, lo, hi in pieces:
        name = _segment(task)
        done = _load_json(store, _record(name))
        if done is None or done.get("job") != job or "segment" not in done:
            raise FastdataIntegrityError(f"{store.describe(_record(name))} is missing or belongs to "
                                         "another pack; re-run the same command to encode its input again")
        path = _fetch_segment(store, task, done["segment"], staging)
        with open_shard(path) as view:
            offsets = view.doc_offsets()
            start, stop = int(offsets[lo]), int(offsets[hi])
            toks.append(np.array(view.tokens(start, stop)))
            lens.append(np.diff(offsets[lo:hi + 1].astype(np.int64)))
            if view.has_loss_mask:
                masks.append(np.array(view.loss_mask(start, stop)))
        if not store.local:
            os.unlink(path)
    mask = np.concatenate(masks) if masks else None
    return TaskResult(np.concatenate(toks), np.concatenate(lens), mask, 0)


class ShardPlanner:
    """Each shard's pieces of input tasks, cut exactly where the local engine cuts.

    Fed each task's document lengths in task order; it keeps only the documents not yet in
    a shard, so the driver never holds the lengths of the whole corpus.
    """

    def __init__(self, target: int) -> None:
        self.cutter = ShardCutter(target)
        self.queue: deque[list[int]] = deque()  # [task, first doc, end doc] not yet in a shard
        self.shards: list[Pieces] = []
        self.tasks = 0

    def add(self, lengths: np.ndarray) -> None:
        """The next task's document lengths."""
        if len(lengths):
            self.queue.append([self.tasks, 0, len(lengths)])
        self.tasks += 1
        for ndocs in self.cutter.add(lengths):
            self._take(ndocs)

    def finish(self) -> list[Pieces]:
        """Close the last shard; every shard's pieces, in shard order."""
        last = self.cutter.finish()
        if last:
            self._take(last)
        return self.shards

    def _take(self, ndocs: int) -> None:
        pieces = []
        while ndocs:
            task, lo, hi = self.queue[0]
            k = min(ndocs, hi - lo)
            pieces.append((task, lo, lo + k))
            if k == hi - lo:
                self.queue.popleft()
            else:
                self.queue[0][1] = lo + k
            ndocs -= k
        self.shards.append(tuple(pieces))


def plan_shards(lengths: Iterable[np.ndarray], target: int) -> list[Pieces]:
    """:class:`ShardPlanner` over every task's document lengths, in task order.

    Args:
        lengths: the document lengths of each input task.
        target: tokens per shard (:func:`target_tokens`).
    """
    planner = ShardPlanner(target)
    for task_lengths in lengths:
        planner.add(task_lengths)
    return planner.finish()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FastdataConfigError(
            "--engine ray needs Ray: pip install 'fastdata[ray]' (or 'ray[data]>=2.9')") from None
    return ray


def _failure(ray: Any, error: Exception, what: str) -> FastdataError:
    """The fastdata error for a failed task: its own when it raised one."""
    cause = getattr(error, "cause", None)
    if isinstance(error, ray.exceptions.RayTaskError) and isinstance(cause, FastdataError):
        return cause
    first = (str(cause or error).strip().splitlines() or [""])[0]
    return FastdataIOError(
        f"{what} failed on Ray: {type(cause or error).__name__}: {redact(first)}; re-run the same "
        "command to finish the pack (finished segments and shards are kept)")


def _run_all(ray: Any, fn: Any, calls: Iterable[tuple[Any, ...]], what: Callable[[int], str],
             on_result: Callable[[Any], None]) -> None:
    """Run ``fn(*call)`` for every call, a bounded number at a time.

    After a failure nothing new is submitted, but the tasks in flight finish (and keep
    their work for a re-run); then the first failure is raised.
    """
    window = max(2, int(2 * ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, int] = {}
    queued = iter(enumerate(calls))
    failure: FastdataError | None = None

    def submit() -> None:
        while len(pending) < window:
            item = next(queued, None)
            if item is None:
                return
            pending[fn.remote(*item[1])] = item[0]

    submit()
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ref)
        try:
            on_result(ray.get(ref))
        except Exception as e:  # noqa: BLE001 - every task failure is reported, typed, below
            error = _failure(ray, e, what(i))
            log.error("%s", error)
            failure = failure or error
        if failure is None:
            submit()
    if failure is not None:
        raise failure


def _claim_area(plan: PackPlan, overwrite: bool) -> None:
    """Make the temp area this job's: refuse another job's unfinished pack, as the local
    engine does, unless ``overwrite`` starts over."""
    store = plan.store
    if store.local:
        os.makedirs(store.path(AREA), exist_ok=True)
        sweep_stale_temps(store.path(AREA))
    previous = _load_json(store, JOB_RECORD)
    if previous is not None and previous.get("job") != plan.job and not overwrite:
        raise FastdataConfigError(
            f"{store.display} holds an unfinished Ray pack with other inputs or arguments; "
            "re-run that pack, or pass --overwrite to start this one from scratch")
    if previous is not None and (overwrite or previous.get("job") != plan.job):
        _remove_area(store, int(previous.get("tasks", 0)), int(previous.get("shards", 0)))
        if store.local:
            os.makedirs(store.path(AREA), exist_ok=True)
    if overwrite:
        store.remove(JOURNAL_NAME)
    else:
        _Journal(store, plan.job, PackProgress()).load()  # refuses another job's local journal
    store.write_bytes(JOB_RECORD, json.dumps({"job": plan.job, "tasks": len(plan.tasks)}).encode())


def _remove_area(store: Store, tasks: int, shards: int) -> None:
    if store.local:
        shutil.rmtree(store.path(AREA), ignore_errors=True)
        return
    for i in range(tasks):
        store.remove(_segment(i))
        store.remove(_record(_segment(i)))
    for i in range(shards):
        store.remove(_shard_record(i))
    store.remove(JOB_RECORD)


def _connect(ray: Any, config: PackConfig, options: RayOptions) -> bool:
    """Join the Ray the caller already started, or start/connect one; True if we did."""
    if ray.is_initialized():
        return False
    if options.address:
        ray.init(address=options.address, logging_level=logging.WARNING)
    else:
        ray.init(address="local", num_cpus=config.workers, include_dashboard=False,
                 logging_level=logging.WARNING)
    return True


def pack_on_ray(config: PackConfig, options: RayOptions | None = None,
                progress: Callable[[PackProgress], None] | None = None) -> PackResult:
    """Pack ``config.inputs`` into ``config.output`` with Ray tasks; the same bytes as
    :func:`fastdata.pack.pipeline.pack`.

    Inputs (and a tokenizer file) must be readable at the same paths on every Ray node,
    and a local output directory must be shared by them; a URL output needs no sharing.
    ``config.workers`` is the CPU count of a local Ray; a cluster brings its own.

    Returns:
        The manifest written and the totals (``resumed_tasks`` and ``resumed_shards``
        count the work an earlier run had finished).

    Raises:
        FastdataConfigError: Ray is not installed, bad arguments, or the output holds
            another job.
        FastdataInputError: a bad record under ``on_error=raise``.
        FastdataIOError: the output cannot be written, or a task died (re-run to finish).
    """
    options = options or RayOptions()
    ray = _import_ray()
    plan = plan_pack(config)
    store = plan.store
    _claim_area(plan, config.overwrite)
    storage_options = dict(config.storage_options)
    if store.allow_insecure:
        storage_options["allow_insecure"] = True
    env = (*TASK_ENV.items(), *((k, os.environ.get(k)) for k in _FORWARDED_ENV))
    area = _Area(config.output, plan.job, ShardForm(plan.dtype, config.encode.read.chat,
                                                      config.compression), storage_options, env)
    totals = PackProgress()
    started = _connect(ray, config, options)
    try:
        task_options = {"num_cpus": 1, "max_retries": options.max_retries}
        planner = ShardPlanner(target_tokens(config.shard_size, plan.dtype))
        _encode_all(ray, ray.remote(_encode).options(**task_options), area, plan, config.encode,
                    planner, totals, progress)
        shards = planner.finish()
        store.write_bytes(JOB_RECORD, json.dumps(
            {"job": plan.job, "tasks": len(plan.tasks), "shards": len(shards)}).encode())
        infos: list[ShardInfo | None] = [None] * len(shards)

        def on_shard(result: tuple[int, ShardInfo, bool]) -> None:
            index, info, reused = result
            infos[index] = info
            totals.shards += 1
            totals.stored_bytes += info.stored_bytes
            totals.resumed_shards += reused
            if progress:
                progress(totals)

        _run_all(ray, ray.remote(_write).options(**task_options),
                 ((area, i, pieces) for i, pieces in enumerate(shards)),
                 lambda i: f"writing shard {i}", on_shard)
    finally:
        if started:
            ray.shutdown()
    manifest = write_manifest(plan, config, [i for i in infos if i is not None])
    _remove_area(store, len(plan.tasks), len(shards))
    return PackResult(manifest, totals)


def _encode_all(ray: Any, fn: Any, area: _Area, plan: PackPlan, encode: EncodeOptions,
                planner: ShardPlanner, totals: PackProgress,
                progress: Callable[[PackProgress], None] | None) -> None:
    """Phase 1: every input task's segment, the lengths fed to ``planner`` in task order."""
    early: dict[int, _Encoded] = {}  # finished before a task in front of them

    def on_result(e: _Encoded) -> None:
        if e.reused:
            totals.resumed_tasks += 1
        else:  # this run's work only, as the local engine counts it
            totals.docs += len(e.lengths)
            totals.tokens += int(e.lengths.sum())
            totals.input_bytes += e.input_bytes
        early[e.index] = e
        while planner.tasks in early:
            ready = early.pop(planner.tasks)
            planner.add(ready.lengths)
            totals.skipped.update(ready.skipped)  # whichever run encoded the task
            totals.first_skipped += ready.first_skipped[: max(5 - len(totals.first_skipped), 0)]
        if progress:
            progress(totals)

    def what(i: int) -> str:
        task = plan.tasks[i]
        return f"encoding {task.path}[{task.start}:{task.end}]"

    _run_all(ray, fn, ((area, i, task, encode) for i, task in enumerate(plan.tasks)), what, on_result)
