"""Turning sample ids into training arrays with one native gather per batch.

Sample modes (``SampleConfig.mode``):

* ``packed`` — the ``k``-th sample of a shard is its tokens ``[k*L, k*L + L + 1)``
  (documents joined as packed, EOS included; see ``sampling.order.packed_space``);
  ``input_ids`` are the first ``L``, ``labels`` the last ``L``. Optional ``position_ids``
  restart at every document, and ``doc_ids`` / ``cu_seqlens`` describe document
  boundaries for variable-length attention.
* ``document`` — sample ``i`` is document ``i``, truncated to ``L + 1`` tokens or padded
  with ``pad_id``; ``attention_mask`` marks the real input tokens.
* ``bestfit`` — whole documents packed best-fit into ``L + 1`` tokens per epoch
  (``fastdata.loader.bestfit``, ``fastdata.sampling.bestfit``).

Labels are ``-100`` where no loss is taken: padding, positions past a document's end, and
(for datasets packed with ``--chat``) tokens whose loss mask is 0. A padding sample (id
-1, see ``sampling.order``) has all labels ``-100``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fastdata import metrics
from fastdata.errors import FastdataConfigError
from fastdata.format.reader import gather, permute
from fastdata.loader.bestfit import BestFitReader
from fastdata.reader.dataset import Dataset
from fastdata.sampling.order import EpochOrder, OrderConfig, SampleSpace, packed_space

IGNORE = -100
MODES = ("packed", "document", "bestfit")


@dataclass(frozen=True)
class SampleConfig:
    """How samples are cut from the token stream."""

    seq_len: int  #: tokens per sample fed to the model (labels are shifted by one)
    mode: str = "packed"  #: "packed", "document" or "bestfit"
    position_ids: bool = False  #: packed mode: positions restarting at each document
    doc_ids: bool = False  #: packed mode: per-token document ids and ``cu_seqlens``
    pad_id: int | None = None  #: document mode padding id; default the EOS id, else 0
    pack_window: int = 4096  #: bestfit mode: documents packed together (per shard)

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise FastdataConfigError(f"seq_len must be >= 1, got {self.seq_len}")
        if self.mode not in MODES:
            raise FastdataConfigError(f"unknown sample mode {self.mode!r}; use one of {MODES}")
        if self.mode == "document" and (self.position_ids or self.doc_ids):
            raise FastdataConfigError("position_ids / doc_ids apply to packed samples only")
        if self.pack_window < 1:
            raise FastdataConfigError(f"pack_window must be >= 1 document, got {self.pack_window}")

    @property
    def order_mode(self) -> str:
        """The mode as the order's identity names it (bestfit with its window)."""
        return f"bestfit/{self.pack_window}" if self.mode == "bestfit" else self.mode


class BatchAssembler:
    """Reads samples of one dataset into preallocated numpy batches."""

    def __init__(self, data: Dataset, config: SampleConfig) -> None:
        self.data, self.config = data, config
        shards = data.shards
        self.token_starts = np.concatenate([[0], np.cumsum(shards.column("tokens"))]).astype(np.int64)
        self.doc_starts = np.concatenate([[0], np.cumsum(shards.column("docs"))]).astype(np.int64)
        self.sample_starts = packed_space(shards.column("tokens"), config.seq_len).first
        self.has_mask = data.manifest.has_loss_mask
        eos = data.tokenizer.eos_id
        self.pad_id = config.pad_id if config.pad_id is not None else (eos if eos is not None else 0)
        bestfit = config.mode == "bestfit"
        self.bestfit = BestFitReader(data, config, self.pad_id, self.has_mask) if bestfit else None

    def epoch_order(self, space: SampleSpace, config: OrderConfig, epoch: int, identity: str) -> EpochOrder:
        """The order of ``epoch`` over ``space``; bestfit orders the epoch's own bins instead."""
        if self.bestfit is not None:
            return self.bestfit.order(config, epoch, identity)
        return EpochOrder(space, config, epoch, identity, permute=permute)

    def shards_of(self, sample_ids: np.ndarray) -> np.ndarray:
        """The shards that reading ``sample_ids`` touches, in order of first use."""
        shards = self.shard_of_each(sample_ids[sample_ids >= 0])
        _, first_use = np.unique(shards, return_index=True)
        return shards[np.sort(first_use)]

    def shard_of_each(self, sample_ids: np.ndarray) -> np.ndarray:
        """The shard holding each (non-padding) sample."""
        if self.bestfit is not None:
            return self.bestfit.shard_of_each(sample_ids)
        starts = self.sample_starts if self.config.mode == "packed" else self.doc_starts
        return np.searchsorted(starts, sample_ids, side="right") - 1

    def __call__(self, sample_ids: np.ndarray) -> dict[str, np.ndarray]:
        if self.bestfit is not None:
            return self.bestfit(sample_ids)
        if self.config.mode == "packed":
            return self._packed(sample_ids)
        return self._documents(sample_ids)

    def _gather(self, rows: list[tuple[int, int, int]] | np.ndarray, out: np.ndarray,
                mask: np.ndarray | None) -> None:
        """Gather ``rows`` of (shard, offset, length) back to back into ``out`` (and ``mask``)."""
        spans = np.array(rows, dtype=np.int64).reshape(-1, 3)
        if not len(spans):
            return
        shards, spans[:, 0] = np.unique(spans[:, 0], return_inverse=True)
        views = [self.data.shard(int(s)) for s in shards]
        self.data.ready_rows(shards, spans)  # blocks of a shard fetched block by block
        started = time.perf_counter()
        gather(views, spans, out, mask)
        metrics.observe("reader.gather", time.perf_counter() - started)
        metrics.count("reader.tokens", len(out))
        metrics.count("reader.bytes", len(out) * self.data.dtype.itemsize)

    def _read(self, rows: list[tuple[int, int, int]] | np.ndarray, total: int
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Gather ``rows`` into a new flat int64 array (and mask)."""
        flat = np.empty(total, dtype=np.int64)
        mask = np.empty(total, dtype=np.uint8) if self.has_mask else None
        self._gather(rows, flat, mask)
        return flat, mask

    def window(self, sample_id: int) -> tuple[int, int]:
        """(shard, first token within the shard) of packed sample ``sample_id``."""
        shard = int(np.searchsorted(self.sample_starts, sample_id, side="right")) - 1
        return shard, (sample_id - int(self.sample_starts[shard])) * self.config.seq_len

    def _packed_spans(self, ids: np.ndarray, offset: int, width: int) -> np.ndarray:
        """(shard, token offset, length) rows of ``width`` tokens from each window's start +
        ``offset``; windows never cross a shard (see ``packed_space``)."""
        shard = np.searchsorted(self.sample_starts, ids, side="right") - 1
        local = (ids - self.sample_starts[shard]) * self.config.seq_len + offset
        return np.stack([shard, local, np.full(len(ids), width)], axis=1)

    def windows(self, ids: np.ndarray) -> np.ndarray | None:
        """The ``(n, L + 1)`` int64 token windows of samples ``ids`` in one gather, when each
        sample is exactly those tokens: ``input_ids`` its first ``L``, ``labels`` its last ``L``
        (packed mode, no loss mask, no padding sample, no position or document outputs).
        Otherwise None: assemble with ``__call__``."""
        c = self.config
        if c.mode != "packed" or self.has_mask or c.position_ids or c.doc_ids or not (ids >= 0).all():
            return None
        out = np.empty((len(ids), c.seq_len + 1), dtype=np.int64)
        self._gather(self._packed_spans(ids, 0, c.seq_len + 1), out.reshape(-1), None)
        return out

    def _packed(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        seq, width, b = self.config.seq_len, self.config.seq_len + 1, len(ids)
        real = ids >= 0
        if real.all():
            # the common case: two gathers straight into the batch's own arrays (inputs, and
            # labels shifted by one token with their loss mask), no copies afterwards
            inputs = np.empty((b, seq), dtype=np.int64)
            labels = np.empty((b, seq), dtype=np.int64)
            self._gather(self._packed_spans(ids, 0, seq), inputs.reshape(-1), None)
            mask = np.empty((b, seq), dtype=np.uint8) if self.has_mask else None
            self._gather(self._packed_spans(ids, 1, seq), labels.reshape(-1),
                         None if mask is None else mask.reshape(-1))
            if mask is not None:
                labels[mask == 0] = IGNORE
        else:
            buf = np.zeros((b, width), dtype=np.int64)
            mbuf = np.ones((b, width), dtype=np.uint8)
            if real.any():
                flat, got = self._read(self._packed_spans(ids[real], 0, width), int(real.sum()) * width)
                buf[real] = flat.reshape(-1, width)
                if got is not None:
                    mbuf[real] = got.reshape(-1, width)
            inputs, labels = np.ascontiguousarray(buf[:, :seq]), buf[:, 1:].copy()
            labels[mbuf[:, 1:] == 0] = IGNORE
            labels[~real] = IGNORE
        out = {"input_ids": inputs, "labels": labels, "sample_ids": ids.astype(np.int64)}
        if self.config.position_ids or self.config.doc_ids:
            out.update(self._doc_layout(ids))
        return out

    def _doc_layout(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Document id of every input token, positions restarting per document, cu_seqlens."""
        seq, b = self.config.seq_len, len(ids)
        docs = np.full((b, seq), -1, dtype=np.int64)
        for r, i in enumerate(ids):
            if i < 0:
                continue
            shard, offset = self.window(int(i))
            offsets = self.data.shard(shard).doc_offsets()
            local = np.arange(offset, offset + seq, dtype=np.uint64)
            docs[r] = np.searchsorted(offsets, local, side="right") - 1 + self.doc_starts[shard]
        starts = np.ones((b, seq), dtype=bool)
        starts[:, 1:] = docs[:, 1:] != docs[:, :-1]
        cols = np.broadcast_to(np.arange(seq), (b, seq))
        first = np.maximum.accumulate(np.where(starts, cols, 0), axis=1)
        out: dict[str, np.ndarray] = {}
        if self.config.position_ids:
            out["position_ids"] = (cols - first).astype(np.int64)
        if self.config.doc_ids:
            out["doc_ids"] = docs
            out["cu_seqlens"] = np.append(np.flatnonzero(starts.ravel()), b * seq).astype(np.int32)
        return out

    def _documents(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        seq, width, b = self.config.seq_len, self.config.seq_len + 1, len(ids)
        real = ids >= 0
        rows, lengths = [], np.zeros(b, dtype=np.int64)
        for r, i in enumerate(ids):
            if i < 0:
                continue
            shard = int(np.searchsorted(self.doc_starts, i, side="right")) - 1
            start, length = self.data.shard(shard).doc_bounds(int(i - self.doc_starts[shard]))
            lengths[r] = min(length, width)
            rows.append((shard, start, int(lengths[r])))
        flat, mask = self._read([r for r in rows if r[2]], int(lengths.sum()))
        buf = np.full((b, width), self.pad_id, dtype=np.int64)
        valid = np.arange(width) < lengths[:, None]
        buf[valid] = flat
        labels = buf[:, 1:].copy()
        labels[~valid[:, 1:]] = IGNORE
        if mask is not None:
            mbuf = np.zeros((b, width), dtype=np.uint8)
            mbuf[valid] = mask
            labels[mbuf[:, 1:] == 0] = IGNORE
        labels[~real] = IGNORE
        return {"input_ids": np.ascontiguousarray(buf[:, :seq]), "labels": labels,
                "attention_mask": valid[:, :seq].astype(np.int64), "sample_ids": ids.astype(np.int64)}
