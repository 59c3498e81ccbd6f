"""The reader layer: opening a dataset (choosing its format), loading its manifest through
the node's copy, and getting a verified local file for each shard, memory-mapped by the
native reader. Above it, the loader; below it, ``format`` and ``storage``.

* :mod:`fastdata.reader.open`: ``open_dataset``, the format choice;
* :mod:`fastdata.reader.dataset`: :class:`Dataset`, the open-shard LRU (pins, with a node cache);
* :mod:`fastdata.reader.manifest`: the manifest's loading policy (ETag, node copy, lock);
* :mod:`fastdata.reader.files`: the :class:`ShardFiles` interface and the fastdata shards' one;
* :mod:`fastdata.reader.verify`: ``fastdata verify``.
"""

from fastdata.reader.dataset import Dataset, open_packed
from fastdata.reader.files import FastdataFiles, ShardFiles
from fastdata.reader.manifest import load_manifest
from fastdata.reader.open import open_dataset
from fastdata.reader.verify import ShardProblem, verify_dataset

__all__ = ["Dataset", "FastdataFiles", "ShardFiles", "ShardProblem", "load_manifest", "open_dataset",
           "open_packed", "verify_dataset"]
