"""Shard boundaries and shard publishing, shared by the local and the Ray pack engines.

:class:`ShardCutter` decides where shards end from document lengths alone (pure), and
:func:`publish_shard` writes one shard and puts it under its final name. Both engines use
them, which is what makes their outputs byte-identical. :class:`ShardPlanner` turns the
cuts into pieces of input tasks, for the Ray engine, whose shards are assembled elsewhere.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fastdata._testing import pause_point
from fastdata.errors import FastdataInputError, FastdataIOError
from fastdata.format.compression import compress_shard
from fastdata.format.manifest import ShardInfo
from fastdata.format.shard_table import pattern_name
from fastdata.format.spec import DTYPE_CODES, DTYPES
from fastdata.format.writer import write_shard
from fastdata.pack.encode import TaskResult
from fastdata.storage.remote import Store

#: A shard's content: (input task, first document, end document) pieces, in order.
Pieces = tuple[tuple[int, int, int], ...]


class ShardCutter:
    """Where shards end in the ordered document stream (pure; shared by both engines).

    A shard closes at the first document that brings its payload to at least ``target``
    tokens; the last shard takes whatever is left. Documents are fed in task order, one
    task's lengths at a time, so the cuts depend only on the global document stream.
    """

    def __init__(self, target_tokens: int) -> None:
        self.target = target_tokens
        self._pending: list[np.ndarray] = []
        self._tokens = 0

    def add(self, lengths: np.ndarray) -> list[int]:
        """Take the next task's document lengths; return the document counts of the shards
        this closes, in order."""
        if len(lengths):
            self._pending.append(lengths)
            self._tokens += int(lengths.sum())
        cuts = []
        while self._tokens >= self.target:
            pending = np.concatenate(self._pending)
            ends = np.cumsum(pending)
            ndocs = int(np.searchsorted(ends, self.target)) + 1
            cuts.append(ndocs)
            self._tokens -= int(ends[ndocs - 1])
            self._pending = [pending[ndocs:]] if ndocs < len(pending) else []
        return cuts

    def finish(self) -> int:
        """The document count of the last shard (0 when nothing is left)."""
        return sum(len(p) for p in self._pending)


def target_tokens(shard_size: int, dtype: str) -> int:
    """Tokens of ``dtype`` that fill ``shard_size`` payload bytes, rounded up."""
    return -(-shard_size // DTYPES[DTYPE_CODES[dtype]].itemsize)


@dataclass(frozen=True)
class ShardForm:
    """How shards of one pack are encoded."""

    dtype: str  #: "uint16" or "uint32"
    chat: bool  #: shards carry a loss mask
    compression: str | None  #: None or "zstd"
    block_size: int | None = None  #: format v1.1 block size (zstd: raw bytes per frame); None: v1


def publish_shard(store: Store, form: ShardForm, index: int, docs: TaskResult,
                  staging: str) -> ShardInfo:
    """Write shard number ``index`` holding ``docs`` and publish it under its final name.

    Local uncompressed shards are written in place (temp file + rename); anything else is
    built in ``staging`` and then published (compressed, uploaded).

    Raises:
        FastdataInputError: a token id does not fit ``form.dtype``.
        FastdataIOError: the shard cannot be written or published.
    """
    tokens, lengths, mask = docs.tokens, docs.lengths, docs.mask
    if form.dtype == "uint16" and len(tokens) and int(tokens.max()) > 0xFFFF:
        raise FastdataInputError(f"token id {int(tokens.max())} does not fit uint16")
    if form.chat and mask is None:
        mask = np.zeros(len(tokens), np.uint8)
    raw_name = pattern_name(index, compressed=False)
    direct = store.local and form.compression is None
    raw_path = store.path(raw_name) if direct else os.path.join(staging, raw_name)
    try:
        raw = write_shard(raw_path, tokens, lengths, mask, form.dtype, form.block_size)
    except OSError as e:
        raise FastdataIOError(f"writing {raw_path} failed: {e.strerror or e}") from None
    name, stored = raw_name, raw
    if form.compression == "zstd":
        name = pattern_name(index, compressed=True)
        final = store.path(name) if store.local else os.path.join(staging, name)
        if form.block_size is None:
            stored = compress_shard(raw_path, final, frame_hashes=False)
        else:
            stored = compress_shard(raw_path, final, block_size=form.block_size)
        os.unlink(raw_path)
        raw_path = final
    if not (store.local and raw_path == store.path(name)):
        pause_point("mid_upload")
        store.publish(raw_path, name)
        if os.path.exists(raw_path):
            os.unlink(raw_path)
    return ShardInfo(name, stored.size, raw.size, len(lengths), len(tokens),
                     stored.xxh3_128, raw.xxh3_128, stored.meta_bytes, stored.meta_xxh3_128,
                     stored.block_size)


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
