"""The output root of a pack or a conversion (``fastdata pack``, ``fastdata import``): the
rule for a dataset already there, the same for both."""

from __future__ import annotations

from fastdata.errors import FastdataConfigError, FastdataFormatError
from fastdata.format.manifest import parse_manifest
from fastdata.format.shard_table import TABLE_NAME
from fastdata.format.spec import MANIFEST_NAME
from fastdata.storage.remote import Store


def check_output(store: Store, overwrite: bool) -> None:
    """Make ``store`` ready to receive a dataset: one already there (its manifest) is refused,
    or with ``overwrite`` removed, manifest first, so that no reader sees one with missing shards.

    Raises:
        FastdataConfigError: a dataset is there and ``overwrite`` is false.
    """
    if store.size(MANIFEST_NAME) is None:
        return
    if not overwrite:
        raise FastdataConfigError(
            f"{store.describe(MANIFEST_NAME)} already exists; pass --overwrite to replace the dataset"
        )
    try:
        old = parse_manifest(store.read_bytes(MANIFEST_NAME), store.describe(MANIFEST_NAME),
                             allow_incomplete=True, read_table=store.read_bytes)
        old_names = [s.name for s in old.shards]
    except FastdataFormatError:
        old_names = []
    store.remove(MANIFEST_NAME)  # first, so that no reader sees a manifest with missing shards
    for name in [*old_names, TABLE_NAME]:
        store.remove(name)
