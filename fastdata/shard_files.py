"""Old home of the shard files, now :mod:`fastdata.reader.files`: importing it still works,
and warns once. Its ``ShardFiles`` class is now ``FastdataFiles`` (``ShardFiles`` names the
interface every format implements)."""

import warnings

from fastdata.reader.files import (
    FastdataFiles,
    Release,
    check_file,
    count_use,
    counted_fill,
    default_cache_dir,
    mismatch,
    node_cache,
)

ShardFiles = FastdataFiles

warnings.warn("fastdata.shard_files moved to fastdata.reader.files (its ShardFiles class is now "
              "FastdataFiles); this alias goes in a later release", DeprecationWarning, stacklevel=2)

__all__ = ["FastdataFiles", "Release", "ShardFiles", "check_file", "count_use", "counted_fill",
           "default_cache_dir", "mismatch", "node_cache"]
