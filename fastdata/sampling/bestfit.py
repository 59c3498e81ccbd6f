"""Best-fit packing: whole documents packed into samples of ``seq_len + 1`` tokens.

A sample ("bin") holds ``capacity = seq_len + 1`` tokens. For each epoch, and for each
shard on its own:

1. The shard's documents are taken in an order keyed by (seed, epoch, shard) (their
   stored order without shuffling) and cut into windows of ``window`` documents.
2. A document longer than ``capacity`` is split as in packed mode: pieces
   ``[k*seq_len, k*seq_len + capacity)`` that each fill a bin alone (consecutive pieces
   share one token, so every token but the first is a label once), and a tail piece
   ``[k*seq_len, length)`` that is packed like a document (dropped when it is the single
   token already shared with the last full piece). Shorter documents are never split.
3. The window's full pieces take the first bins (in window order); the rest are packed
   best-fit-decreasing: longest first (ties by window position), each into the open bin
   with the least room that still fits it (ties: the bin opened first), else a new bin.

So the bins of an epoch are a pure function of (data, seed, epoch, seq_len, window), never
of the world size. Shard ``j`` owns its bins as a :class:`~fastdata.sampling.order.SampleSpace`
does, so :class:`~fastdata.sampling.order.EpochOrder` orders and stripes them exactly like
samples of the other modes (a bin reads one shard: node locality is kept).

The number of bins is needed up front (for the step count), and it depends on the epoch
when a shard has more than ``window`` documents, so :class:`BestFitPlan` makes one counting
pass per epoch over every window, keeping one count per window (O(documents / window)); a
window's layout is recomputed on demand (O(window)) and a few are kept in a small LRU.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fastdata.errors import FastdataConfigError
from fastdata.sampling.order import SampleSpace
from fastdata.sampling.permute import PermuteFn, child_keys, derive_key, permute_reference

#: offsets_of(shard) -> the shard's ``num_docs + 1`` document token offsets (docs/format.md).
OffsetsFn = Callable[[int], np.ndarray]

_LOW = (1 << 32) - 1


def split_documents(lengths: np.ndarray, seq_len: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pieces of documents of ``lengths``: (document index, start, length, is_full).

    Full pieces come first for each document, then its tail; documents of length 0 give
    none. A document of at most ``seq_len + 1`` tokens is one piece, itself.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    cap = seq_len + 1
    full = np.where(lengths > cap, (lengths - 1) // seq_len, 0)
    tail = lengths - full * seq_len
    keep_tail = np.where(full > 0, tail >= 2, tail >= 1)
    per_doc = full + keep_tail
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), per_doc)
    first = np.concatenate([[0], np.cumsum(per_doc)])[:-1]
    k = np.arange(len(doc), dtype=np.int64) - np.repeat(first, per_doc)  # piece number in its doc
    is_full = k < full[doc]
    start = k * seq_len
    length = np.where(is_full, cap, lengths[doc] - start)
    return doc, start, length, is_full


def best_fit(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-fit-decreasing: (bin of each item, placement rank of each item).

    Items (all ``<= capacity``) are placed longest first, ties in index order; each goes to
    the bin with the least room that still holds it (ties: the lower bin), else to a new
    bin. Bins are numbered in the order they are opened.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    order = np.argsort(-lengths, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    bins = np.empty(n, dtype=np.int64)
    # items over half the capacity can never share a bin with each other: each opens one
    big = int(np.count_nonzero(lengths * 2 > capacity))
    bins[order[:big]] = np.arange(big, dtype=np.int64)
    room = capacity - lengths[order[:big]]  # non-decreasing, as the lengths are sorted
    free = ((room << 32) | np.arange(big, dtype=np.int64))[room > 0].tolist()  # (room, bin), sorted
    opened = big
    small = order[big:]
    out = [0] * len(small)
    for i, length in enumerate(lengths[small].tolist()):
        at = bisect_left(free, length << 32)
        if at == len(free):
            b, rest = opened, capacity - length
            opened += 1
        else:
            entry = free.pop(at)
            b, rest = entry & _LOW, (entry >> 32) - length
        out[i] = b
        if rest > 0:
            insort(free, (rest << 32) | b)
    bins[small] = np.asarray(out, dtype=np.int64)
    return bins, rank


@dataclass(frozen=True)
class WindowPack:
    """The bins of one window: pieces in bin order, bin ``b`` = pieces ``[bin_start[b], bin_start[b+1])``."""

    doc: np.ndarray  #: document of each piece, as an index within the shard
    start: np.ndarray  #: first token of the piece within its document
    length: np.ndarray  #: tokens of the piece
    bin_start: np.ndarray  #: one more entry than bins

    @property
    def num_bins(self) -> int:
        return len(self.bin_start) - 1


def pack_window(docs: np.ndarray, lengths: np.ndarray, seq_len: int) -> WindowPack:
    """Pack the documents ``docs`` (shard-local ids, window order) of ``lengths`` tokens."""
    piece_doc, start, length, is_full = split_documents(lengths, seq_len)
    n_full = int(np.count_nonzero(is_full))
    bins = np.empty(len(piece_doc), dtype=np.int64)
    rank = np.empty(len(piece_doc), dtype=np.int64)
    bins[is_full] = np.arange(n_full, dtype=np.int64)
    rank[is_full] = 0
    rest = ~is_full
    packed, placed = best_fit(length[rest], seq_len + 1)
    bins[rest], rank[rest] = packed + n_full, placed
    order = np.lexsort((rank, bins))
    counts = np.bincount(bins, minlength=int(bins.max()) + 1 if len(bins) else 0)
    bin_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    docs = np.asarray(docs, dtype=np.int64)
    return WindowPack(docs[piece_doc[order]], start[order], length[order], bin_start)


class BestFitPlan:
    """The bins of one epoch, shard by shard, and where each bin's pieces are.

    Args:
        shard_docs: documents of each shard.
        offsets_of: the document offsets of a shard (read only during the counting pass
            and when a window's layout is needed).
        seq_len: tokens per sample fed to the model; a bin holds ``seq_len + 1``.
        window: documents packed together (per shard).
        key: the epoch's key (from the order's identity, seed and epoch).
        shuffle: whether documents are taken in a keyed order rather than stored order.
        permute: the keyed bijection (the native one in the loader).
        cached_windows: window layouts kept in memory.
    """

    def __init__(self, shard_docs: np.ndarray, offsets_of: OffsetsFn, seq_len: int, window: int,
                 key: int, shuffle: bool, permute: PermuteFn = permute_reference,
                 cached_windows: int = 64) -> None:
        if window < 1:
            raise FastdataConfigError(f"bestfit pack_window must be >= 1 document, got {window}")
        self.shard_docs = np.asarray(shard_docs, dtype=np.int64)
        self.seq_len, self.window, self.shuffle = seq_len, window, shuffle
        self._offsets_of, self._permute = offsets_of, permute
        self._key = derive_key(key, "bestfit")
        windows = -(-self.shard_docs // window)
        self._first_window = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)
        self._cache: OrderedDict[int, WindowPack] = OrderedDict()
        self._cached = cached_windows
        counts = np.zeros(int(self._first_window[-1]), dtype=np.int64)
        for shard in range(len(self.shard_docs)):
            offsets = None
            for g in range(int(self._first_window[shard]), int(self._first_window[shard + 1])):
                if offsets is None:
                    offsets = np.asarray(self._offsets_of(shard))
                counts[g] = self._pack(shard, g, offsets).num_bins
        self._bin_first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.space = SampleSpace(self._bin_first[self._first_window])

    @property
    def num_bins(self) -> int:
        return int(self._bin_first[-1])

    @property
    def num_windows(self) -> int:
        """Windows of the epoch, numbered shard by shard (see :meth:`window_pack`)."""
        return int(self._first_window[-1])

    def window_docs(self, shard: int, w: int) -> np.ndarray:
        """Shard-local ids of the documents in window ``w`` of ``shard``, in window order."""
        n = int(self.shard_docs[shard])
        pos = np.arange(w * self.window, min((w + 1) * self.window, n), dtype=np.int64)
        if not self.shuffle or n < 2:
            return pos
        keys = child_keys(self._key, np.full(len(pos), shard), np.zeros(len(pos), dtype=np.int64))
        return self._permute(pos, np.full(len(pos), n, dtype=np.int64), keys)

    def _pack(self, shard: int, g: int, offsets: np.ndarray) -> WindowPack:
        docs = self.window_docs(shard, g - int(self._first_window[shard]))
        lengths = (offsets[docs + 1] - offsets[docs]).astype(np.int64)
        return pack_window(docs, lengths, self.seq_len)

    def window_pack(self, g: int) -> WindowPack:
        """The layout of global window ``g`` (windows numbered shard by shard)."""
        pack = self._cache.get(g)
        if pack is not None:
            self._cache.move_to_end(g)
            return pack
        shard = int(np.searchsorted(self._first_window, g, side="right")) - 1
        pack = self._pack(shard, g, np.asarray(self._offsets_of(shard)))
        self._cache[g] = pack
        while len(self._cache) > self._cached:
            self._cache.popitem(last=False)
        return pack

    def shard_of(self, bins: np.ndarray) -> np.ndarray:
        """The shard each bin reads."""
        return np.searchsorted(self.space.first, bins, side="right") - 1

    def pieces(self, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pieces of each of ``bins`` (all valid ids): (row, shard, doc within shard, start
        within doc, length), rows in the order of ``bins`` and pieces in bin order."""
        bins = np.asarray(bins, dtype=np.int64)
        if len(bins) and (bins.min() < 0 or bins.max() >= self.num_bins):
            raise IndexError(f"bin ids outside [0, {self.num_bins})")
        g = np.searchsorted(self._bin_first, bins, side="right") - 1
        local = bins - self._bin_first[g]
        parts: list[tuple[np.ndarray, ...]] = []
        for gw in np.unique(g).tolist():  # one vectorised slice of each window's layout
            rows = np.flatnonzero(g == gw)
            pack = self.window_pack(gw)
            lo, hi = pack.bin_start[local[rows]], pack.bin_start[local[rows] + 1]
            counts = hi - lo
            at = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
            shard = int(np.searchsorted(self._first_window, gw, side="right")) - 1
            parts.append((np.repeat(rows, counts), np.full(len(at), shard), pack.doc[at], pack.start[at],
                          pack.length[at]))
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty, empty
        row, shard_, doc, start, length = (np.concatenate(c).astype(np.int64) for c in zip(*parts))
        order = np.argsort(row, kind="stable")
        return row[order], shard_[order], doc[order], start[order], length[order]
