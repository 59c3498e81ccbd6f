"""``fastdata pack``: corpus files to verified shards and a manifest, resumably.

Workers tokenize tasks in parallel; this process receives their results in task order
and cuts the document stream into shards of about ``shard_size`` bytes. Shard
boundaries depend only on the document stream, so the output is byte-identical for
any number of workers. After each shard is published a small journal (``pack/journal.py``,
``.fastdata-pack.json``) records the shards so far and where the next shard starts;
a re-run with the same arguments resumes from there, and the manifest is written last.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import xxhash

from fastdata._testing import pause_point
from fastdata.atomic import sweep_stale_temps
from fastdata.format.manifest import Manifest, ShardInfo
from fastdata.format.shard_table import TABLE_NAME, ShardTable
from fastdata.format.spec import MANIFEST_NAME
from fastdata.pack.config import PackConfig, PackProgress, PackResult, resolve_dtype
from fastdata.pack.encode import EncodeOptions, TaskResult
from fastdata.pack.inputs import InputFile, Inputs
from fastdata.pack.journal import JOURNAL_NAME, Journal
from fastdata.pack.output import check_output
from fastdata.pack.records import RecordSource
from fastdata.pack.shards import ShardCutter, ShardForm, publish_shard, target_tokens
from fastdata.pack.sources import BLOCK_BYTES, Task, TaskData
from fastdata.pack.tokenizers import HFTokenizer, load_tokenizer
from fastdata.pack.workers import Workers, ordered_results
from fastdata.storage.remote import Store

log = logging.getLogger(__name__)

TOKENIZER_NAME = "tokenizer.json"


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

    def __init__(self, config: PackConfig, store: Store, dtype: str, journal: Journal) -> None:
        self.store, self.journal = store, journal
        self.form = ShardForm(dtype, config.encode.read.chat, config.compression, config.block_size)
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


def _job_fingerprint(config: PackConfig, files: Sequence[InputFile], tokenizer_fp: str, dtype: str,
                     records: RecordSource | None) -> tuple[str, dict[str, Any]]:
    """Identity of the job, and the provenance recorded in the manifest."""
    inputs: list[dict[str, Any]] = [{"path": f.path, "bytes": f.size} for f in files]
    if records is not None:  # no identity: a later run cannot be the same job
        inputs = [{"records": records.name, "fingerprint": records.identity}]
    args = {
        "tokenizer": config.encode.tokenizer.spec, "read": asdict(config.encode.read),
        "add_eos": config.encode.add_eos, "add_bos": config.encode.add_bos,
        "on_error": "skip" if config.encode.skip_bad else "raise",
        "shard_size": config.shard_size, "compression": config.compression, "dtype": dtype,
        "block_size": config.block_size,
    }
    job: dict[str, Any] = {"inputs": inputs, "args": args, "tokenizer": tokenizer_fp, "block": BLOCK_BYTES}
    if any(f.etag for f in files):  # a remote input replaced since the interrupted run
        job["etags"] = [f.etag for f in files]
    if records is not None:
        job["identity"] = records.identity or secrets.token_hex(16)
    digest = xxhash.xxh3_128_hexdigest(json.dumps(job, sort_keys=True).encode())
    return digest, {"inputs": inputs, "pack_args": args}


@dataclass(frozen=True)
class PackPlan:
    """What both engines settle before tokenizing: the tasks, the output and the job's identity."""

    tokenizer: Any
    dtype: str
    tasks: list[Task]  #: of the input files (none for ``records``)
    store: Store
    job: str  #: fingerprint of inputs and arguments; a journal of another job is refused
    provenance: dict[str, Any]
    inputs: Inputs
    records: RecordSource | None = None

    def stream(self, encode: EncodeOptions) -> Iterator[tuple[Task, TaskData]]:
        """The tasks in order, each with what comes with it (records of a Python iterable)."""
        if self.records is not None:
            return self.records.tasks(encode.read)
        return ((t, None) for t in self.tasks)

    def fetch(self, encode: EncodeOptions) -> Callable[[Task, TaskData], TaskData]:
        """Fills in the bytes of a remote input's task (on a fetch thread)."""
        return lambda task, data: data if data is not None else self.inputs.fetch(task, encode.read)


def plan_pack(config: PackConfig, records: RecordSource | None = None) -> PackPlan:
    """Load the tokenizer, cut the inputs (files, or ``records``) into tasks and prepare the
    output root.

    Raises:
        FastdataConfigError: bad arguments, or a finished dataset is there without ``overwrite``.
        FastdataIOError: the output cannot be created.
    """
    tok = load_tokenizer(config.encode.tokenizer)
    dtype = resolve_dtype(config.dtype, tok.info.vocab_size)
    inputs = Inputs(config.storage_options)
    files = [] if records is not None else inputs.expand(config.inputs)
    tasks = [] if records is not None else inputs.plan(config.encode.read)
    store = Store(config.output, config.storage_options)
    store.make_root()
    if store.local:
        sweep_stale_temps(store.path(""))
    check_output(store, config.overwrite)
    job, provenance = _job_fingerprint(config, files, tok.info.fingerprint, dtype, records)
    return PackPlan(tok, dtype, tasks, store, job, provenance, inputs, records)


def pack(config: PackConfig, progress: Callable[[PackProgress], None] | None = None,
         records: RecordSource | None = None) -> PackResult:
    """Pack ``config.inputs`` (or ``records``) into a dataset at ``config.output``.

    Returns:
        The manifest written and the final totals.

    Raises:
        FastdataConfigError: bad arguments, or the output holds another job.
        FastdataInputError: a bad record under ``on_error=raise``.
        FastdataIOError: the output cannot be written.
    """
    workers = Workers(config.workers)  # first: before the pack opens an fsspec client, fork is safe
    try:
        plan = plan_pack(config, records)
        store = plan.store
        totals = PackProgress()
        journal = Journal(store, plan.job, totals)
        if config.overwrite:
            store.remove(JOURNAL_NAME)
        else:
            journal.load()
        start_task, skip_docs = journal.position
        sink = _ShardSink(config, store, plan.dtype, journal)
        next_task = start_task
        stream = itertools.islice(plan.stream(config.encode), start_task, None)
        # a generator (workers.py annotates it as an Iterator): closing it ends its fetch threads
        results = cast(Generator[TaskResult, None, None],
                       ordered_results(stream, config.encode, workers, plan.fetch(config.encode)))
        try:
            for i, result in enumerate(results, start=start_task):
                first = skip_docs if i == start_task else 0
                if first:
                    result = _drop_docs(result, first)
                sink.add(i, first, result)
                _tally(totals, result)
                next_task = i + 1
                if progress:
                    progress(totals)
            sink.finish(next_task)
        finally:
            results.close()  # its fetch threads end before the workers do
            sink.close()
        return PackResult(write_manifest(plan, config, journal.shards), totals)
    finally:
        workers.close()


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
    from fastdata._version import __version__

    manifest = Manifest(
        dtype=plan.dtype, has_loss_mask=config.encode.read.chat, compression=config.compression,
        tokenizer=tok.info, shards=ShardTable.from_infos(list(shards), config.compression == "zstd"),
        provenance={"fastdata_version": __version__, **plan.provenance},
    )
    text, table = manifest.serialize()
    if table is not None:
        store.write_bytes(TABLE_NAME, table)
    store.write_bytes(MANIFEST_NAME, text.encode())
    store.remove(JOURNAL_NAME)
    return manifest
