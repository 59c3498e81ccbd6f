"""``fastdata import megatron``: a Megatron ``.bin``/``.idx`` pair to fastdata shards.

Each Megatron sequence becomes one fastdata document, in order. Shards are cut at the same
sequence boundaries as the virtual shards of reading in place (``shard_size`` counts bytes
of the ``.bin``), so the copy has the same shard table and, read with the same settings,
gives the same samples. Every shard is written atomically with its xxh3-128 and the
manifest last, as ``fastdata pack`` does.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from fastdata.errors import FastdataConfigError, FastdataInputError, FastdataIOError
from fastdata.format.manifest import Manifest, ShardInfo, TokenizerInfo
from fastdata.format.shard_table import TABLE_NAME, ShardTable, pattern_name
from fastdata.format.spec import DTYPE_CODES, MANIFEST_NAME
from fastdata.format.writer import write_shard
from fastdata.megatron.files import MegatronFiles
from fastdata.megatron.index import MegatronIndex, plan_shards
from fastdata.megatron.source import SHARD_BYTES, megatron_prefix, read_index
from fastdata.pack.output import check_output
from fastdata.storage.remote import Store

log = logging.getLogger(__name__)
_NARROW = ("uint8", "int8", "int16", "uint16")
_LIMITS = {"uint16": 0xFFFF, "uint32": 0xFFFF_FFFF}


@dataclass(frozen=True)
class ImportConfig:
    """What ``fastdata import megatron`` does; the CLI builds one from its arguments."""

    source: str  #: ``<prefix>.idx``, ``<prefix>.bin`` or a local ``<prefix>``; local or fsspec URL
    output: str  #: dataset directory or fsspec URL
    shard_size: int = SHARD_BYTES  #: bytes of the ``.bin`` per shard (the in-place cut)
    dtype: str = "auto"  #: "auto" (uint16 for 8/16-bit sources, else uint32), "uint16" or "uint32"
    vocab_size: int | None = None  #: recorded in the manifest; default: the largest id + 1
    eos_id: int | None = None  #: recorded in the manifest (document-mode padding)
    overwrite: bool = False  #: replace a finished dataset at ``output``
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise FastdataConfigError(f"shard size must be positive, got {self.shard_size}")
        if self.dtype not in ("auto", *DTYPE_CODES):
            raise FastdataConfigError(f"unknown dtype {self.dtype!r}; use auto, uint16 or uint32")
        for name in ("vocab_size", "eos_id"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FastdataConfigError(f"{name} must be >= 0, got {value}")


@dataclass
class ImportProgress:
    shards: int = 0
    sequences: int = 0
    tokens: int = 0
    stored_bytes: int = 0


def import_megatron(config: ImportConfig,
                    progress: Callable[[ImportProgress], None] | None = None) -> Manifest:
    """Convert the Megatron dataset ``config.source`` into a fastdata dataset at ``config.output``.

    Returns:
        The manifest written.

    Raises:
        FastdataConfigError: bad arguments, or the output already holds a dataset.
        FastdataFormatError: the ``.idx``/``.bin`` pair is malformed or mismatched.
        FastdataInputError: a token id does not fit the output dtype (negative, or too large).
        FastdataIOError: reading the source or writing the output failed.
    """
    found = megatron_prefix(config.source)
    if found is None:
        raise FastdataConfigError(f"{config.source.split('?', 1)[0]} does not name a Megatron dataset: give "
                                  "its .idx or .bin file, or a local prefix whose .idx exists")
    source = Store(found[0], config.storage_options)
    stem = found[1]
    index, _ = read_index(source, stem)
    dtype = config.dtype if config.dtype != "auto" else (
        "uint16" if index.dtype.name in _NARROW else "uint32")
    out = Store(config.output, config.storage_options)
    out.make_root()
    check_output(out, config.overwrite)  # the same rule as pack: --overwrite replaces a dataset
    staging = tempfile.mkdtemp(prefix="fastdata-import-")
    try:
        infos, largest = _write_shards(config, index, source, stem, out, dtype, staging, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    vocab = _vocab_size(config, largest)
    tokenizer = TokenizerInfo(
        kind="pretokenized", name=f"megatron:{stem}", vocab_size=vocab, eos_id=config.eos_id, bos_id=None,
        fingerprint=xxhash.xxh3_128_hexdigest(f"ids:{vocab}:{config.eos_id}:None".encode()))
    from fastdata._version import __version__

    provenance = {"fastdata_version": __version__, "megatron": {
        "source": source.describe(stem), "identity": index.identity, "dtype": index.dtype.name,
        "sequences": index.num_sequences, "documents": len(index.document_indices) - 1,
        "multimodal": index.multimodal, "shard_size": config.shard_size}}
    manifest = Manifest(dtype=dtype, has_loss_mask=False, compression=None, tokenizer=tokenizer,
                        shards=ShardTable.from_infos(infos, compressed=False), provenance=provenance)
    text, table = manifest.serialize()
    if table is not None:
        out.write_bytes(TABLE_NAME, table)
    out.write_bytes(MANIFEST_NAME, text.encode())
    return manifest


def _vocab_size(config: ImportConfig, largest: int) -> int:
    if config.vocab_size is None:
        return max(largest + 1, (config.eos_id or 0) + 1)
    if config.vocab_size <= largest:
        raise FastdataConfigError(f"--vocab-size {config.vocab_size} is too small: the data holds token id "
                                  f"{largest}")
    return config.vocab_size


def _write_shards(config: ImportConfig, index: MegatronIndex, source: Store, stem: str,  # noqa: PLR0913
                  out: Store, dtype: str, staging: str,
                  progress: Callable[[ImportProgress], None] | None) -> tuple[list[ShardInfo], int]:
    """Write every shard; returns their infos and the largest token id."""
    bounds = plan_shards(index.lengths, index.dtype.itemsize, config.shard_size)
    cum = np.concatenate([[0], np.cumsum(index.lengths, dtype=np.int64)])
    itemsize = index.dtype.itemsize
    ranges = np.stack([cum[bounds[:-1]], cum[bounds[1:]]], axis=1) * itemsize
    files = MegatronFiles(source, stem + ".bin", [], ranges, "import", staging)
    infos, largest, done = [], -1, ImportProgress()
    for j in range(len(bounds) - 1):
        lo, hi = int(bounds[j]), int(bounds[j + 1])
        tokens = _read(files, j, index, staging)
        where = f"{source.describe(stem + '.bin')} (sequences {lo} to {hi - 1})"
        if len(tokens):
            _check_ids(tokens, index.lengths[lo:hi], lo, dtype, where)
            largest = max(largest, int(tokens.max()))
        name = pattern_name(j, False)
        path = out.path(name) if out.local else os.path.join(staging, name)
        try:
            written = write_shard(path, tokens, index.lengths[lo:hi].astype(np.int64), None, dtype)
        except OSError as e:
            raise FastdataIOError(f"writing {path} failed: {e.strerror or e}") from None
        if not out.local:
            out.publish(path, name)
            os.unlink(path)
        infos.append(ShardInfo(name, written.size, written.size, hi - lo, len(tokens), written.xxh3_128,
                               written.xxh3_128))
        done.shards, done.sequences, done.tokens = done.shards + 1, hi, done.tokens + len(tokens)
        done.stored_bytes += written.size
        if progress:
            progress(done)
    return infos, largest


def _read(files: MegatronFiles, j: int, index: MegatronIndex, staging: str) -> np.ndarray:
    """The tokens of shard ``j``: mapped from a local ``.bin``, fetched by ranges from a remote one."""
    start, end = (int(x) for x in files.byte_ranges[j])
    count = (end - start) // index.dtype.itemsize
    if count == 0:
        return np.zeros(0, dtype=index.dtype)
    if files.in_place:
        return np.memmap(files.store.path(files.bin_name), dtype=index.dtype, mode="r", offset=start,
                         shape=(count,))
    tmp = os.path.join(staging, "range.tmp")
    files.fill(j, tmp)
    return np.fromfile(tmp, dtype=index.dtype)


def _check_ids(tokens: np.ndarray, lengths: np.ndarray, first_seq: int, dtype: str, where: str) -> None:
    low, high = int(tokens.min()), int(tokens.max())
    if low >= 0 and high <= _LIMITS[dtype]:
        return
    bad = int(np.flatnonzero((tokens < 0) | (tokens > _LIMITS[dtype]))[0])
    seq = first_seq + int(np.searchsorted(np.cumsum(lengths), bad, side="right"))
    if int(tokens[bad]) < 0:
        hint = "fastdata token ids are unsigned"
    else:
        hint = "use --dtype uint32" if dtype == "uint16" else "fastdata token ids are below 2**32"
    raise FastdataInputError(f"{where}: sequence {seq} holds token id {int(tokens[bad])}, which does not fit "
                             f"{dtype} ({hint})")
