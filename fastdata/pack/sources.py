"""Corpus readers: turn input files into ordered tasks, and tasks into records.

Every input kind is cut into :class:`Task` s (byte ranges of a JSONL or line-per-document
text file, Parquet row groups, whole compressed files, whole tar files). The order of
tasks and of records inside a task defines the order of documents in the packed dataset,
whatever the number of workers. Readers never raise for one bad record: they yield a
:class:`Record` carrying a ``problem`` and the pipeline applies the ``--on-error`` policy.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Union, cast

from fastdata.errors import FastdataConfigError, FastdataInputError
from fastdata.pack.fetched import Fetched

if TYPE_CHECKING:
    from zstandard import ZstdDecompressionReader

#: Byte size of the blocks that splittable line-oriented files are cut into.
BLOCK_BYTES = 1 << 20

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_SUFFIXES = (".txt", ".text", ".md")
COMPRESSED = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
#: Opens an input for planning: local files, or remote objects (``pack/inputs.py``).
Opener = Callable[[str], IO[bytes]]


@dataclass(frozen=True)
class ReadOptions:
    """How records are read out of input files."""

    text_field: str = "text"
    text_mode: str = "file"  # "file": one document per text file; "line": one per line
    chat: bool = False  # records hold a list of {"role", "content"} messages
    messages_field: str = "messages"
    pretokenized: bool = False  # the text field holds a list of token ids
    wds_member: str | None = None  # WebDataset member extension; None picks txt/text/json


@dataclass(frozen=True)
class Task:
    """A contiguous piece of one input file."""

    kind: str  # jsonl | text | lines | parquet | tar
    path: str
    start: int = 0  # byte offset (jsonl, lines) or row group (parquet)
    end: int = -1  # byte offset, exclusive; -1 for the whole file
    codec: str | None = None  # gzip | zstd for compressed line files
    size: int = 0  # input bytes this task covers, for throughput


@dataclass(frozen=True)
class Record:
    """One source document, or the reason it cannot be read."""

    location: str
    value: Any = None  # str, list[int] or list[dict] depending on the options
    problem: str | None = None


def _kind_of(path: str, options: ReadOptions) -> tuple[str, str | None]:
    base, ext = os.path.splitext(path.lower())
    codec = COMPRESSED.get(ext)
    if codec:
        base, ext = os.path.splitext(base)
    if ext in JSONL_SUFFIXES:
        return "jsonl", codec
    if ext in TEXT_SUFFIXES:
        return ("lines" if options.text_mode == "line" else "text"), codec
    if ext == ".parquet" and codec is None:
        return "parquet", None
    if ext == ".tar" and codec is None:
        return "tar", None
    raise FastdataConfigError(
        f"{path}: unknown input type; expected .jsonl/.json/.ndjson (optionally .gz/.zst), "
        ".parquet, .txt/.md or a WebDataset .tar"
    )


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files named by ``inputs``, directories expanded recursively in sorted order."""
    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, names in os.walk(item):
                dirs.sort()
                files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FastdataConfigError(f"{item}: input does not exist")
    if not files:
        raise FastdataConfigError(f"no input files found in {list(inputs)}")
    return files


def _line_blocks(f: IO[bytes], size: int) -> Iterator[tuple[int, int]]:
    """Cut ``f`` into byte ranges of about BLOCK_BYTES that end after a newline."""
    start = 0
    with f:
        while start < size:
            end = start + BLOCK_BYTES
            if end >= size:
                yield start, size
                return
            f.seek(end)
            f.readline()
            end = f.tell()
            yield start, end
            start = end


def _open_local(path: str) -> IO[bytes]:
    return open(path, "rb")


def plan_tasks(files: Sequence[str], options: ReadOptions, sizes: Sequence[int] | None = None,
               opener: Opener = _open_local) -> list[Task]:
    """The ordered tasks covering ``files`` (of ``sizes`` bytes, opened with ``opener``;
    local files by default)."""
    tasks: list[Task] = []
    for k, path in enumerate(files):
        kind, codec = _kind_of(path, options)
        size = os.path.getsize(path) if sizes is None else sizes[k]
        if kind in ("jsonl", "lines") and codec is None:
            tasks.extend(Task(kind, path, s, e, None, e - s)
                         for s, e in _line_blocks(opener(path), size))
        elif kind == "parquet":
            import pyarrow.parquet as pq

            try:
                with opener(path) as f:
                    meta = pq.ParquetFile(f).metadata
            except Exception as e:  # pyarrow raises several unrelated types for a bad file
                raise FastdataInputError(f"{path}: not a readable Parquet file: {e}") from None
            groups = max(meta.num_row_groups, 1)
            tasks.extend(Task(kind, path, g, g + 1, None, size // groups) for g in range(groups))
        else:
            tasks.append(Task(kind, path, 0, -1, codec, size))
    return tasks


#: What a worker gets with a task besides its description: the fetched bytes of a remote
#: input, or the records of a Python iterable (``pack/records.py``); None for local files.
TaskData = Union[Fetched, "tuple[Record, ...]", None]


def _open(task: Task, data: TaskData) -> IO[bytes]:
    """The task's input file: local, or the byte ranges fetched for it."""
    return cast(IO[bytes], data.open()) if isinstance(data, Fetched) else open(task.path, "rb")


def _decompressed(task: Task, data: TaskData) -> gzip.GzipFile | ZstdDecompressionReader:
    """The decompressed stream of a gzip or zstd task."""
    if task.codec == "gzip":
        return gzip.open(task.path if data is None else _open(task, data), "rb")
    if task.codec == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(_open(task, data), closefd=True)
    raise FastdataConfigError(f"{task.path}: unknown codec {task.codec!r}; expected gzip or zstd")


def _open_text_stream(task: Task, data: TaskData) -> IO[bytes] | gzip.GzipFile | ZstdDecompressionReader:
    return _open(task, data) if task.codec is None else _decompressed(task, data)


def _first_line_number(task: Task) -> int:
    """1-based number of the first line of ``task`` (counted only when it is needed)."""
    count = 0
    with open(task.path, "rb") as f:
        remaining = task.start
        while remaining > 0:
            chunk = f.read(min(remaining, 8 << 20))
            if not chunk:
                break
            count += chunk.count(b"\n")
            remaining -= len(chunk)
    return count + 1


def _lines(task: Task, data: TaskData) -> Iterator[bytes]:
    """The lines of a line-oriented task, without their line ends."""
    if task.codec is None:
        with _open(task, data) as stream:
            stream.seek(task.start)
            remaining = task.end - task.start
            while remaining > 0:
                line = stream.readline(remaining)
                remaining -= len(line)
                yield line.rstrip(b"\r\n")
    else:
        with _decompressed(task, data) as raw:
            for line in io.BufferedReader(raw):
                yield line.rstrip(b"\r\n")


class _LineLocator:
    """Names ``file:line`` for the n-th line of a task, counting earlier lines lazily."""

    def __init__(self, task: Task, data: TaskData) -> None:
        self.task, self.data = task, data
        self._first: int | None = None if task.start else 1

    def __call__(self, n: int) -> str:
        if self._first is None and isinstance(self.data, Fetched):
            # a block of a remote file: the lines before it were never read, so name the byte
            return f"{self.task.path}:byte {self.data.line_offset(self.task.start, n)}"
        if self._first is None:
            self._first = _first_line_number(self.task)
        return f"{self.task.path}:{self._first + n}"


def _decode(line: bytes) -> tuple[str | None, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start} of the line"


def _field_value(obj: Any, options: ReadOptions) -> tuple[Any, str | None]:
    """The document in a decoded JSON/Parquet record, or the problem with it."""
    key = options.messages_field if options.chat else options.text_field
    if not isinstance(obj, dict):
        return None, "record is not a JSON object"
    if key not in obj or obj[key] is None:
        return None, f"missing field {key!r}"
    value = obj[key]
    if options.chat:
        ok = isinstance(value, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in value
        )
        return (value, None) if ok else (None, f"field {key!r} is not a list of role/content messages")
    if options.pretokenized:
        ok = isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                             for t in value)
        return (value, None) if ok else (None, f"field {key!r} is not a list of integer token ids")
    if not isinstance(value, str):
        return None, f"field {key!r} is not a string"
    return value, None


def _arrow_texts(task: Task, options: ReadOptions, data: TaskData = None) -> list[str] | None:
    """The text field of every line of a plain JSONL block, parsed by Arrow's C++ reader.

    Only for the clean case: any problem (invalid JSON or UTF-8, a missing or non-string
    field) returns None, and the line-by-line reader reports it exactly.
    """
    import pyarrow as pa
    import pyarrow.json as pj

    with _open(task, data) as f:
        f.seek(task.start)
        block = f.read(task.end - task.start)
    schema = pa.schema([(options.text_field, pa.string())])
    try:
        table = pj.read_json(
            pa.BufferReader(block),
            read_options=pj.ReadOptions(use_threads=False, block_size=max(len(block), 1 << 20)),
            parse_options=pj.ParseOptions(explicit_schema=schema,
                                          unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    column = table.column(0)
    if column.null_count or table.num_rows != block.count(b"\n") + (not block.endswith(b"\n")) \
            - _blank_lines(block):
        return None
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        return None


def _blank_lines(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if not line.strip()) - (data.endswith(b"\n"))


def _read_jsonl(task: Task, options: ReadOptions, data: TaskData) -> Iterator[Record]:
    if task.codec is None and not (options.chat or options.pretokenized):
        texts = _arrow_texts(task, options, data)
        if texts is not None:
            yield from (Record(task.path, t) for t in texts)
            return
    where = _LineLocator(task, data)
    for n, line in enumerate(_lines(task, data)):
        if not line.strip():
            continue
        text, problem = _decode(line)
        if text is not None:  # _decode gives the text or the problem, never both
            try:
                value, problem = _field_value(json.loads(text), options)
            except json.JSONDecodeError as e:
                value, problem = None, f"invalid JSON at column {e.colno}: {e.msg}"
        yield Record(where(n), value if problem is None else None, problem)


def _read_lines(task: Task, options: ReadOptions, data: TaskData) -> Iterator[Record]:
    where = _LineLocator(task, data)
    for n, line in enumerate(_lines(task, data)):
        if not line.strip():
            continue  # blank lines separate nothing and are not documents
        text, problem = _decode(line)
        yield Record(where(n), text, problem)


def _read_text(task: Task, options: ReadOptions, data: TaskData) -> Iterator[Record]:
    with _open_text_stream(task, data) as f:
        body = f.read()
    text, problem = _decode(body)
    yield Record(task.path, text, problem.replace("line", "file") if problem else None)


def _read_parquet(task: Task, options: ReadOptions, data: TaskData) -> Iterator[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(_open(task, data) if data is not None else task.path)
    key = options.messages_field if options.chat else options.text_field
    if key not in pf.schema_arrow.names:
        raise FastdataInputError(
            f"{task.path}: no column {key!r} (columns: {', '.join(pf.schema_arrow.names)}); "
            "pick one with --text-field"
        )
    first_row = sum(pf.metadata.row_group(g).num_rows for g in range(task.start))
    column = pf.read_row_group(task.start, columns=[key]).column(0).to_pylist()
    for i, value in enumerate(column):
        value, problem = _field_value({key: value}, options)
        yield Record(f"{task.path}:row {first_row + i}", value, problem)


def _read_tar(task: Task, options: ReadOptions, data: TaskData) -> Iterator[Record]:
    from webdataset.tariterators import group_by_keys, tar_file_expander

    members = (options.wds_member,) if options.wds_member else ("txt", "text", "json")
    with _open(task, data) as f:
        for sample in group_by_keys(tar_file_expander([{"url": task.path, "stream": f}])):
            where = f"{task.path}:{sample['__key__']}"
            ext = next((m for m in members if m in sample), None)
            if ext is None:
                yield Record(where, None, f"no member with extension {' or '.join(members)}")
                continue
            text, problem = _decode(sample[ext])
            if text is not None and ext == "json":
                try:
                    text, problem = _field_value(json.loads(text), options)
                except json.JSONDecodeError as e:
                    text, problem = None, f"invalid JSON at column {e.colno}: {e.msg}"
            yield Record(where, text, problem)


_READERS = {
    "jsonl": _read_jsonl,
    "lines": _read_lines,
    "text": _read_text,
    "parquet": _read_parquet,
    "tar": _read_tar,
}


def read_task(task: Task, options: ReadOptions, data: TaskData = None) -> Iterator[Record]:
    """The records of ``task`` in order (``data``: what came with it, see :data:`TaskData`)."""
    if task.kind in ("records", "arrow"):
        from fastdata.pack.records import read_records

        return read_records(task, options, data)
    return _READERS[task.kind](task, options, data)
