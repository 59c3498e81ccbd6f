"""fastdata: token-native shards and a streaming dataset that keeps accelerators fed.

The training classes (``TokenDataset``, ``DataLoader``, ``OrderOptions``) need torch and are
imported on first use, so ``fastdata pack`` and other tools start without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fastdata.dataset import Dataset, open_dataset
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
    from fastdata.loader.dataloader import DataLoader
    from fastdata.loader.dataset import OrderOptions, Source, TokenDataset

__version__ = "0.1.0"

_LAZY = {
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
    "Source",
    "TokenDataset",
    "World",
    "__version__",
    "open_dataset",
    "pack",
]
