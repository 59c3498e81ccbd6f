"""Where a pack's input files are: local paths, or fsspec URLs read in ranges.

``fastdata pack`` takes files, directories and globs, local or remote (``az://``,
``abfs://``, ``s3://``, ``gs://``, ``https://``, ...). Remote inputs go through the same
:class:`~fastdata.storage.remote.Store` as the read path (its timeouts, its redaction, and
``retrying`` from ``storage/download.py`` around every request), and are never copied to
local disk: planning reads only the bytes that decide task boundaries (a few KiB after
each 1 MiB block boundary, a Parquet footer), and each task's bytes are fetched by this
process (:meth:`Inputs.fetch`, several tasks at a time) and handed to the worker that
encodes it. Workers thus never hold credentials, and a remote input gives the tasks, the
documents and the shards that a local copy of it gives.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, TypeVar, cast

from fastdata.errors import FastdataConfigError, FastdataInputError
from fastdata.pack.fetched import Fetched
from fastdata.pack.records import plan_arrow, saved_dataset_files
from fastdata.pack.sources import ReadOptions, Task, plan_tasks
from fastdata.storage.download import retrying
from fastdata.storage.remote import Store, is_local, redact

#: Bytes of one ranged GET.
RANGE_BYTES = 8 << 20
#: Bytes read ahead of each block boundary (and of a Parquet footer) when planning.
PROBE_BYTES = 64 << 10
_GLOB = ("*", "[")
#: Remote files planned at once.
PLAN_THREADS = 8
#: The remote inputs as a Ray task gets them: (shown path, (root URL, name, size)) and options.
InputSpec = tuple[tuple[tuple[str, tuple[str, str, int]], ...], dict[str, Any]]


@dataclass(frozen=True)
class InputFile:
    path: str  #: local path, or the URL as shown (query string redacted)
    size: int
    etag: str | None = None


class _InputStore(Store):
    """A Store of input folders, which can also list what is under it."""

    def listing(self, pattern: str) -> dict[str, dict[str, Any]]:
        """Objects under the root matching ``pattern`` ("" for all, recursively), by name."""
        if self.conditional_reads:  # HTTP(S) cannot list: one object, through the Store's own requests
            size = None if any(c in pattern for c in _GLOB) or not pattern else self.size(pattern)
            return {} if size is None else {pattern: {"size": size, "etag": self.etag(pattern)}}
        fs, root = self._fs, self._root
        try:
            found = fs.glob(f"{root}/{pattern}", detail=True) if pattern else fs.find(root, detail=True)
        except FileNotFoundError:  # no such container or bucket: nothing matches
            return {}
        out = {}
        for path, info in sorted(found.items()):
            name = path[len(root):].lstrip("/")
            if info.get("type") != "directory" and not any(p.startswith(".") for p in name.split("/")):
                out[name] = info
        return out


class _RangeFile(io.RawIOBase):
    """A remote object as a seekable file: every read one retried ranged GET."""

    def __init__(self, store: Store, name: str, size: int) -> None:
        super().__init__()
        self.store, self.name, self.size, self.pos = store, name, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = max(0, {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset)
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        end = min(self.size, self.pos + len(buffer))
        if end <= self.pos:
            return 0
        data = read_range(self.store, self.name, self.pos, end)
        memoryview(buffer)[:len(data)] = data
        self.pos += len(data)
        return len(data)


T = TypeVar("T")


def _retried(what: str, call: Callable[[], T]) -> T:
    """``call()`` under the read path's retry policy (``storage/download.py``)."""
    return cast(T, retrying(what, cast(Callable[[], bytes], call)))


def read_range(store: Store, name: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of ``name``, in ranged GETs of RANGE_BYTES, each retried.

    Raises:
        FastdataDownloadError: a range could not be read within the retry budget.
        FastdataInputError: the object is shorter than when the pack was planned.
    """
    parts = []
    for s in range(start, end, RANGE_BYTES):
        e = min(end, s + RANGE_BYTES)
        data = _retried(store.describe(name), functools.partial(store.read_range, name, s, e))
        if len(data) != e - s:
            raise FastdataInputError(f"{store.describe(name)}: bytes {s}-{e - 1} came back as {len(data)} "
                                     "bytes; the input changed during the pack")
        parts.append(data)
    return b"".join(parts)


def is_remote(path: str) -> bool:
    return not is_local(path)


class Inputs:
    """The input files of one pack and the stores of the remote ones.

    Storage options apply to every remote input (and to the output). Only the process
    that expanded the inputs fetches; the Ray engine sends :meth:`spec` to its tasks.
    """

    def __init__(self, storage_options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(storage_options or {})
        self.files: list[InputFile] = []
        self._urls: dict[str, tuple[str, str, int]] = {}  # shown path -> (root URL + query, name, size)
        self._stores: dict[str, _InputStore] = {}
        self._parquet: dict[str, Any] = {}

    def spec(self) -> InputSpec:
        """What a Ray task needs to fetch the remote inputs (credentials included: Ray task
        arguments, like the output's storage options)."""
        return tuple(self._urls.items()), self.options

    @classmethod
    def from_spec(cls, spec: InputSpec) -> Inputs:
        inputs = cls(spec[1])
        inputs._urls = dict(spec[0])
        return inputs

    def _store(self, root: str) -> _InputStore:
        if root not in self._stores:
            self._stores[root] = _InputStore(root, self.options)
        return self._stores[root]

    def expand(self, items: Sequence[str]) -> list[InputFile]:
        """Files named by ``items``: local paths, directories (walked in sorted order) and
        ``save_to_disk`` directories; URLs, URL folders and URL globs (``*``, ``[...]``).

        Raises:
            FastdataConfigError: a local input does not exist, or nothing was found.
            FastdataInputError: a remote input does not exist (named without credentials).
        """
        for item in items:
            if is_remote(item):
                self._expand_remote(item)
                continue
            path = item[len("file://"):] if item.startswith("file://") else item
            saved = saved_dataset_files(path) if os.path.isdir(path) else None
            if saved is not None:
                self.files.extend(InputFile(f, os.path.getsize(f)) for f in saved)
                continue
            from fastdata.pack.sources import expand_inputs

            self.files.extend(InputFile(f, os.path.getsize(f)) for f in expand_inputs([path]))
        if not self.files:
            raise FastdataConfigError(f"no input files found in {[redact(i) for i in items]}")
        return self.files

    def _expand_remote(self, url: str) -> None:
        base, sep, query = url.partition("?")
        parts = base.split("/")
        first = 3 + next((i for i, p in enumerate(parts[3:]) if any(c in p for c in _GLOB)), len(parts))
        if first < len(parts):  # a glob: list under the folder before its first wildcard
            root, pattern = "/".join(parts[:first]), "/".join(parts[first:])
        else:
            root, pattern = base.rstrip("/").rsplit("/", 1)[0], base.rstrip("/").rsplit("/", 1)[1]
        store = self._store(root + sep + query)
        found = _retried(redact(url), lambda: store.listing(pattern))
        if not found and not any(c in pattern for c in _GLOB):  # perhaps a folder
            store = self._store(base.rstrip("/") + sep + query)
            found = _retried(redact(url), lambda: store.listing(""))
            root = base.rstrip("/")
        if not found:
            raise FastdataInputError(f"{redact(url)}: input does not exist (no object matches); check the "
                                     "URL and that the credentials can list the container")
        for name, info in found.items():
            shown = f"{store.display}/{name}"
            self._urls[shown] = (root + sep + query, name, int(info["size"]))
            etag = info.get("etag") or info.get("ETag")
            self.files.append(InputFile(shown, int(info["size"]), None if etag is None else str(etag)))

    def open(self, path: str) -> IO[bytes]:
        """A seekable file over ``path`` (remote: ranged reads through a read-ahead buffer)."""
        if not is_remote(path):
            return open(path, "rb")
        root, name, size = self._urls[path]
        return io.BufferedReader(_RangeFile(self._store(root), name, size), PROBE_BYTES)

    def plan(self, options: ReadOptions) -> list[Task]:
        """The ordered tasks covering the files, as :func:`~fastdata.pack.sources.plan_tasks`
        cuts them (the same tasks for a remote input as for a local copy)."""
        def one(f: InputFile) -> list[Task]:
            if f.path.endswith(".arrow") and not is_remote(f.path):
                return plan_arrow(f.path)
            return plan_tasks([f.path], options, [f.size], self.open)

        if not any(is_remote(f.path) for f in self.files):
            return [t for f in self.files for t in one(f)]
        # a remote file's block boundaries are found one ranged GET after another: plan
        # several files at once
        with ThreadPoolExecutor(PLAN_THREADS, thread_name_prefix="fastdata-pack-plan") as pool:
            return [t for tasks in pool.map(one, self.files) for t in tasks]

    def fetch(self, task: Task, options: ReadOptions) -> Fetched | None:
        """The bytes a worker needs for ``task``: None for a local file."""
        if not is_remote(task.path):
            return None
        root, name, size = self._urls[task.path]
        store = self._store(root)
        if task.kind in ("jsonl", "lines") and task.codec is None:
            return Fetched(task.path, size, ((task.start, read_range(store, name, task.start, task.end)),))
        if task.kind == "parquet":
            return Fetched(task.path, size, self._parquet_pieces(task, store, name, size, options))
        return Fetched(task.path, size, ((0, read_range(store, name, 0, size)),))

    def _parquet_pieces(self, task: Task, store: Store, name: str, size: int,
                        options: ReadOptions) -> tuple[tuple[int, bytes], ...]:
        """The footer and this row group's chunks of the column being packed."""
        import pyarrow.parquet as pq

        if task.path not in self._parquet:
            with self.open(task.path) as f:
                self._parquet[task.path] = (pq.ParquetFile(f).metadata, _footer_length(store, name, size))
        meta, footer = self._parquet[task.path]
        group = meta.row_group(task.start)
        key = options.messages_field if options.chat else options.text_field
        spans = []
        for c in range(group.num_columns):
            col = group.column(c)
            if col.path_in_schema == key or col.path_in_schema.startswith(key + "."):
                start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
                start = min(start, col.data_page_offset)
                spans.append((start, start + col.total_compressed_size))
        tail_start = max(0, size - max(PROBE_BYTES, 8 + footer))
        pieces = []
        if spans:
            lo, hi = min(s for s, _ in spans), min(max(e for _, e in spans), tail_start)
            if lo < hi:
                pieces.append((lo, read_range(store, name, lo, hi)))
        pieces.append((tail_start, read_range(store, name, tail_start, size)))
        return tuple(pieces)


def _footer_length(store: Store, name: str, size: int) -> int:
    if size < 8:
        raise FastdataInputError(f"{store.describe(name)}: not a Parquet file ({size} bytes)")
    tail = read_range(store, name, size - 8, size)
    return int.from_bytes(tail[:4], "little")
