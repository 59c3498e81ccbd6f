"""Test hooks: deterministic kill points for crash tests (ACCEPTANCE.md, "Deterministic kill
points") and injected delays (``delay_point``).

``FASTDATA_TEST_PAUSE=<site>:<n>`` makes the n-th (1-based) arrival at ``site`` write
``<site>.ready`` into ``FASTDATA_TEST_PAUSE_DIR`` (default: the working directory) and
block until the test kills the process. Unset, a pause point costs one dict lookup.
"""

from __future__ import annotations

import errno
import os
import time
from collections import Counter

_hits: Counter[str] = Counter()
_written: Counter[str] = Counter()


def pause_point(site: str) -> None:
    wanted = os.environ.get("FASTDATA_TEST_PAUSE")
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name != site:
        return
    _hits[site] += 1
    if _hits[site] != int(count or 1):
        return
    directory = os.environ.get("FASTDATA_TEST_PAUSE_DIR", ".")
    with open(os.path.join(directory, f"{site}.ready"), "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(3600)


def delay_point(site: str) -> None:
    """``FASTDATA_TEST_DELAY=<site>:<seconds>`` makes every arrival at ``site`` sleep that long
    (a slow stage on purpose). Sites: ``gather`` (each batch assembly, on the thread or worker
    process that assembles; see docs/metrics.md). Unset, it costs one dict lookup."""
    wanted = os.environ.get("FASTDATA_TEST_DELAY")
    if not wanted:
        return
    name, _, seconds = wanted.partition(":")
    if name == site:
        time.sleep(float(seconds))


def disk_point(site: str, nbytes: int) -> None:
    """``FASTDATA_TEST_ENOSPC=<site>:<bytes>`` makes a write of ``nbytes`` at ``site`` fail with
    ``ENOSPC`` once this process has written more than ``<bytes>`` there: a full disk on
    machines where a small filesystem cannot be mounted. Sites: ``download`` (each ranged
    write of a download), ``decompress`` (each block of a zstd shard written out). Unset, it
    costs one dict lookup."""
    wanted = os.environ.get("FASTDATA_TEST_ENOSPC")
    if not wanted:
        return
    name, _, limit = wanted.partition(":")
    if name != site:
        return
    _written[site] += nbytes
    if _written[site] > int(limit):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
