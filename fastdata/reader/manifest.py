"""Loading a dataset's manifest: read directly from a local store; from a remote one,
through the node's copy (fetched once per node, revalidated by one HEAD of its ETag,
:mod:`fastdata.storage.manifest_copies`)."""

from __future__ import annotations

import logging

from fastdata.errors import FastdataFormatError
from fastdata.format.manifest import Manifest, parse_manifest
from fastdata.format.spec import MANIFEST_NAME
from fastdata.storage.download import retrying
from fastdata.storage.manifest_copies import ManifestCopies
from fastdata.storage.remote import Store

log = logging.getLogger(__name__)


def load_manifest(store: Store, cache_root: str | None = None) -> Manifest:
    """Read and validate the manifest of the dataset at ``store``.

    Args:
        store: the dataset root.
        cache_root: a node cache root. For a remote store, the manifest (and its shard table)
            is then kept there and revalidated with one HEAD of the manifest's ETag, so the
            processes of a node download it once, and again only when it changes
            (:mod:`fastdata.storage.manifest_copies`). Local stores are read directly.

    Raises:
        FastdataFormatError: the manifest is missing, incomplete or invalid.
        FastdataDownloadError: it could not be read within the retry budget.
    """
    where = store.describe(MANIFEST_NAME)
    if store.local:
        if store.size(MANIFEST_NAME) is None:
            raise _no_manifest(where)
        return parse_manifest(store.read_bytes(MANIFEST_NAME), where, read_table=store.map_bytes)
    etag = retrying(where, lambda: _etag(store, where))  # one HEAD; also says whether it exists
    copies = ManifestCopies.at(cache_root, store.display) if cache_root and etag else None
    if copies is None:
        return parse_manifest(_fetch(store, MANIFEST_NAME), where, read_table=lambda n: _fetch(store, n))
    cached = copies.load(etag)
    if cached is None:
        with copies.locked():
            cached = copies.load(etag)  # another process of the node may have fetched it meanwhile
            if cached is None:
                return _fetch_and_keep(store, copies, etag)
    try:
        return parse_manifest(cached, where, read_table=lambda n: _kept_table(store, copies, n))
    except FastdataFormatError as e:  # a damaged copy: fetch as if there were none
        log.warning("dropping the node's copy of %s: %s", where, e)
        with copies.locked():
            return _fetch_and_keep(store, copies, etag)


def _no_manifest(where: str) -> FastdataFormatError:
    return FastdataFormatError(
        f"{where} does not exist: not a fastdata dataset, or its pack has not finished")


def _etag(store: Store, where: str) -> str:
    try:
        return store.etag(MANIFEST_NAME) or ""
    except FileNotFoundError:
        raise _no_manifest(where) from None


def _fetch(store: Store, name: str) -> bytes:
    """A small object read whole, retried like shards."""
    return retrying(store.describe(name), lambda: store.read_bytes(name))


def _fetch_and_keep(store: Store, copies: ManifestCopies, etag: str) -> Manifest:
    tables: dict[str, bytes] = {}

    def table(name: str) -> bytes:
        tables[name] = _fetch(store, name)
        return tables[name]

    text = _fetch(store, MANIFEST_NAME)  # after the ETag: a change in between is fetched again later
    manifest = parse_manifest(text, store.describe(MANIFEST_NAME), read_table=table)
    for name, data in tables.items():  # checked by parse_manifest; kept before the manifest copy
        copies.save_table(name, data)
    copies.save(etag, text)
    return manifest


def _kept_table(store: Store, copies: ManifestCopies, name: str) -> bytes:
    """The node's copy of a manifest's shard table, fetched and kept when there is none
    (parse_manifest checks its size and hash either way)."""
    data = copies.load_table(name)
    if data is None:
        data = _fetch(store, name)
        copies.save_table(name, data)
    return data
