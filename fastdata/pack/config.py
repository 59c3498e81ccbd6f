"""What a pack is asked to do (:class:`PackConfig`), its running totals and its result."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastdata.errors import FastdataConfigError
from fastdata.format.manifest import Manifest
from fastdata.format.spec import DTYPE_CODES, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, dtype_for_vocab, is_power_of_two
from fastdata.pack.encode import EncodeOptions
from fastdata.units import parse_size

DEFAULT_SHARD_SIZE = 256 << 20
#: Bytes per block of a v1.1 shard's block table (docs/format.md).
DEFAULT_BLOCK_SIZE = 1 << 20


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
    #: Format v1.1 block size (a power of two, 4 KiB to 64 MiB); None writes v1 shards.
    block_size: int | None = DEFAULT_BLOCK_SIZE

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise FastdataConfigError(f"workers must be >= 1, got {self.workers}")
        if self.shard_size < 1:
            raise FastdataConfigError(f"shard size must be positive, got {self.shard_size}")
        if self.compression not in (None, "zstd"):
            raise FastdataConfigError(f"unknown compression {self.compression!r}; use zstd")
        if self.dtype not in ("auto", *DTYPE_CODES):
            raise FastdataConfigError(f"unknown dtype {self.dtype!r}; use auto, uint16 or uint32")
        if self.block_size is not None and not (
                is_power_of_two(self.block_size) and MIN_BLOCK_SIZE <= self.block_size <= MAX_BLOCK_SIZE):
            raise FastdataConfigError(f"block size must be a power of two from {MIN_BLOCK_SIZE} to "
                                      f"{MAX_BLOCK_SIZE} bytes (or none for format v1), "
                                      f"got {self.block_size}")


def parse_block_size(value: str | int | None) -> int | None:
    """The block size meant by ``value``: bytes, a size such as "1MiB", or None / "none" for
    format v1 shards. Decimal units name the power of two they approximate: "1MB" is 1 MiB.

    Raises:
        FastdataConfigError: not a size, or not within 5 % of a power of two.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "v1")):
        return None
    n = parse_size(value)
    if n <= 0:
        raise FastdataConfigError(f"block size must be positive, got {value!r} (use none for format v1)")
    nearest = 1 << round(math.log2(n))
    if abs(n - nearest) > 0.05 * nearest:
        raise FastdataConfigError(f"block size {value!r} is {n} bytes, not a power of two; use e.g. "
                                  "1MiB, 4MiB or 64KiB")
    return nearest


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
    """What a pack wrote: the manifest, and this run's totals (``progress``)."""

    manifest: Manifest
    progress: PackProgress

    @property
    def docs(self) -> int:
        """Documents in the dataset (earlier runs of a resumed pack included)."""
        return self.manifest.num_docs

    @property
    def tokens(self) -> int:
        """Tokens in the dataset."""
        return self.manifest.num_tokens

    @property
    def shards(self) -> int:
        return len(self.manifest.shards)

    @property
    def bytes(self) -> int:
        """Stored bytes of the shards (compressed, when they are)."""
        return int(self.manifest.shards.column("stored_bytes").sum())

    @property
    def skipped(self) -> dict[str, int]:
        """Records skipped under ``on_error="skip"``, by reason."""
        return dict(self.progress.skipped)

    @property
    def fingerprint(self) -> str:
        """The dataset's identity (``manifest.json``'s ``fingerprint``)."""
        return self.manifest.fingerprint


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
