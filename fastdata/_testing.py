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

from fastdata import environment

_hits: Counter[str] = Counter()
_written: Counter[str] = Counter()


def _armed(wanted: str | None, site: str) -> str | None:
    """The value after ``<site>:`` when ``wanted`` (a hook variable's value) is ``<site>:<value>``,
    else None."""
    if not wanted:
        return None
    name, _, value = wanted.partition(":")
    return value if name == site else None


def pause_point(site: str) -> None:
    count = _armed(environment.pause_hook(), site)
    if count is None:
        return
    _hits[site] += 1
    if _hits[site] != int(count or 1):
        return
    directory = environment.pause_dir()
    with open(os.path.join(directory, f"{site}.ready"), "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(3600)


def delay_point(site: str) -> None:
    """``FASTDATA_TEST_DELAY=<site>:<seconds>`` makes every arrival at ``site`` sleep that long
    (a slow stage on purpose). Sites: ``gather`` (each batch assembly, on the thread or worker
    process that assembles; see docs/metrics.md). Unset, it costs one dict lookup."""
    seconds = _armed(environment.delay_hook(), site)
    if seconds is not None:
        time.sleep(float(seconds))


def disk_point(site: str, nbytes: int) -> None:
    """``FASTDATA_TEST_ENOSPC=<site>:<bytes>`` makes a write of ``nbytes`` at ``site`` fail with
    ``ENOSPC`` once this process has written more than ``<bytes>`` there: a full disk on
    machines where a small filesystem cannot be mounted. Sites: ``download`` (each ranged
    write of a download), ``decompress`` (each block of a zstd shard written out). Unset, it
    costs one dict lookup."""
    limit = _armed(environment.enospc_hook(), site)
    if limit is None:
        return
    _written[site] += nbytes
    if _written[site] > int(limit):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
