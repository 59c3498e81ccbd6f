"""The work of ``fastdata pack --engine ray``: what runs inside each Ray task.

Plain functions (no Ray import), called by :mod:`fastdata.pack.ray_engine` as Ray tasks:
:func:`encode` tokenizes one input task into a *segment* (a raw shard file under
``.fastdata-ray/`` in the output) and :func:`write` assembles and publishes one shard from
pieces of segments. Each publishes its file first and then a small JSON record next to it;
a task that finds its record (same job, file there with the recorded size, and for a
segment the recorded xxh3-128) returns the recorded result without redoing the work.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastdata._testing import pause_point
from fastdata.errors import FastdataError, FastdataIntegrityError, FastdataIOError
from fastdata.format.hashing import hash_file
from fastdata.format.manifest import ShardInfo
from fastdata.format.reader import open_shard
from fastdata.format.writer import WrittenFile, write_shard
from fastdata.pack.encode import EncodeOptions, TaskResult, encode_task
from fastdata.pack.inputs import Inputs, InputSpec
from fastdata.pack.shards import Pieces, ShardForm, publish_shard
from fastdata.pack.sources import Task
from fastdata.storage.remote import Store

log = logging.getLogger(__name__)

AREA = ".fastdata-ray"
JOB_RECORD = f"{AREA}/job.json"


@dataclass(frozen=True)
class Area:
    """What a task needs to find the output and its records; travels to the workers."""

    url: str
    job: str
    form: ShardForm
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    env: tuple[tuple[str, str | None], ...] = ()  #: variables to set (None: unset) in the task
    #: the remote inputs and their storage options: each encode task fetches its own bytes
    inputs: InputSpec = field(default_factory=lambda: ((), {}), repr=False)

    def open(self) -> Store:
        """Set the task's environment and open the output (once per worker process and job).

        Ray reuses worker processes, so the environment is set per task rather than when
        the worker starts; it is set before the first tokenizer of the process is loaded.
        """
        for name, value in self.env:
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        key = (self.url, self.job)
        if key not in _STORES:
            _STORES[key] = Store(self.url, self.storage_options)
        return _STORES[key]

    def open_inputs(self) -> Inputs:
        """The remote inputs' stores (once per worker process and job)."""
        if self.job not in _INPUTS:
            _INPUTS[self.job] = Inputs.from_spec(self.inputs)
        return _INPUTS[self.job]


#: The output of the current job in this worker: one Store (one fsspec client) for all its tasks.
_STORES: dict[tuple[str, str], Store] = {}
_INPUTS: dict[str, Inputs] = {}


@dataclass
class Encoded:
    """What an encode task returns to the driver: no tokens, only their shape."""

    index: int
    lengths: np.ndarray
    input_bytes: int
    skipped: dict[str, int]
    first_skipped: list[str]
    reused: bool


def segment_name(index: int) -> str:
    return f"{AREA}/seg-{index:06d}.fds"


def record_name(name: str) -> str:
    return name.rsplit(".fds", 1)[0] + ".json"


def shard_record_name(index: int) -> str:
    return f"{AREA}/shard-{index:05d}.json"


def load_json(store: Store, name: str) -> dict[str, Any] | None:
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
    name = segment_name(index)
    path = store.path(name)
    if not store.local and store.size(name) is not None:
        path = os.path.join(staging, os.path.basename(name))
        with open(path, "wb") as f:
            f.write(store.read_bytes(name))
    found = (os.path.getsize(path), hash_file(path)) if os.path.exists(path) else None
    if found != tuple(expected):
        store.remove(record_name(name))
        raise FastdataIntegrityError(
            f"{store.describe(name)} is missing or damaged (size and xxh3-128 {found}, recorded "
            f"{tuple(expected)}); re-run the same command to encode its input again")
    return path


def encode(area: Area, index: int, task: Task, options: EncodeOptions) -> Encoded:
    """Ray task: tokenize input task ``index`` into its segment, or find it already done."""
    store = area.open()
    name = segment_name(index)
    with tempfile.TemporaryDirectory(prefix="fastdata-ray-") as staging:
        done = load_json(store, record_name(name))
        if done is not None and done.get("job") == area.job and done.get("task") == asdict(task):
            try:
                path = _fetch_segment(store, index, done["segment"], staging)
                with open_shard(path) as view:
                    lengths = np.diff(view.doc_offsets().astype(np.int64))
                return Encoded(index, lengths, done["input_bytes"], done["skipped"],
                                done["first_skipped"], reused=True)
            except (FastdataError, KeyError, TypeError, ValueError) as e:
                log.warning("encoding task %d again: %s", index, e)
        pause_point(f"ray_encode_{index}")
        result = encode_task(task, options, area.open_inputs().fetch(task, options.read))
        written = _publish_segment(store, name, result, staging)
    record = {"job": area.job, "task": asdict(task), "segment": (written.size, written.xxh3_128),
              "input_bytes": result.input_bytes, "skipped": dict(result.skipped),
              "first_skipped": result.first_skipped}
    store.write_bytes(record_name(name), json.dumps(record).encode())
    return Encoded(index, result.lengths, result.input_bytes, dict(result.skipped),
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


def write(area: Area, index: int, pieces: Pieces) -> tuple[int, ShardInfo, bool]:
    """Ray task: assemble shard ``index`` from its segment pieces and publish it.

    Returns:
        ``index``, the shard's ShardInfo, and whether an earlier run had already published it.
    """
    store = area.open()
    plan = [list(p) for p in pieces]
    done = load_json(store, shard_record_name(index))
    if done is not None and done.get("job") == area.job and done.get("pieces") == plan:
        info = ShardInfo(**done["info"])
        if store.size(info.name) == info.stored_bytes:
            return index, info, True
    pause_point(f"ray_shard_{index}")
    with tempfile.TemporaryDirectory(prefix="fastdata-ray-") as staging:
        docs = _gather(store, area.job, pieces, staging)
        info = publish_shard(store, area.form, index, docs, staging)
    store.write_bytes(shard_record_name(index),
                      json.dumps({"job": area.job, "pieces": plan, "info": asdict(info)}).encode())
    return index, info, False


def _gather(store: Store, job: str, pieces: Pieces, staging: str) -> TaskResult:
    """Concatenate the documents ``pieces`` name, from segments checked against their records."""
    toks, lens, masks = [], [], []
    for task, lo, hi in pieces:
        name = segment_name(task)
        done = load_json(store, record_name(name))
        if done is None or done.get("job") != job or "segment" not in done:
            raise FastdataIntegrityError(f"{store.describe(record_name(name))} is missing or belongs to "
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
