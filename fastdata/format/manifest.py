"""The dataset manifest: what a packed dataset holds and how to check it.

A manifest is plain JSON (see ``docs/format.md``). :func:`parse_manifest` validates
everything a reader relies on before any shard is touched: the format version, the
tokenizer identity, and every shard entry (a safe relative name, non-negative sizes,
hashes). A bad manifest raises :class:`FastdataFormatError` naming the source and the
field or JSON position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import xxhash

from fastdata.errors import FastdataFormatError
from fastdata.format import shard_table
from fastdata.format.shard_table import RECORD, RECORD_V11, RECORDS, TABLE_NAME, ShardInfo, ShardTable
from fastdata.format.spec import DTYPE_CODES, MANIFEST_NAME, MAX_BLOCK_SIZE, RAW_SUFFIX, VERSION, ZSTD_SUFFIX

_HEX128 = re.compile(r"^[0-9a-f]{32}$")
_MAX_NAME = 255
#: Largest size or count a manifest field may hold (256 TiB, 2.8e14 tokens per shard): far
#: above any real shard, far below where int64 arithmetic on sums and offsets overflows.
MAX_COUNT = 1 << 48
#: Largest total (over all shards) of a size or count column.
MAX_TOTAL = 1 << 62
_COUNTED = ("stored_bytes", "raw_bytes", "docs", "tokens")
COMPRESSIONS = (None, "zstd")
TOKENIZER_KINDS = ("bytes", "huggingface", "tiktoken", "pretokenized")


@dataclass(frozen=True)
class TokenizerInfo:
    """Identity of the tokenizer that produced a dataset."""

    kind: str
    name: str
    vocab_size: int
    eos_id: int | None
    bos_id: int | None
    fingerprint: str


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest."""

    dtype: str
    has_loss_mask: bool
    compression: str | None
    tokenizer: TokenizerInfo
    shards: ShardTable
    provenance: Mapping[str, Any] = field(default_factory=dict)
    complete: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.shards, ShardTable):
            table = ShardTable.from_infos(list(self.shards), self.compression == "zstd")
            object.__setattr__(self, "shards", table)

    @property
    def num_docs(self) -> int:
        return int(self.shards.column("docs").sum())

    @property
    def num_tokens(self) -> int:
        return int(self.shards.column("tokens").sum())

    @property
    def fingerprint(self) -> str:
        """The dataset's identity: xxh3-128 over format, dtype, tokenizer and the shards'
        content hashes in order (not their names: moving a dataset keeps its identity)."""
        h = xxhash.xxh3_128()
        h.update(f"fastdata/{VERSION}/{self.dtype}/{int(self.has_loss_mask)}/{len(self.shards)}/".encode())
        h.update(self.tokenizer.fingerprint.encode())
        h.update(self.shards.records["xxh3_128"].tobytes())
        h.update(self.shards.records["raw_xxh3_128"].tobytes())
        return h.hexdigest()

    def serialize(self, inline_limit: int | None = None) -> tuple[str, bytes | None]:
        """Manifest JSON, plus the binary shard table when there are more than
        ``inline_limit`` shards (default ``INLINE_LIMIT``; written as ``shards.bin`` first)."""
        limit = shard_table.INLINE_LIMIT if inline_limit is None else inline_limit
        if len(self.shards) <= limit:
            return self.to_json(), None
        table = self.shards.records.tobytes()
        ref = {"name": TABLE_NAME, "count": len(self.shards), "bytes": len(table),
               "xxh3_128": xxhash.xxh3_128_hexdigest(table)}
        if self.shards.records.dtype.itemsize != RECORD.itemsize:
            ref["record_bytes"] = self.shards.records.dtype.itemsize
        return self.to_json(table=ref), table

    def to_json(self, table: Mapping[str, Any] | None = None) -> str:
        """Serialise deterministically (sorted keys, fixed separators, trailing newline)."""
        shards = self.shards
        doc = {
            "format": "fastdata",
            "format_version": VERSION,
            "complete": self.complete,
            "dtype": self.dtype,
            "has_loss_mask": self.has_loss_mask,
            "compression": self.compression,
            "tokenizer": asdict(self.tokenizer),
            "totals": {
                "shards": len(shards),
                "docs": self.num_docs,
                "tokens": self.num_tokens,
                "stored_bytes": int(shards.column("stored_bytes").sum()),
                "raw_bytes": int(shards.column("raw_bytes").sum()),
            },
            "fingerprint": self.fingerprint,
            "provenance": dict(self.provenance),
        }
        if table is None:
            doc["shards"] = [s.to_dict() for s in shards]
        else:
            doc["shard_table"] = dict(table)
        return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def validate_shard_name(name: object, where: str) -> str:
    """Return ``name`` if it is a safe file name inside the dataset directory.

    Raises:
        FastdataFormatError: the name could escape the dataset root or is not a shard name.
    """
    if not isinstance(name, str):
        raise FastdataFormatError(f"{where}: shard name must be a string, got {name!r}")
    bad = (
        not name
        or len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME
        or name in (".", "..", MANIFEST_NAME)
        or name.startswith(".")
        or any(c in name for c in "/\\\0:")
        or any(ord(c) < 32 for c in name)
        or not (name.endswith(RAW_SUFFIX) or name.endswith(ZSTD_SUFFIX))
    )
    if bad:
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise FastdataFormatError(
            f"{where}: unsafe or invalid shard name {shown!r}: names must be plain file names "
            f"ending in {RAW_SUFFIX} or {ZSTD_SUFFIX}, without '/', '\\', ':', NUL or a leading '.'"
        )
    return name


def _require(obj: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise FastdataFormatError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise FastdataFormatError(f"{where}: field {key!r} has invalid value {value!r}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _count(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = _require(obj, key, int, where)
    if value < 0:
        raise FastdataFormatError(f"{where}: field {key!r} is negative ({value})")
    if value > MAX_COUNT:
        raise FastdataFormatError(f"{where}: field {key!r} is {value}, above the largest accepted "
                                  f"({MAX_COUNT}); the manifest is corrupt")
    return int(value)


def _digest(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _require(obj, key, str, where)
    if not _HEX128.match(value):
        raise FastdataFormatError(f"{where}: field {key!r} is not a 32-digit hex xxh3-128")
    return str(value)


def _parse_tokenizer(obj: object, where: str) -> TokenizerInfo:
    if not isinstance(obj, dict):
        raise FastdataFormatError(f"{where}: field 'tokenizer' must be an object")
    kind = _require(obj, "kind", str, where)
    if kind not in TOKENIZER_KINDS:
        raise FastdataFormatError(f"{where}: unknown tokenizer kind {kind!r}")
    ids = {k: obj.get(k) for k in ("eos_id", "bos_id")}
    for k, v in ids.items():
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise FastdataFormatError(f"{where}: field {k!r} has invalid value {v!r}")
    return TokenizerInfo(
        kind=kind,
        name=_require(obj, "name", str, where),
        vocab_size=_count(obj, "vocab_size", where),
        eos_id=ids["eos_id"],
        bos_id=ids["bos_id"],
        fingerprint=_require(obj, "fingerprint", str, where),
    )


def _parse_shards(entries: object, where: str) -> list[ShardInfo]:
    if not isinstance(entries, list):
        raise FastdataFormatError(f"{where}: field 'shards' must be a list")
    seen: set[str] = set()
    shards = []
    for i, entry in enumerate(entries):
        here = f"{where}: shards[{i}]"
        if not isinstance(entry, dict):
            raise FastdataFormatError(f"{here} must be an object")
        name = validate_shard_name(entry.get("name"), here)
        if name in seen:
            raise FastdataFormatError(f"{here}: duplicate shard name {name!r}")
        seen.add(name)
        shards.append(
            ShardInfo(
                name=name,
                stored_bytes=_count(entry, "stored_bytes", here),
                raw_bytes=_count(entry, "raw_bytes", here),
                docs=_count(entry, "docs", here),
                tokens=_count(entry, "tokens", here),
                xxh3_128=_digest(entry, "xxh3_128", here),
                raw_xxh3_128=_digest(entry, "raw_xxh3_128", here),
                **_block_fields(entry, here),
            )
        )
    return shards


def _block_fields(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A v1.1 entry's metadata record, or nothing for a v1 entry."""
    if not any(k in entry for k in ("meta_bytes", "meta_xxh3_128", "block_size")):
        return {}
    meta, size = _count(entry, "meta_bytes", where), _count(entry, "block_size", where)
    if not 0 < meta <= entry.get("stored_bytes", 0):
        raise FastdataFormatError(f"{where}: field 'meta_bytes' is {meta}, must be from 1 to the "
                                  "shard's stored_bytes")
    if not 0 < size <= MAX_BLOCK_SIZE:
        raise FastdataFormatError(f"{where}: field 'block_size' is {size}, must be from 1 to "
                                  f"{MAX_BLOCK_SIZE}")
    return {"meta_bytes": meta, "block_size": size,
            "meta_xxh3_128": _digest(entry, "meta_xxh3_128", where)}


def parse_manifest(text: str | bytes, source: str, *, allow_incomplete: bool = False,
                   read_table: Callable[[str], Any] | None = None) -> Manifest:
    """Parse and validate manifest JSON read from ``source`` (used in messages).

    Args:
        text: the manifest JSON.
        source: where it came from, for messages.
        allow_incomplete: accept ``"complete": false`` (pack's own bookkeeping).
        read_table: reads the binary shard table named by a large manifest (bytes or a
            memory map); required for such manifests.

    Raises:
        FastdataFormatError: the JSON is invalid, a field is missing or wrong, a shard
            name is unsafe, or the manifest is marked incomplete.
    """
    try:
        doc = json.loads(text)
    except UnicodeDecodeError as e:
        raise FastdataFormatError(f"{source}: manifest is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise FastdataFormatError(
            f"{source}: invalid manifest JSON at line {e.lineno} column {e.colno} "
            f"(char {e.pos}): {e.msg}"
        ) from None
    if not isinstance(doc, dict):
        raise FastdataFormatError(f"{source}: manifest must be a JSON object")
    if doc.get("format") != "fastdata":
        raise FastdataFormatError(f"{source}: field 'format' is {doc.get('format')!r}, not 'fastdata'")
    version = _require(doc, "format_version", int, source)
    if version > VERSION or version < 1:
        raise FastdataFormatError(
            f"{source}: unsupported format version {version} (this fastdata reads <= {VERSION})"
        )
    complete = _require(doc, "complete", bool, source)
    if not complete and not allow_incomplete:
        raise FastdataFormatError(
            f"{source}: manifest is marked incomplete; the pack that wrote it did not finish "
            "(re-run `fastdata pack` with the same arguments to complete it)"
        )
    dtype = _require(doc, "dtype", str, source)
    if dtype not in DTYPE_CODES:
        raise FastdataFormatError(f"{source}: unknown dtype {dtype!r}")
    compression = doc.get("compression")
    if compression not in COMPRESSIONS:
        raise FastdataFormatError(f"{source}: unknown compression codec {compression!r}")
    manifest = Manifest(
        dtype=dtype,
        has_loss_mask=_require(doc, "has_loss_mask", bool, source),
        compression=compression,
        tokenizer=_parse_tokenizer(doc.get("tokenizer"), source),
        shards=_shard_table(doc, source, compression == "zstd", read_table),
        provenance=doc.get("provenance") or {},
        complete=complete,
    )
    _check_consistency(manifest, doc, source)
    return manifest


def _shard_table(doc: Mapping[str, Any], source: str, compressed: bool,
                 read_table: Callable[[str], Any] | None) -> ShardTable:
    ref = doc.get("shard_table")
    if ref is None:
        return ShardTable.from_infos(_parse_shards(doc.get("shards"), source), compressed)
    where = f"{source}: shard_table"
    if not isinstance(ref, dict):
        raise FastdataFormatError(f"{where} must be an object")
    name = _require(ref, "name", str, where)
    if name != TABLE_NAME:
        raise FastdataFormatError(f"{where}: field 'name' must be {TABLE_NAME!r}, got {name!r}")
    count, size = _count(ref, "count", where), _count(ref, "bytes", where)
    digest = _digest(ref, "xxh3_128", where)
    record_bytes = ref.get("record_bytes", RECORD.itemsize)
    if record_bytes not in RECORDS or isinstance(record_bytes, bool):
        raise FastdataFormatError(f"{where}: field 'record_bytes' is {record_bytes!r}, must be "
                                  f"{RECORD.itemsize} (v1) or {RECORD_V11.itemsize} (v1.1)")
    dtype = RECORDS[record_bytes]
    if size != count * dtype.itemsize:
        raise FastdataFormatError(f"{where}: {count} shards need {count * dtype.itemsize} bytes, "
                                  f"field 'bytes' says {size}")
    if read_table is None:
        raise FastdataFormatError(f"{where}: this manifest keeps its shards in {name}; read it "
                                  "with fastdata.open_dataset")
    data = read_table(name)
    if len(data) != size:
        raise FastdataFormatError(f"{where}: {name} has {len(data)} bytes, expected {size}")
    actual = xxhash.xxh3_128_hexdigest(memoryview(data))
    if actual != digest:
        raise FastdataFormatError(f"{where}: {name} hashes to {actual}, the manifest says {digest}")
    records = np.frombuffer(data, dtype=dtype)
    limits: dict[str, tuple[Any, str]] = {c: (MAX_COUNT, str(MAX_COUNT)) for c in _COUNTED}
    offsets = {c: f[1] for c, f in (dtype.fields or {}).items()}
    if dtype is RECORD_V11:
        limits["block_size"] = (MAX_BLOCK_SIZE, str(MAX_BLOCK_SIZE))
        limits["meta_bytes"] = (records["stored_bytes"], "the shard's stored_bytes")
    for column, (limit, shown) in limits.items():
        bad = np.flatnonzero(records[column] > limit)
        if len(bad):
            i = int(bad[0])
            raise FastdataFormatError(
                f"{where}: {name} record {i} (byte {i * dtype.itemsize + offsets[column]}) "
                f"field {column!r} is {int(records[column][i])}, above the largest accepted ({shown})")
    return ShardTable(records, None, compressed)


def _check_consistency(manifest: Manifest, doc: Mapping[str, Any], source: str) -> None:
    table = manifest.shards
    for column in _COUNTED:  # float sums: an overflowing integer sum would wrap unseen
        total = float(np.sum(table.column(column), dtype=np.float64))
        if total > MAX_TOTAL:
            raise FastdataFormatError(f"{source}: the shards' {column!r} add up to {total:.3g}, above "
                                      f"the largest accepted total ({MAX_TOTAL}); the manifest is corrupt")
    compressed = manifest.compression == "zstd"
    if not table.uses_pattern:
        for i in range(len(table)):
            if table.name(i).endswith(ZSTD_SUFFIX) != compressed:
                raise FastdataFormatError(
                    f"{source}: shard {table.name(i)!r} does not match compression {manifest.compression!r}"
                )
    if not compressed:
        r = table.records
        bad = np.flatnonzero((r["stored_bytes"] != r["raw_bytes"]) | (r["xxh3_128"] != r["raw_xxh3_128"]))
        if len(bad):
            raise FastdataFormatError(
                f"{source}: uncompressed shard {table.name(int(bad[0]))!r} has different stored and "
                "raw size/hash"
            )
    recorded = doc.get("fingerprint")
    if recorded is not None and recorded != manifest.fingerprint:
        raise FastdataFormatError(
            f"{source}: field 'fingerprint' is {recorded!r} but the shards give "
            f"{manifest.fingerprint!r} (the manifest was edited or corrupted)"
        )


__all__ = ["Manifest", "ShardInfo", "ShardTable", "TokenizerInfo", "parse_manifest",
           "validate_shard_name"]
