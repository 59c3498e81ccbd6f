"""The exceptions fastdata raises.

Every error derives from :class:`FastdataError` and from the builtin it resembles, so
``except ValueError`` and ``except OSError`` keep working for callers that do not know
fastdata. Messages name the file, field or byte offset at fault and what to do; they
never contain credentials.
"""

from __future__ import annotations


class FastdataError(Exception):
    """Base class of every exception raised by fastdata."""


class FastdataFormatError(FastdataError, ValueError):
    """A shard, manifest or state file is malformed, truncated or from a newer version."""

    # Set (not defaulted) on errors about one field of a file: the native reader's, and the
    # Megatron index's (``fastdata.megatron.index.format_error``).
    path: str
    field: str
    byte_offset: int


class FastdataIntegrityError(FastdataFormatError):
    """Bytes do not match the size or hash recorded for them."""


class FastdataInputError(FastdataError, ValueError):
    """A corpus record cannot be packed (invalid JSON or UTF-8, missing field, bad token id)."""


class FastdataConfigError(FastdataError, ValueError):
    """An argument or combination of arguments is invalid."""


class FastdataStateError(FastdataError, ValueError):
    """A saved loader state does not fit the dataset or settings it is loaded into."""


class FastdataIOError(FastdataError, OSError):
    """Reading or writing local files or remote storage failed."""


class FastdataDownloadError(FastdataIOError):
    """A remote object could not be fetched within the retry budget."""


class FastdataCacheError(FastdataIOError):
    """The node-local cache cannot hold or publish what is needed."""


class FastdataWorkerError(FastdataError, RuntimeError):
    """A DataLoader worker process stopped or hung past the loader's timeout and was ended."""


__all__ = [
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
]
