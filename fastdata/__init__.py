"""fastdata: token-native shards and a streaming dataset that keeps accelerators fed.

Everything but the errors and ``World`` is imported on first use: the training classes
(``TokenDataset``, ``DataLoader``, ``OrderOptions``) need torch, the reader (``Dataset``,
``open_dataset``) the native extension, so ``fastdata pack``, the tools and any
``import fastdata.<layer>`` start without loading either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fastdata._version import __version__
from fastdata.errors import (
    FastdataCacheError,
    FastdataConfigError,
    FastdataDownloadError,
    FastdataError,
    FastdataFormatError,
    FastdataInputError,
    FastdataIntegrityError,
    FastdataIOError,
    FastdataStateError,
    FastdataWorkerError,
)
from fastdata.world import World

if TYPE_CHECKING:
    from fastdata.config import CacheConfig, StorageConfig
    from fastdata.loader.batch import SampleConfig
    from fastdata.loader.dataloader import DataLoader
    from fastdata.loader.dataset import OrderOptions, Source, TokenDataset
    from fastdata.reader import Dataset, open_dataset

_LAZY = {
    "Dataset": "fastdata.reader",
    "open_dataset": "fastdata.reader",
    "CacheConfig": "fastdata.config",
    "StorageConfig": "fastdata.config",
    "SampleConfig": "fastdata.loader.batch",
    "DataLoader": "fastdata.loader.dataloader",
    "OrderOptions": "fastdata.loader.dataset",
    "Source": "fastdata.loader.dataset",
    "TokenDataset": "fastdata.loader.dataset",
    "pack": "fastdata.pack",  # a callable package: fastdata.pack(inputs, output, **options)
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastdata' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CacheConfig",
    "DataLoader",
    "Dataset",
    "FastdataCacheError",
    "FastdataConfigError",
    "FastdataDownloadError",
    "FastdataError",
    "FastdataFormatError",
    "FastdataIOError",
    "FastdataInputError",
    "FastdataIntegrityError",
    "FastdataStateError",
    "FastdataWorkerError",
    "OrderOptions",
    "SampleConfig",
    "Source",
    "StorageConfig",
    "TokenDataset",
    "World",
    "__version__",
    "open_dataset",
    "pack",
]
