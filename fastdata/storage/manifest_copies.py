"""Node-local copies of remote manifests, so that the ranks of a node fetch each one once.

A copy lives at ``<cache root>/.fastdata-cache.manifests/<key>.manifest``, where ``key`` is the
xxh3-128 of the store's redacted URL; the file holds the object's ETag on its first line and
the manifest's bytes after it, so the pair is replaced in one atomic rename. A dataset's
binary shard table (``shards.bin``) is kept beside it as ``<key>.shards.bin``; its size and
hash are in the manifest, so the reader checks it like any other copy.

A copy is never used on trust: the caller asks the store for the object's current ETag (one
HEAD) and uses the copy only when it matches. The ETag is read *before* the bytes are
fetched, so a manifest replaced in between is stored under its older ETag and fetched
again next time, never the other way round. Processes that miss at the same moment take
an advisory ``flock`` on the directory in turn, and all but the first find the copy the
first one wrote; the lock only saves duplicate downloads (when it cannot be had, each
process fetches for itself).

Like the cache's LMDB files these copies are bookkeeping, not counted against
``cache_limit``; the leading dot keeps the directory apart from the cache's namespaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
from collections.abc import Iterator

import xxhash

from fastdata.atomic import atomic_output, sweep_stale_temps

log = logging.getLogger(__name__)

COPIES_DIR = ".fastdata-cache.manifests"
#: Seconds a process waits for another one on the node fetching a manifest before it
#: fetches the manifest itself.
LOCK_WAIT_S = 60.0


class ManifestCopies:
    """The copies of one remote dataset's manifest (and shard table) in a node cache root."""

    def __init__(self, directory: str, display_url: str) -> None:
        self.dir = directory
        self.key = xxhash.xxh3_128_hexdigest(display_url.encode())
        self.manifest_path = os.path.join(directory, f"{self.key}.manifest")

    @classmethod
    def at(cls, cache_root: str, display_url: str) -> ManifestCopies | None:
        """The copies under ``cache_root``; None (with a warning) when the directory cannot be
        made or is not private to this user, and so cannot be trusted."""
        directory = os.path.join(cache_root, COPIES_DIR)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            st = os.lstat(directory)
        except OSError as e:
            log.warning("not keeping manifest copies in %s: %s", directory, e)
            return None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            log.warning("not keeping manifest copies in %s: not a directory owned by this user and "
                        "writable only by it", directory)
            return None
        sweep_stale_temps(directory)
        return cls(directory, display_url)

    def table_path(self, name: str) -> str:
        return os.path.join(self.dir, f"{self.key}.{name}")

    def load(self, etag: str) -> bytes | None:
        """The copied manifest bytes if the copy was taken at ``etag``, else None."""
        try:
            with open(self.manifest_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        stored, sep, body = data.partition(b"\n")
        if not sep or stored.decode("latin-1") != etag:
            return None
        return body

    def save(self, etag: str, manifest: bytes) -> None:
        """Keep ``manifest`` as the copy taken at ``etag`` (its ETag read before its bytes)."""
        if "\n" in etag:
            return  # not a valid ETag; never store what load() could misread
        self._write(self.manifest_path, etag.encode("latin-1") + b"\n" + manifest)

    def load_table(self, name: str) -> bytes | None:
        try:
            with open(self.table_path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def save_table(self, name: str, data: bytes) -> None:
        self._write(self.table_path(name), bytes(data))

    def _write(self, path: str, data: bytes) -> None:
        try:
            with atomic_output(path, mode=0o600) as f:
                f.write(data)
        except OSError as e:  # a full or read-only disk costs a fetch next time, nothing more
            log.warning("could not keep a manifest copy at %s: %s", path, e)

    @contextlib.contextmanager
    def locked(self, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
        """Hold the node-wide lock of this directory (or go on without it after ``wait_s``)."""
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:  # e.g. the cache was wiped meanwhile: go on without the lock
            log.debug("no lock on %s (%s); fetching the manifest without it", self.dir, e)
            yield
            return
        try:
            _flock(fd, self.dir, wait_s)
            _held.add(fd)
            yield
        finally:
            _held.discard(fd)
            os.close(fd)  # releases the lock


# A flock belongs to the open file description, which a fork shares: a child forked while
# another thread holds the lock would keep it for its whole life. The child closes its copies.
_held: set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _flock(fd: int, where: str, wait_s: float) -> None:
    """Exclusive ``flock`` on ``fd``, polled so that a stopped holder cannot block us forever."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                log.warning("another process has held %s for over %.0f s; fetching the manifest anyway",
                            where, wait_s)
                return
            time.sleep(0.02)
        except OSError as e:  # e.g. ENOLCK on some network file systems: the lock is an economy
            log.debug("no lock on %s (%s); fetching the manifest without it", where, e)
            return
