"""The cache fit (``fastdata/loader/cache_fit.py``) as a table: pins per process, the
minimum, the advised limit, the prefetch room and when the fit is tight."""

from __future__ import annotations

import re

import pytest

from fastdata.errors import FastdataConfigError
from fastdata.loader.cache_fit import (
    CACHED_OPEN_SHARDS,
    fit,
    fitting_window,
    minimum_limit,
    working_set,
)

pytestmark = pytest.mark.timeout(10)
MB = 1 << 20


#: (limit, largest shard, ranks, working set, workers) -> (per process, minimum, advised, room, tight)
@pytest.mark.parametrize(("given", "expected"), [(row[:5], row[5:]) for row in [
    # one rank, a working set of 8 shards of 1 MB: 9 MB keeps it all pinned
    (9 * MB, MB, 1, 8, 1, 8, 5 * MB, 9 * MB, MB, False),
    # one byte less: the minimum pins (4), tight, the rest is prefetch room
    (9 * MB - 1, MB, 1, 8, 1, 4, 5 * MB, 9 * MB, 5 * MB - 1, True),
    # exactly the minimum for 2 ranks: 2 x 4 + 1 shards
    (9 * MB, MB, 2, 8, 1, 4, 9 * MB, 17 * MB, MB // 2, True),
    # a working set below the minimum pins still pins the minimum
    (100 * MB, MB, 1, 2, 1, CACHED_OPEN_SHARDS, 5 * MB, 5 * MB, 96 * MB, False),
    # worker processes count as readers: 1 rank x 3 workers
    (13 * MB, MB, 1, 8, 3, 4, 13 * MB, 25 * MB, MB // 3, True),
    (25 * MB, MB, 1, 8, 3, 8, 13 * MB, 25 * MB, MB // 3, False),
]])
def test_fit(given, expected):
    limit, largest, ranks, working, workers = given
    got = fit(limit, largest, ranks, working, workers)
    assert (got.per_process, got.minimum, got.advised, got.prefetch_room, got.tight) == expected
    assert got.minimum == minimum_limit(largest, ranks * workers)


@pytest.mark.parametrize(("limit", "ranks", "workers", "who"), [
    (5 * MB - 1, 1, 1, "1 rank(s) on this node"),
    (13 * MB - 1, 1, 3, "1 rank(s) x 3 worker processes"),
    (9 * MB - 1, 2, 1, "2 rank(s) on this node"),
])
def test_below_the_minimum_is_refused_naming_it(limit, ranks, workers, who):
    with pytest.raises(FastdataConfigError, match=re.escape(who) + rf".* use at least {limit + 1} bytes"):
        fit(limit, MB, ranks, 8, workers)


def test_the_fit_module_needs_no_torch():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-P", "-c", "import sys, fastdata.loader.cache_fit, "
                          "fastdata.doctor.cache; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


#: (shards, partitions, global batch, micro-batch, window, shuffle) -> working set (shards)
@pytest.mark.parametrize(("args", "expected"), [
    ((100, 8, 8, 8, 16, True), 100),  # 8 partitions x blocks of 14 (100/8 + 1): capped at all 100
    ((100, 8, 8, 8, 4, True), 8 * 4),  # the window bounds each partition's block
    ((100, 8, 8, 8, 4, False), 8 * 2),  # unshuffled: the current shard and the next of each
    ((10, 64, 64, 1, 16, True), 2 * 2),  # one slot per partition: two partitions, 2 shards each
    ((6, 2, 2, 2, None, True), 6),  # the whole dataset
])
def test_working_set(args, expected):
    assert working_set(*args) == expected


def test_fitting_window_is_the_largest_window_whose_working_set_the_limit_holds():
    shards, partitions, g, micro = 100, 2, 2, 2  # working set = 2 partitions x window (capped at 51)
    for window in (3, 8, 20):
        advised = MB * (1 * max(CACHED_OPEN_SHARDS, 2 * window) + 1)
        assert fitting_window(advised, MB, 1, shards, partitions, g, micro) == window
        assert fitting_window(advised - 1, MB, 1, shards, partitions, g, micro) == window - 1
    assert fitting_window(MB * (2 * CACHED_OPEN_SHARDS + 1), MB, 2, shards, partitions, g, micro) == 2
    assert fitting_window(MB * (2 * CACHED_OPEN_SHARDS + 1) - 1, MB, 2, shards, partitions, g, micro) is None
