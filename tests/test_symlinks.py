"""The native reader never opens a shard through a symlink (O_NOFOLLOW), so a cache entry
swapped for a link between the cache's checks and the open is refused, not read; a user's
own local dataset whose files are symlinks is still read (the Python layer resolves those)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from _loader import packed_dataset

import fastdata
from fastdata.format.reader import open_shard

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("links")), docs=120, shard_size=4096)


def test_the_reader_refuses_a_symlinked_shard(dataset, tmp_path):
    real = os.path.join(dataset, "shard-00000.fds")
    link = tmp_path / "shard-00000.fds"
    os.symlink(real, link)
    open_shard(real)  # the file itself opens
    with pytest.raises(fastdata.FastdataIOError, match="shard-00000.fds"):
        open_shard(str(link))


def test_a_local_dataset_made_of_symlinks_is_still_read(dataset, tmp_path):
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in os.listdir(dataset):
        if name.endswith(".fds"):
            os.symlink(os.path.join(dataset, name), linked / name)
        else:
            shutil.copy(os.path.join(dataset, name), linked / name)
    want = [b["input_ids"].numpy() for b in fastdata.TokenDataset(dataset, seq_len=31, batch_size=4)]
    got = [b["input_ids"].numpy() for b in fastdata.TokenDataset(str(linked), seq_len=31, batch_size=4)]
    assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))
