"""What a pack is asked to do (:class:`PackConfig`), its running totals and its result."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastdata.errors import FastdataConfigError
from fastdata.format.manifest import Manifest
from fastdata.format.spec import DTYPE_CODES, dtype_for_vocab
from fastdata.pack.encode import EncodeOptions

DEFAULT_SHARD_SIZE = 256 << 20


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

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise FastdataConfigError(f"workers must be >= 1, got {self.workers}")
        if self.shard_size < 1:
            raise FastdataConfigError(f"shard size must be positive, got {self.shard_size}")
        if self.compression not in (None, "zstd"):
            raise FastdataConfigError(f"unknown compression {self.compression!r}; use zstd")
        if self.dtype not in ("auto", *DTYPE_CODES):
            raise FastdataConfigError(f"unknown dtype {self.dtype!r}; use auto, uint16 or uint32")


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
