"""``fastdata pack``: corpus files to verified shards and a manifest, resumably.

Workers tokenize tasks in parallel; this process receives their results in task order
and cuts the document stream into shards of about ``shard_size`` bytes. Shard
boundaries depend only on the document stream, so the output is byte-identical for
any number of workers. After each shard is published a small journal
(``.fastdata-pack.json``) records the shards so far and where the next shard starts;
a re-run with the same arguments resumes from there, and the manifest is written last.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import xxhash

from fastdata._testing import pause_point
from fastdata.atomic import sweep_stale_temps
from fastdata.errors import (
    FastdataConfigError,
    FastdataFormatError,
)
from fastdata.format.manifest import Manifest, ShardInfo, parse_manifest
from fastdata.format.shard_table import TABLE_NAME
from fastdata.format.spec import DTYPE_CODES, MANIFEST_NAME, dtype_for_vocab
from fastdata.pack.encode import EncodeOptions, TaskResult, encode_task
from fastdata.pack.shards import ShardCutter, ShardForm, publish_shard, target_tokens
from fastdata.pack.sources import BLOCK_BYTES, Task, expand_inputs, plan_tasks
from fastdata.pack.tokenizers import HFTokenizer, load_tokenizer
from fastdata.storage.remote import Store

log = logging.getLogger(__name__)

JOURNAL_NAME = ".fastdata-pack.json"
TOKENIZER_NAME = "tokenizer.json"
DEFAULT_SHARD_SIZE = 256 << 20


@dataclass(frozen=True)
class PackConfig:
    """What ``fastdata pack`` does; the CLI builds one from its arguments."""

    inputs: tuple[str, ...]
    output: str
    encode: EncodeOptions
    workers: int = 1
    shard_size: int = DEFAULT_SHARD_SIZE  #: target raw token bytes per shard
    compression: str | None = None  #: None or "zstd"
    dtype: str = "auto"  #: "auto", "uint16" or "uint32"
    overwrite: bool = False  #: replace a finished dataset at ``output``
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise FastdataConfigError(f"workers must be >= 1, got {self.workers}")
        if self.shard_size < 1:
            raise FastdataConfigError(f"shard size must be positive, got {self.shard_size}")
        if self.compression not in (None, "zstd"):
            raise FastdataConfigError(f"unknown compression {self.compression!r}; use zstd")
        if self.dtype not in ("auto", *DTYPE_CODES):
            raise FastdataConfigError(f"unknown dtype {self.dtype!r}; use auto, uint16 or uint32")


@dataclass
class PackProgress:
    """Running totals, reported after every task and returned at the end."""

    docs: int = 0
    tokens: int = 0
    input_bytes: int = 0
    shards: int = 0
    stored_bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first_skipped: list[str] = field(default_factory=list)
    resumed_shards: int = 0
    resumed_tasks: int = 0  #: input tasks an earlier Ray run had encoded (``--engine ray``)
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass(frozen=True)
class PackResult:
    manifest: Manifest
    progress: PackProgress


def resolve_dtype(requested: str, vocab_size: int) -> str:
    """The payload dtype, refusing one that cannot hold every id of the vocabulary."""
    needed = dtype_for_vocab(vocab_size)
    if requested == "auto":
        return needed
    if requested == "uint16" and needed == "uint32":
        raise FastdataConfigError(
            f"token id {vocab_size - 1} does not fit uint16: the tokenizer's vocabulary has "
            f"{vocab_size} ids; use --dtype uint32 or auto"
        )
    return requested


@dataclass
class _Segment:
    """Documents of one task not yet written to a shard."""

    task: int
    first_doc: int
    tokens: np.ndarray
    lengths: np.ndarray
    mask: np.ndarray | None


def _take(segments: deque[_Segment], ndocs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Remove the first ``ndocs`` documents from ``segments`` and concatenate them."""
    toks, lens, masks = [], [], []
    while ndocs:
        seg = segments[0]
        k = min(ndocs, len(seg.lengths))
        ntok = int(seg.lengths[:k].sum())
        toks.append(seg.tokens[:ntok])
        lens.append(seg.lengths[:k])
        if seg.mask is not None:
            masks.append(seg.mask[:ntok])
        if k == len(seg.lengths):
            segments.popleft()
        else:
            segments[0] = _Segment(seg.task, seg.first_doc + k, seg.tokens[ntok:],
                                   seg.lengths[k:], None if seg.mask is None else seg.mask[ntok:])
        ndocs -= k
    return np.concatenate(toks), np.concatenate(lens), (np.concatenate(masks) if masks else None)


class _ShardSink:
    """Cuts the ordered document stream into shards and publishes them."""

    def __init__(self, config: PackConfig, store: Store, dtype: str, journal: _Journal) -> None:
        self.store, self.journal = store, journal
        self.form = ShardForm(dtype, config.encode.read.chat, config.compression)
        self.cutter = ShardCutter(target_tokens(config.shard_size, dtype))
        self.pending: deque[_Segment] = deque()
        self.staging = tempfile.mkdtemp(prefix="fastdata-pack-")

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def add(self, task: int, first_doc: int, result: TaskResult) -> None:
        if len(result.lengths):
            self.pending.append(_Segment(task, first_doc, result.tokens, result.lengths,
                                         result.mask))
        for ndocs in self.cutter.add(result.lengths):
            self._emit(ndocs, next_task=task + 1)

    def finish(self, next_task: int) -> None:
        ndocs = self.cutter.finish()
        if ndocs:
            self._emit(ndocs, next_task)

    def _emit(self, ndocs: int, next_task: int) -> None:
        tokens, lengths, mask = _take(self.pending, ndocs)
        info = publish_shard(self.store, self.form, len(self.journal.shards),
                             TaskResult(tokens, lengths, mask, 0), self.staging)
        position = (self.pending[0].task, self.pending[0].first_doc) if self.pending else (next_task, 0)
        self.journal.record(info, position)


class _Journal:
    """Progress of an unfinished pack, kept next to the shards."""

    def __init__(self, store: Store, job: str, progress: PackProgress) -> None:
        self.store, self.job, self.progress = store, job, progress
        self.shards: list[ShardInfo] = []
        self.position = (0, 0)
        self._written = 0

    def load(self) -> None:
        """Pick up an earlier run of the same job, if its shards are all still there."""
        if self.store.size(JOURNAL_NAME) is None:
            return
        try:
            doc = json.loads(self.store.read_bytes(JOURNAL_NAME))
            shards = [ShardInfo(**s) for s in doc["shards"]]
            position = (int(doc["next_task"]), int(doc["next_doc"]))
            same = doc["job"] == self.job
        except (ValueError, KeyError, TypeError):
            log.warning("%s is unreadable; packing from the start", self.store.describe(JOURNAL_NAME))
            return
        if not same:
            raise FastdataConfigError(
                f"{self.store.display} holds an unfinished pack with other inputs or arguments; "
                "re-run that pack, or pass --overwrite to start this one from scratch"
            )
        missing = [s.name for s in shards if self.store.size(s.name) != s.stored_bytes]
        if missing:
            log.warning("shard %s of the unfinished pack is missing or damaged; packing from the "
                        "start", self.store.describe(missing[0]))
            return
        self.shards, self.position, self._written = shards, position, len(shards)
        self.progress.skipped.update(doc.get("skipped", {}))
        self.progress.resumed_shards = len(shards)
        self._count(shards)

    def _count(self, shards: Sequence[ShardInfo]) -> None:
        self.progress.shards += len(shards)
        self.progress.stored_bytes += sum(s.stored_bytes for s in shards)

    def record(self, info: ShardInfo, position: tuple[int, int]) -> None:
        """Note a published shard. The journal is rewritten after the first 64 shards and then
        after every ~1/64 more, so its cost stays O(n log n) bytes; a crash re-packs at most
        that many shards, whose bytes come out the same."""
        self.shards.append(info)
        self._count([info])
        n = len(self.shards)
        if n - self._written < max(1, n // 64):
            return
        self._written = n
        self.position = position
        doc = {"job": self.job, "shards": [asdict(s) for s in self.shards],
               "next_task": position[0], "next_doc": position[1],
               "skipped": dict(self.progress.skipped)}
        self.store.write_bytes(JOURNAL_NAME, json.dumps(doc).encode())


def _worker_init() -> None:
    # Hugging Face tokenizers parallelise each batch over all cores; with one process per
    # core that oversubscribes them, so workers encode single-threaded.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"


def _ordered_results(tasks: Sequence[Task], options: EncodeOptions,
                     workers: int) -> Iterator[TaskResult]:
    """Encode ``tasks`` on ``workers`` processes; yield results in task order."""
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            yield encode_task(task, options)
        return
    # fork starts workers at once, but is unsafe once threads exist (fsspec/adlfs keep an
    # event-loop thread for remote outputs): then pay for spawn.
    safe_to_fork = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if safe_to_fork else "spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
    window: deque[Future[TaskResult]] = deque()
    try:
        queued = iter(tasks)
        for task in queued:
            window.append(pool.submit(encode_task, task, options))
            if len(window) >= 2 * workers:
                break
        while window:
            result = window.popleft().result()
            nxt = next(queued, None)
            if nxt is not None:
                window.append(pool.submit(encode_task, nxt, options))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _job_fingerprint(config: PackConfig, files: Sequence[str], tokenizer_fp: str,
                     dtype: str) -> tuple[str, dict[str, Any]]:
    """Identity of the job, and the provenance recorded in the manifest."""
    inputs = [{"path": f, "bytes": os.path.getsize(f)} for f in files]
    args = {
        "tokenizer": config.encode.tokenizer.spec, "read": asdict(config.encode.read),
        "add_eos": config.encode.add_eos, "add_bos": config.encode.add_bos,
        "on_error": "skip" if config.encode.skip_bad else "raise",
        "shard_size": config.shard_size, "compression": config.compression, "dtype": dtype,
    }
    job = {"inputs": inputs, "args": args, "tokenizer": tokenizer_fp, "block": BLOCK_BYTES}
    digest = xxhash.xxh3_128_hexdigest(json.dumps(job, sort_keys=True).encode())
    return digest, {"inputs": inputs, "pack_args": args}


def _check_output(store: Store, overwrite: bool) -> None:
    if store.size(MANIFEST_NAME) is None:
        return
    if not overwrite:
        raise FastdataConfigError(
            f"{store.describe(MANIFEST_NAME)} already exists; pass --overwrite to replace the dataset"
        )
    try:
        old = parse_manifest(store.read_bytes(MANIFEST_NAME), store.describe(MANIFEST_NAME),
                             allow_incomplete=True, read_table=store.read_bytes)
        old_names = [s.name for s in old.shards]
    except FastdataFormatError:
        old_names = []
    store.remove(MANIFEST_NAME)  # first, so that no reader sees a manifest with missing shards
    for name in [*old_names, TABLE_NAME]:
        store.remove(name)


@dataclass(frozen=True)
class PackPlan:
    """What both engines settle before tokenizing: the tasks, the output and the job's identity."""

    tokenizer: Any
    dtype: str
    tasks: list[Task]
    store: Store
    job: str  #: fingerprint of inputs and arguments; a journal of another job is refused
    provenance: dict[str, Any]


def plan_pack(config: PackConfig) -> PackPlan:
    """Load the tokenizer, cut the inputs into tasks and prepare the output root.

    Raises:
        FastdataConfigError: bad arguments, or a finished dataset is there without ``overwrite``.
        FastdataIOError: the output cannot be created.
    """
    tok = load_tokenizer(config.encode.tokenizer)
    dtype = resolve_dtype(config.dtype, tok.info.vocab_size)
    files = expand_inputs(config.inputs)
    tasks = plan_tasks(files, config.encode.read)
    store = Store(config.output, config.storage_options)
    store.make_root()
    if store.local:
        sweep_stale_temps(store.path(""))
    _check_output(store, config.overwrite)
    job, provenance = _job_fingerprint(config, files, tok.info.fingerprint, dtype)
    return PackPlan(tok, dtype, tasks, store, job, provenance)


def pack(config: PackConfig, progress: Callable[[PackProgress], None] | None = None) -> PackResult:
    """Pack ``config.inputs`` into a dataset at ``config.output``.

    Returns:
        The manifest written and the final totals.

    Raises:
        FastdataConfigError: bad arguments, or the output holds another job.
        FastdataInputError: a bad record under ``on_error=raise``.
        FastdataIOError: the output cannot be written.
    """
    plan = plan_pack(config)
    tasks, store = plan.tasks, plan.store
    totals = PackProgress()
    journal = _Journal(store, plan.job, totals)
    if config.overwrite:
        store.remove(JOURNAL_NAME)
    else:
        journal.load()
    start_task, skip_docs = journal.position
    sink = _ShardSink(config, store, plan.dtype, journal)
    try:
        results = _ordered_results(tasks[start_task:], config.encode, config.workers)
        for i, result in enumerate(results, start=start_task):
            first = skip_docs if i == start_task else 0
            if first:
                result = _drop_docs(result, first)
            sink.add(i, first, result)
            _tally(totals, result)
            if progress:
                progress(totals)
        sink.finish(len(tasks))
    finally:
        sink.close()
    return PackResult(write_manifest(plan, config, journal.shards), totals)


def _drop_docs(result: TaskResult, n: int) -> TaskResult:
    ntok = int(result.lengths[:n].sum())
    return TaskResult(result.tokens[ntok:], result.lengths[n:],
                      None if result.mask is None else result.mask[ntok:], result.input_bytes,
                      result.skipped, result.first_skipped)


def _tally(totals: PackProgress, result: TaskResult) -> None:
    totals.docs += len(result.lengths)
    totals.tokens += len(result.tokens)
    totals.input_bytes += result.input_bytes
    totals.skipped.update(result.skipped)
    room = 5 - len(totals.first_skipped)
    totals.first_skipped += result.first_skipped[: max(room, 0)]


def write_manifest(plan: PackPlan, config: PackConfig, shards: Sequence[ShardInfo]) -> Manifest:
    """Write the tokenizer copy, the manifest (last) and drop the journal."""
    store, tok = plan.store, plan.tokenizer
    pause_point("after_shards_before_manifest")
    if isinstance(tok, HFTokenizer):
        store.write_bytes(TOKENIZER_NAME, tok.source_bytes)
    from fastdata import __version__

    manifest = Manifest(
        dtype=plan.dtype, has_loss_mask=config.encode.read.chat, compression=config.compression,
        tokenizer=tok.info, shards=tuple(shards),
        provenance={"fastdata_version": __version__, **plan.provenance},
    )
    text, table = manifest.serialize()
    if table is not None:
        store.write_bytes(TABLE_NAME, table)
    store.write_bytes(MANIFEST_NAME, text.encode())
    store.remove(JOURNAL_NAME)
    return manifest
