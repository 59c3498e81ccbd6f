"""A node cache below the order's working set: one warning naming the limit that would hold
it and the shuffle window that fits the given limit; with that window the fit is not tight."""

from __future__ import annotations

import logging
import re

import pytest
from _loader import packed_dataset

import fastdata

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def zstd_data(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("warn")), docs=900, seed=3, compression="zstd")


def test_a_tight_cache_names_the_limit_and_the_window_that_fits(zstd_data, tmp_path, caplog):
    opened = fastdata.open_dataset(zstd_data)
    largest = int(opened.shards.column("raw_bytes").max())
    assert len(opened.shards) > 40
    limit = largest * 11  # holds 10 pinned shards + one in flight: above the minimum (5), below 16 x 2
    with caplog.at_level(logging.WARNING, logger="fastdata.loader.dataset"):
        fastdata.TokenDataset(zstd_data, seq_len=32, batch_size=2, cache_dir=str(tmp_path / "a"),
                              cache_limit=limit, order=fastdata.OrderOptions(partitions=2))
    [message] = [r.getMessage() for r in caplog.records if "holds less than" in r.getMessage()]
    advised, window = re.search(r"; (\d+) bytes or more keeps them, or OrderOptions\(window=(\d+)\) "
                                r"fits this limit", message).groups()
    assert int(advised) > limit and 1 <= int(window) < 16
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastdata.loader.dataset"):
        fitted = fastdata.TokenDataset(zstd_data, seq_len=32, batch_size=2, cache_dir=str(tmp_path / "b"),
                                       cache_limit=limit,
                                       order=fastdata.OrderOptions(partitions=2, window=int(window)))
        wider = fastdata.TokenDataset(zstd_data, seq_len=32, batch_size=2, cache_dir=str(tmp_path / "b"),
                                      cache_limit=limit,
                                      order=fastdata.OrderOptions(partitions=2, window=int(window) + 1))
    assert not fitted.keeps_few_shards and wider.keeps_few_shards  # the named window is the largest that fits
    assert len([r for r in caplog.records if "holds less than" in r.getMessage()]) == 1  # the wider one's
