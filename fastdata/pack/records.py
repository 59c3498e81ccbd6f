"""Records that do not come from corpus files: Python iterables, Hugging Face datasets and
their ``save_to_disk`` directories.

A Python iterable (a list of dicts, a generator, a ``datasets.Dataset`` or
``datasets.IterableDataset``) is read by the pack's main process, in order, and cut into
tasks of about :data:`~fastdata.pack.sources.BLOCK_BYTES` of text; each task travels to a
worker with its records (only the field being packed). A ``save_to_disk`` directory is
read without the ``datasets`` package: its Arrow files are cut into tasks of record
batches, read by the workers themselves. Either way the documents, and so the shards,
are the ones a JSONL file of the same records gives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastdata.errors import FastdataConfigError, FastdataInputError
from fastdata.pack.sources import BLOCK_BYTES, ReadOptions, Record, Task, TaskData, _field_value

#: Most records in one task of a Python iterable.
TASK_RECORDS = 8192
_HF_BATCH = 1024


@dataclass(frozen=True)
class RecordSource:
    """A Python iterable of records to pack, named for messages."""

    records: Iterable[Any]
    name: str  #: how locations name it: ``NAME:record N``

    @property
    def identity(self) -> str | None:
        """What identifies the records across runs: a ``datasets`` fingerprint, else None
        (then an interrupted pack cannot be resumed, only started again)."""
        fp = getattr(self.records, "_fingerprint", None)
        return fp if isinstance(fp, str) and fp else None

    def tasks(self, options: ReadOptions) -> Iterator[tuple[Task, TaskData]]:
        """The records in tasks, in order, each with its records' values checked."""
        key = options.messages_field if options.chat else options.text_field
        chunk: list[Record] = []
        first = size = 0
        for i, obj in enumerate(_rows(self.records, key, self.name)):
            value, problem = _field_value(obj, options) if isinstance(obj, Mapping) else (
                None, "record is not a dict")
            chunk.append(Record(f"{self.name}:record {i}" if problem else "", value, problem))
            size += len(value) if isinstance(value, (str, list)) else 0
            if size >= BLOCK_BYTES or len(chunk) >= TASK_RECORDS:
                yield Task("records", self.name, first, i + 1, None, size), tuple(chunk)
                chunk, first, size = [], i + 1, 0
        if chunk:
            yield Task("records", self.name, first, first + len(chunk), None, size), tuple(chunk)


def source_name(records: Any) -> str:
    """``Dataset[train]``, ``list``, ...: how messages name a Python iterable."""
    split = getattr(records, "split", None)
    name = type(records).__name__
    return f"{name}[{split}]" if split is not None and not callable(split) else name


def _rows(records: Iterable[Any], key: str, name: str) -> Iterator[Any]:
    """The records, as dicts holding at least ``key``. A ``datasets`` dataset is read one
    column in batches (Arrow, not row by row)."""
    columns = getattr(records, "column_names", None)
    if hasattr(records, "select_columns") and hasattr(records, "iter") and columns is not None:
        if key not in columns:
            raise FastdataInputError(f"{name}: no column {key!r} (columns: {', '.join(columns)}); "
                                     "pick one with text_field= (or messages_field= with chat=True)")
        for batch in records.select_columns([key]).iter(batch_size=_HF_BATCH):
            yield from ({key: v} for v in batch[key])
        return
    yield from records


# --- save_to_disk directories --------------------------------------------------------------

def saved_dataset_files(directory: str) -> list[str] | None:
    """The Arrow files of a ``Dataset.save_to_disk`` directory in order, or None when
    ``directory`` is not one.

    Raises:
        FastdataConfigError: a ``DatasetDict`` directory (name one split) or a broken state.json.
    """
    if os.path.isfile(os.path.join(directory, "dataset_dict.json")):
        splits = sorted(n for n in os.listdir(directory) if os.path.isdir(os.path.join(directory, n)))
        raise FastdataConfigError(
            f"{directory} is a saved DatasetDict; pack one split directory, e.g. "
            f"{os.path.join(directory, splits[0] if splits else 'train')}")
    state = os.path.join(directory, "state.json")
    if not (os.path.isfile(state) and os.path.isfile(os.path.join(directory, "dataset_info.json"))):
        return None
    try:
        with open(state, encoding="utf-8") as f:
            names = [d["filename"] for d in json.load(f)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FastdataConfigError(f"{state}: not a datasets save_to_disk state ({e})") from None
    return [os.path.join(directory, n) for n in names]


def _batches(path: str) -> Iterator[Any]:
    """The record batches of an Arrow IPC stream (``datasets``' format) or file."""
    import pyarrow as pa

    source = pa.memory_map(path)
    try:
        reader: Any = pa.ipc.open_stream(source)
        yield from reader
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            reader = pa.ipc.open_file(source)
        except pa.ArrowInvalid as e:
            raise FastdataInputError(f"{path}: not a readable Arrow file: {e}") from None
        yield from (reader.get_batch(i) for i in range(reader.num_record_batches))


def plan_arrow(path: str) -> list[Task]:
    """Tasks of about BLOCK_BYTES of record batches covering the Arrow file ``path``."""
    tasks, first, size = [], 0, 0
    count = 0
    for count, batch in enumerate(_batches(path), start=1):
        size += batch.nbytes
        if size >= BLOCK_BYTES:
            tasks.append(Task("arrow", path, first, count, None, size))
            first, size = count, 0
    if count > first or not tasks:
        tasks.append(Task("arrow", path, first, count, None, size))
    return tasks


def _read_arrow(task: Task, options: ReadOptions) -> Iterator[Record]:
    key = options.messages_field if options.chat else options.text_field
    row = 0
    for i, batch in enumerate(_batches(task.path)):
        if i >= task.end:
            return
        if i < task.start:
            row += batch.num_rows
            continue
        if key not in batch.schema.names:
            raise FastdataInputError(f"{task.path}: no column {key!r} (columns: "
                                     f"{', '.join(batch.schema.names)}); pick one with --text-field")
        for value in batch.column(key).to_pylist():
            value, problem = _field_value({key: value}, options)
            yield Record(f"{task.path}:row {row}", value, problem)
            row += 1


def read_records(task: Task, options: ReadOptions, data: TaskData) -> Iterator[Record]:
    """The records of a ``records`` task (they came with it) or an ``arrow`` task."""
    if task.kind == "arrow":
        return _read_arrow(task, options)
    if not isinstance(data, tuple):
        raise FastdataConfigError(f"{task.path}: a records task arrived without its records")
    return iter(data)
