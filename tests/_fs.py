"""Shared test helpers for what a test observes from outside: bytes on disk, a disk-usage
monitor, the exactly-once check on delivered sample ids, and a fault proxy that stops itself.

Child processes started as ``python -P tests/_x.py`` do not have ``tests/`` on ``sys.path``,
so the workers keep their own copies; the test modules import these.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator

from _faultproxy import FaultProxy

#: The node cache's bookkeeping (LMDB and the manifest copies): not shard files, not counted
#: by the cache limit.
BOOKKEEPING = ".fastdata-cache"


def du(path: str, skip: str = BOOKKEEPING, *, allocated: bool = False) -> int:
    """Bytes of the files under ``path`` (temp files included), leaving out every directory
    whose name starts with ``skip``; a file removed while walking counts as 0. ``allocated``:
    the bytes the disk holds for them (``st_blocks``), the measure for sparse files."""
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(skip)]
        for n in files:
            try:
                st = os.lstat(os.path.join(root, n))
            except FileNotFoundError:
                continue
            total += st.st_blocks * 512 if allocated else st.st_size
    return total


class DiskMonitor:
    """Samples ``du`` of each directory every ~5 ms from a background thread and keeps the
    peak of each. ``with DiskMonitor([a, b]) as m: ...`` then ``m.peaks`` (``m.peak`` for one
    directory) and ``m.samples`` (rounds taken over all the directories)."""

    def __init__(self, paths: Iterable[str], interval: float = 0.005, *, allocated: bool = False) -> None:
        self.paths, self.allocated = [str(p) for p in paths], allocated
        self.peaks, self.samples, self.interval = [0] * len(self.paths), 0, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="disk-monitor")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, p in enumerate(self.paths):
                self.peaks[i] = max(self.peaks[i], du(p, allocated=self.allocated))
            self.samples += 1
            time.sleep(self.interval)

    @property
    def peak(self) -> int:
        return max(self.peaks)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join()
        return self.peaks

    def __enter__(self) -> DiskMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _some(ids: Iterable[int], n: int = 10) -> list[int]:
    return sorted(ids)[:n]


def assert_exactly_once(batches: Iterable[Iterable[int]], m: int, global_batch: int,
                        drop_last: bool = True, pad: int = -1) -> None:
    """The sample ids of ``batches`` (gathered across ranks, workers and restarts) are in
    ``range(m)`` and each seen exactly once. With ``drop_last`` there is no padding and only
    the last partial global batch is unused (``m - m % global_batch`` ids); without it every
    id of ``range(m)`` is there and the last global batch is filled with ``(-m) % global_batch``
    pads."""
    ids = [int(i) for batch in batches for i in batch]
    real = Counter(i for i in ids if i != pad)
    outside = [i for i in real if not 0 <= i < m]
    assert not outside, f"sample ids out of range(0, {m}): {_some(outside)}"
    duplicated = {i: c for i, c in real.items() if c > 1}
    assert not duplicated, f"samples seen more than once: {dict(list(duplicated.items())[:10])}"
    if drop_last:
        assert pad not in ids, f"{ids.count(pad)} pads with drop_last"
        want = m - m % global_batch
        assert len(real) == want, (
            f"{len(real)} distinct samples, expected {want} (all but the last partial global batch of "
            f"{m % global_batch}); not seen: {_some(set(range(m)) - set(real))}")
    else:
        missing, extra = set(range(m)) - set(real), set(real) - set(range(m))
        assert real == Counter(range(m)), f"missing {_some(missing)} ({len(missing)}), extra {_some(extra)}"
        assert ids.count(pad) == (-m) % global_batch, f"{ids.count(pad)} pads, expected {(-m) % global_batch}"


@contextlib.contextmanager
def proxied(port: int, proxy: type[FaultProxy] = FaultProxy) -> Iterator[FaultProxy]:
    """A started fault proxy (``proxy``, FaultProxy or a subclass) in front of
    ``127.0.0.1:port``, stopped when the block ends."""
    p = proxy(port).start()
    try:
        yield p
    finally:
        p.stop()
