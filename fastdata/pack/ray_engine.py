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

The tasks' code is in :mod:`fastdata.pack.ray_tasks`; this module is the driver. Tasks are
plain ``ray.remote`` functions rather than a ``ray.data`` pipeline: the work is a
fixed list of independent, idempotent tasks with a driver-side plan between two phases,
and plain tasks give exact control over retries and over which task failed.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastdata import environment
from fastdata.atomic import sweep_stale_temps
from fastdata.errors import FastdataConfigError, FastdataError, FastdataIOError
from fastdata.format.manifest import ShardInfo
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.journal import JOURNAL_NAME, Journal
from fastdata.pack.pipeline import (
    PackConfig,
    PackPlan,
    PackProgress,
    PackResult,
    plan_pack,
    write_manifest,
)
from fastdata.pack.ray_tasks import (
    AREA,
    JOB_RECORD,
    Area,
    Encoded,
    encode,
    load_json,
    record_name,
    segment_name,
    shard_record_name,
    write,
)
from fastdata.pack.shards import ShardForm, ShardPlanner, target_tokens
from fastdata.storage.remote import Store, redact

log = logging.getLogger(__name__)

#: Environment every task sets before it tokenizes: one tokenizer thread per task, since
#: Ray already runs one task per CPU (the local engine's workers do the same).
TASK_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray tasks run."""

    address: str | None = None  #: Ray cluster address ("auto", "ray://head:10001"); None: a local Ray
    max_retries: int = 3  #: re-runs of a task whose worker or node died (Ray's own fault tolerance)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise FastdataConfigError(f"max_retries must be >= 0, got {self.max_retries}")


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
    previous = load_json(store, JOB_RECORD)
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
        Journal(store, plan.job, PackProgress()).load()  # refuses another job's local journal
    store.write_bytes(JOB_RECORD, json.dumps({"job": plan.job, "tasks": len(plan.tasks)}).encode())


def _remove_area(store: Store, tasks: int, shards: int) -> None:
    if store.local:
        shutil.rmtree(store.path(AREA), ignore_errors=True)
        return
    for i in range(tasks):
        store.remove(segment_name(i))
        store.remove(record_name(segment_name(i)))
    for i in range(shards):
        store.remove(shard_record_name(i))
    store.remove(JOB_RECORD)


def _connect(ray: Any, config: PackConfig, options: RayOptions) -> bool:
    """Join the Ray the caller already started, or start/connect one; True if we did."""
    if ray.is_initialized():
        return False
    if options.address:
        ray.init(address=options.address, logging_level=logging.WARNING)
    else:
        _init_local(ray, config.workers)
    return True


def _init_local(ray: Any, workers: int) -> None:
    """Start a local Ray whose workers import the installed fastdata.

    Ray puts the driver's working directory first on every worker's ``sys.path``: run from a
    source checkout, the tree's ``fastdata/`` (without the compiled ``_native``) would shadow
    the installed package in every task. So Ray starts from an empty directory, and each
    worker then moves to the caller's, where relative inputs and outputs resolve as here.
    """
    here = os.getcwd()
    empty = tempfile.mkdtemp(prefix="fastdata-ray-")
    atexit.register(shutil.rmtree, empty, True)  # the local Ray's processes run in it until then
    os.chdir(empty)
    try:
        ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"worker_process_setup_hook": _chdir_to(here)})
    finally:
        os.chdir(here)


def _chdir_to(path: str) -> Callable[[], None]:
    """A worker setup hook. Nested, so Ray ships it by value: loading it imports no fastdata
    module (which a worker could otherwise find in the wrong place)."""
    def chdir() -> None:
        os.chdir(path)
    return chdir


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
    env = (*TASK_ENV.items(), *environment.forwarded_to_tasks())
    form = ShardForm(plan.dtype, config.encode.read.chat, config.compression, config.block_size)
    area = Area(config.output, plan.job, form, storage_options, env,
                inputs=(plan.inputs.spec()[0], storage_options))
    totals = PackProgress()
    started = _connect(ray, config, options)
    try:
        task_options = {"num_cpus": 1, "max_retries": options.max_retries}
        planner = ShardPlanner(target_tokens(config.shard_size, plan.dtype))
        _encode_all(ray, ray.remote(encode).options(**task_options), area, plan, config.encode,
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

        _run_all(ray, ray.remote(write).options(**task_options),
                 ((area, i, pieces) for i, pieces in enumerate(shards)),
                 lambda i: f"writing shard {i}", on_shard)
    finally:
        if started:
            ray.shutdown()
    manifest = write_manifest(plan, config, [i for i in infos if i is not None])
    _remove_area(store, len(plan.tasks), len(shards))
    return PackResult(manifest, totals)


def _encode_all(ray: Any, fn: Any, area: Area, plan: PackPlan, encode: EncodeOptions,
                planner: ShardPlanner, totals: PackProgress,
                progress: Callable[[PackProgress], None] | None) -> None:
    """Phase 1: every input task's segment, the lengths fed to ``planner`` in task order."""
    early: dict[int, Encoded] = {}  # finished before a task in front of them

    def on_result(e: Encoded) -> None:
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
