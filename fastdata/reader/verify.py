"""``fastdata verify``: re-hash every shard of a dataset and open each raw shard once."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastdata.errors import FastdataError
from fastdata.format.manifest import Manifest
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
            try:
                if store.local:
                    check_file(store.path(info.name), info.stored_bytes, info.xxh3_128,
                               store.describe(info.name))
                dataset.shard(i)  # copies are hash-checked on the way in
            except (FastdataError, OSError) as e:
                problems.append(ShardProblem(info.name, str(e)))
        dataset.close()
    return manifest, problems
