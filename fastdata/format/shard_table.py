"""The shard list of a manifest as columns, so a million shards cost arrays, not objects.

Small datasets list their shards inline in ``manifest.json``; above
``INLINE_LIMIT`` shards the list is a binary sidecar, ``shards.bin``: one 64-byte
little-endian record per shard (stored bytes, raw bytes, docs, tokens as u64, then the
two 16-byte xxh3-128 digests), named ``shard-{index:05d}.fds`` (or ``.fds.zst``). The
sidecar is memory-mapped when local and checked against its size and hash in the
manifest before use. Either way the in-memory form is the same :class:`ShardTable`.

Format v1.1 adds three columns per shard (metadata section size, block size, metadata
xxh3-128): a dataset with any v1.1 shard uses the 96-byte :data:`RECORD_V11` (its manifest's
``shard_table`` says ``"record_bytes": 96``); a v1 dataset keeps the 64-byte :data:`RECORD`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fastdata.format.spec import RAW_SUFFIX, ZSTD_SUFFIX

INLINE_LIMIT = 10_000
TABLE_NAME = "shards.bin"
_V1_FIELDS = [("stored_bytes", "<u8"), ("raw_bytes", "<u8"), ("docs", "<u8"), ("tokens", "<u8"),
              ("xxh3_128", "V16"), ("raw_xxh3_128", "V16")]
RECORD = np.dtype(_V1_FIELDS)
RECORD_V11 = np.dtype([*_V1_FIELDS, ("meta_bytes", "<u8"), ("block_size", "<u8"), ("meta_xxh3_128", "V16")])
RECORDS = {RECORD.itemsize: RECORD, RECORD_V11.itemsize: RECORD_V11}
#: The per-shard fields of format v1.1 (absent, or 0 and "", for a v1 shard).
BLOCK_FIELDS = ("meta_bytes", "block_size", "meta_xxh3_128")


def pattern_name(index: int, compressed: bool) -> str:
    return f"shard-{index:05d}{ZSTD_SUFFIX if compressed else RAW_SUFFIX}"


def _digest_bytes(hexes: Sequence[str]) -> np.ndarray:
    return np.frombuffer(bytes.fromhex("".join(hexes)), dtype="V16") if hexes else np.zeros(0, "V16")


@dataclass(frozen=True)
class ShardInfo:
    """One shard as recorded in the manifest."""

    name: str
    stored_bytes: int
    raw_bytes: int
    docs: int
    tokens: int
    xxh3_128: str
    raw_xxh3_128: str
    meta_bytes: int = 0  #: v1.1: size of the metadata section [0, meta_bytes); 0 for v1
    meta_xxh3_128: str = ""  #: v1.1: xxh3-128 of the metadata section
    block_size: int = 0  #: v1.1: bytes per block (zstd: raw bytes per frame)

    @property
    def compressed(self) -> bool:
        return self.name.endswith(ZSTD_SUFFIX)

    @property
    def has_block_table(self) -> bool:
        return self.meta_bytes > 0

    def to_dict(self) -> dict[str, object]:
        """The manifest entry: a v1 shard's has no block fields, so v1 manifests are unchanged."""
        d = asdict(self)
        if not self.meta_bytes:
            for key in BLOCK_FIELDS:
                del d[key]
        return d


class ShardTable(Sequence[ShardInfo]):
    """Per-shard columns; indexing gives a :class:`ShardInfo`."""

    def __init__(self, records: np.ndarray, names: Sequence[str] | None, compressed: bool) -> None:
        self.records = records
        self._names = list(names) if names is not None else None
        self.compressed = compressed

    @classmethod
    def from_infos(cls, infos: Sequence[ShardInfo], compressed: bool) -> ShardTable:
        blocks = any(s.meta_bytes for s in infos)
        records = np.zeros(len(infos), dtype=RECORD_V11 if blocks else RECORD)
        for field in ("stored_bytes", "raw_bytes", "docs", "tokens"):
            records[field] = [getattr(s, field) for s in infos]
        records["xxh3_128"] = _digest_bytes([s.xxh3_128 for s in infos])
        records["raw_xxh3_128"] = _digest_bytes([s.raw_xxh3_128 for s in infos])
        if blocks:
            records["meta_bytes"] = [s.meta_bytes for s in infos]
            records["block_size"] = [s.block_size for s in infos]
            records["meta_xxh3_128"] = _digest_bytes([s.meta_xxh3_128 or "0" * 32 for s in infos])
        return cls(records, [s.name for s in infos], compressed)

    @property
    def has_block_fields(self) -> bool:
        """Whether the records carry the v1.1 columns."""
        return self.records.dtype.names is not None and "meta_bytes" in self.records.dtype.names

    def __len__(self) -> int:
        return len(self.records)

    def name(self, index: int) -> str:
        return self._names[index] if self._names is not None else pattern_name(index, self.compressed)

    def __getitem__(self, index: int) -> ShardInfo:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"shard {index} out of range for {len(self)} shards")
        index %= len(self)
        r = self.records[index]
        extra: tuple[int, str, int] = (0, "", 0)
        if self.has_block_fields and int(r["meta_bytes"]):
            extra = (int(r["meta_bytes"]), bytes(r["meta_xxh3_128"]).hex(), int(r["block_size"]))
        return ShardInfo(self.name(index), int(r["stored_bytes"]), int(r["raw_bytes"]), int(r["docs"]),
                         int(r["tokens"]), bytes(r["xxh3_128"]).hex(), bytes(r["raw_xxh3_128"]).hex(),
                         *extra)

    def __iter__(self) -> Iterator[ShardInfo]:
        return (self[i] for i in range(len(self)))

    def column(self, field: str) -> np.ndarray:
        """A count column (stored_bytes, raw_bytes, docs, tokens) as int64."""
        return self.records[field].astype(np.int64)

    @property
    def uses_pattern(self) -> bool:
        return self._names is None or all(n == pattern_name(i, self.compressed)
                                           for i, n in enumerate(self._names))
