"""Old home of the reader, now :mod:`fastdata.reader`: importing it still works, and warns once."""

import warnings

from fastdata.reader.dataset import Dataset
from fastdata.reader.manifest import load_manifest
from fastdata.reader.open import open_dataset
from fastdata.reader.verify import ShardProblem, verify_dataset

warnings.warn("fastdata.dataset moved to fastdata.reader; import Dataset, open_dataset, load_manifest "
              "and verify_dataset from there (this alias goes in a later release)",
              DeprecationWarning, stacklevel=2)

__all__ = ["Dataset", "ShardProblem", "load_manifest", "open_dataset", "verify_dataset"]
