"""``fastdata verify``: re-hash every shard of a dataset and open each raw shard once."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastdata.errors import FastdataError, FastdataIntegrityError
from fastdata.format.blocks import check_meta, verify_blocks
from fastdata.format.manifest import Manifest, ShardInfo
from fastdata.reader.dataset import Dataset
from fastdata.reader.files import check_file
from fastdata.reader.manifest import load_manifest
from fastdata.storage.remote import Store


@dataclass(frozen=True)
class ShardProblem:
    name: str
    message: str


def verify_dataset(
    url: str, *, storage_options: Mapping[str, Any] | None = None
) -> tuple[Manifest, list[ShardProblem]]:
    """Re-hash every shard of the dataset at ``url`` and open each raw shard once.

    Returns:
        The manifest and one problem per bad shard (empty when all is well).
    """
    store = Store(url, storage_options)
    manifest = load_manifest(store)
    problems = []
    # A fresh directory, so that remote and compressed shards are fetched and re-hashed.
    with tempfile.TemporaryDirectory(prefix="fastdata-verify-") as scratch:
        dataset = Dataset(store, manifest, scratch)
        for i, info in enumerate(manifest.shards):
            blocks = ""  # v1.1: the metadata section, and locally every block
            if info.has_block_table and store.size(info.name) == info.stored_bytes:
                blocks = _bad_blocks(store, info, every_block=store.local)
            try:
                if store.local:
                    check_file(store.path(info.name), info.stored_bytes, info.xxh3_128,
                               store.describe(info.name))
                if not blocks:
                    dataset.shard(i)  # copies are hash-checked on the way in
            except FastdataIntegrityError as e:
                if not blocks and info.has_block_table and not store.local:
                    blocks = _bad_blocks(store, info, every_block=True)  # name the bad blocks
                problems.append(ShardProblem(info.name, "; ".join(m for m in (blocks, str(e)) if m)))
            except (FastdataError, OSError) as e:
                problems.append(ShardProblem(info.name, "; ".join(m for m in (blocks, str(e)) if m)))
            else:
                if blocks:
                    problems.append(ShardProblem(info.name, blocks))
        dataset.close()
    return manifest, problems


def _bad_blocks(store: Store, info: ShardInfo, *, every_block: bool) -> str:
    """Check a v1.1 shard's metadata section against the manifest and, with ``every_block``,
    each block against its hash; what is wrong ("" when nothing is)."""
    def read(start: int, end: int) -> bytes:
        return store.read_range(info.name, start, end)

    try:
        table = check_meta(read(0, info.meta_bytes), info)
        bad = verify_blocks(read, table) if every_block else []
    except (FastdataError, OSError) as e:
        return str(e)
    if not bad:
        return ""
    shown = "; ".join(b.message for b in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return f"{len(bad)} of {len(table)} blocks are bad: {shown}{more}"
