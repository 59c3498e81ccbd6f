"""Arrays of ``bestfit`` samples: whole documents packed into ``seq_len + 1`` tokens.

The bins of each epoch come from :class:`fastdata.sampling.bestfit.BestFitPlan`; the order
over them is an :class:`~fastdata.sampling.order.EpochOrder` (so rank stripes, resume and
padding steps work as in the other modes). A sample id is ``epoch << 40 | bin``: unique
across epochs, and enough to find the bin's plan (a reader keeps the plans of the last few
epochs and rebuilds one it lacks).

Per sample: ``input_ids`` / ``labels`` as in packed mode, but the documents of a bin are
laid out back to back and the rest of the ``seq_len + 1`` tokens is ``pad_id``; labels are
-100 on padding, across document boundaries (the token before the next document's first
one) and where a chat loss mask is 0; ``attention_mask`` marks real input tokens. With
``position_ids`` / ``doc_ids`` (``SampleConfig``), positions restart at every document
piece, ``doc_ids`` is the global document id of each input token (-1 on padding) and
``cu_seqlens`` (int32) the starts of the runs of equal ``doc_ids`` in the flattened batch,
then its length.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from fastdata import metrics
from fastdata.format.reader import gather, permute
from fastdata.reader.dataset import Dataset
from fastdata.sampling.bestfit import BestFitPlan
from fastdata.sampling.order import EpochOrder, OrderConfig
from fastdata.sampling.permute import derive_key

if TYPE_CHECKING:
    from fastdata.loader.batch import SampleConfig

IGNORE = -100
EPOCH_SHIFT = 40
_BIN_MASK = (1 << EPOCH_SHIFT) - 1
_KEPT_PLANS = 3


class BestFitOrder(EpochOrder):
    """The order of one epoch's bins; ids carry the epoch (``epoch << 40 | bin``)."""

    def __init__(self, plan: BestFitPlan, config: OrderConfig, epoch: int, identity: str) -> None:
        super().__init__(plan.space, config, epoch, identity, permute=permute)
        self.plan = plan

    def slots(self, step: int | np.ndarray, lo: int, hi: int) -> np.ndarray:
        ids = super().slots(step, lo, hi)
        return np.where(ids >= 0, ids | (self.epoch << EPOCH_SHIFT), ids)

    def shards_of(self, samples: np.ndarray) -> np.ndarray:
        return self.plan.shard_of(np.asarray(samples, dtype=np.int64) & _BIN_MASK)


class BestFitReader:
    """Plans the epochs of one dataset and reads their bins into batch arrays."""

    def __init__(self, data: Dataset, config: SampleConfig, pad_id: int, has_mask: bool) -> None:
        self.data, self.config, self.pad_id, self.has_mask = data, config, pad_id, has_mask
        self.doc_starts = np.concatenate([[0], np.cumsum(data.shards.column("docs"))]).astype(np.int64)
        self._plans: OrderedDict[int, BestFitPlan] = OrderedDict()
        self._keying: tuple[str, int, bool] | None = None  # (identity, seed, shuffle) of the orders made

    # ------------------------------------------------------------------ plans and orders

    def order(self, config: OrderConfig, epoch: int, identity: str) -> BestFitOrder:
        """The order of ``epoch``: one counting pass over the epoch's windows (the first time)."""
        self._keying = (identity, config.seed, config.shuffle)
        return BestFitOrder(self.plan(epoch), config, epoch, identity)

    def plan(self, epoch: int) -> BestFitPlan:
        plan = self._plans.get(epoch)
        if plan is None:
            if self._keying is None:
                raise RuntimeError("bestfit bins read before their epoch's order was made")
            identity, seed, shuffle = self._keying
            started = time.perf_counter()
            plan = BestFitPlan(self.data.shards.column("docs"), self._offsets, self.config.seq_len,
                               self.config.pack_window, derive_key(identity, seed, epoch), shuffle,
                               permute=permute)
            metrics.observe("loader.bestfit.plan", time.perf_counter() - started)
            self._plans[epoch] = plan
            while len(self._plans) > _KEPT_PLANS:
                self._plans.popitem(last=False)
        return plan

    def _offsets(self, shard: int) -> np.ndarray:
        return self.data.shard(shard).doc_offsets()

    def _split(self, ids: np.ndarray) -> list[tuple[np.ndarray, BestFitPlan, np.ndarray]]:
        """(positions in ``ids``, plan, bins) per epoch among the real ids."""
        real = np.flatnonzero(ids >= 0)
        epochs = ids[real] >> EPOCH_SHIFT
        return [(real[epochs == e], self.plan(int(e)), ids[real[epochs == e]] & _BIN_MASK)
                for e in np.unique(epochs)]

    def shard_of_each(self, ids: np.ndarray) -> np.ndarray:
        """The shard each (non-padding) sample reads (a bin reads one shard)."""
        out = np.empty(len(ids), dtype=np.int64)
        for at, plan, bins in self._split(np.asarray(ids, dtype=np.int64)):
            out[at] = plan.shard_of(bins)
        return out

    # ------------------------------------------------------------------ arrays

    def __call__(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64)
        seq, width, b = self.config.seq_len, self.config.seq_len + 1, len(ids)
        rows, shards, docs, starts, lengths = [], [], [], [], []
        for at, plan, bins in self._split(ids):
            row, shard, doc, start, length = plan.pieces(bins)
            rows.append(at[row])
            shards.append(shard)
            docs.append(doc)
            starts.append(start)
            lengths.append(length)
        row, shard, doc, start, length = (np.concatenate(c) if c else np.zeros(0, np.int64)
                                          for c in (rows, shards, docs, starts, lengths))
        order = np.argsort(row, kind="stable")  # pieces row by row, in bin order
        row, shard, doc, start, length = row[order], shard[order], doc[order], start[order], length[order]
        flat, mask = self._read(shard, doc, start, length)
        fill = np.bincount(row, weights=length, minlength=b).astype(np.int64)
        cols = np.arange(width)
        valid = cols < fill[:, None]
        buf = np.full((b, width), self.pad_id, dtype=np.int64)
        buf[valid] = flat
        # where each piece begins within its row
        ends = np.cumsum(length)
        row_first = np.concatenate([[0], np.cumsum(fill)])[:-1]
        begin = ends - length - row_first[row]
        first = np.zeros((b, width), dtype=bool)
        first[row, begin] = True
        labels = buf[:, 1:].copy()
        labels[~valid[:, 1:] | first[:, 1:]] = IGNORE
        if mask is not None:
            mbuf = np.ones((b, width), dtype=np.uint8)
            mbuf[valid] = mask
            labels[mbuf[:, 1:] == 0] = IGNORE
        out = {"input_ids": np.ascontiguousarray(buf[:, :seq]), "labels": labels,
               "attention_mask": valid[:, :seq].astype(np.int64), "sample_ids": ids.copy()}
        if self.config.position_ids or self.config.doc_ids:
            owner = np.full((b, width), -1, dtype=np.int64)
            owner[valid] = np.repeat(self.doc_starts[shard] + doc, length)
            out.update(_layout(owner[:, :seq], first[:, :seq], self.config))
        return out

    def _read(self, shard: np.ndarray, doc: np.ndarray, start: np.ndarray, length: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Gather the pieces back to back (and their loss mask) with one native call."""
        total = int(length.sum())
        flat = np.empty(total, dtype=np.int64)
        mask = np.empty(total, dtype=np.uint8) if self.has_mask else None
        if not total:
            return flat, mask
        used, index = np.unique(shard, return_inverse=True)
        views = [self.data.shard(int(s)) for s in used]
        offset = np.empty(len(doc), dtype=np.int64)
        for k, view in enumerate(views):
            mine = index == k
            offset[mine] = view.doc_offsets()[doc[mine]].astype(np.int64) + start[mine]
        spans = np.stack([index.astype(np.int64), offset, length], axis=1)
        self.data.ready_rows(used, spans)  # blocks of a shard fetched block by block
        started = time.perf_counter()
        gather(views, spans, flat, mask)
        metrics.observe("reader.gather", time.perf_counter() - started)
        metrics.count("reader.tokens", total)
        return flat, mask


def _layout(owner: np.ndarray, first: np.ndarray, config: SampleConfig) -> dict[str, np.ndarray]:
    """position_ids / doc_ids / cu_seqlens of input tokens owned by documents ``owner``."""
    b, seq = owner.shape
    begins = first.copy()
    begins[:, 0] = True
    begins[:, 1:] |= owner[:, 1:] != owner[:, :-1]
    cols = np.broadcast_to(np.arange(seq), (b, seq))
    out: dict[str, np.ndarray] = {}
    if config.position_ids:
        first = np.maximum.accumulate(np.where(begins, cols, 0), axis=1)
        out["position_ids"] = (cols - first).astype(np.int64)
    if config.doc_ids:
        out["doc_ids"] = owner.copy()
        out["cu_seqlens"] = np.append(np.flatnonzero(begins.ravel()), b * seq).astype(np.int32)
    return out
