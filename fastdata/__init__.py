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

__version__ = "0.1.0"

__all__ = [
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
    "__version__",
    "open_dataset",
]
