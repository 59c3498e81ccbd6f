"""fastdata: token-native shards and a streaming dataset that keeps accelerators fed."""

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
)
from fastdata.loader.dataloader import DataLoader
from fastdata.loader.dataset import OrderOptions, TokenDataset
from fastdata.world import World

__version__ = "0.1.0"

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
    "OrderOptions",
    "TokenDataset",
    "World",
    "__version__",
    "open_dataset",
]
