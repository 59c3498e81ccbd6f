"""Publishing local files atomically: unique temp file, fsync, rename.

A file appears under its final name only when it is complete, so a crash at any moment
leaves either the old file or the new one (contract 4 in DESIGN.md). Temp files live
in the destination directory as ``.fastdata-tmp.<name>.<pid>.<random>``, are created
with ``O_EXCL | O_NOFOLLOW`` (a pre-created file or symlink is never written through)
and are removed on any error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from typing import BinaryIO

TMP_PREFIX = ".fastdata-tmp."


def temp_name(final_name: str) -> str:
    """A fresh, unpredictable temp name for ``final_name`` owned by this process."""
    return f"{TMP_PREFIX}{final_name}.{os.getpid()}.{secrets.token_hex(6)}"


def fsync_dir(path: str) -> None:
    """Make a rename inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write ``path`` through a temp file that is renamed into place on success.

    Yields:
        A binary file object; the data is fsynced and renamed over ``path`` when the
        ``with`` block ends without an exception, and discarded otherwise.
    """
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, temp_name(name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_output(path) as f:
        f.write(data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(directory: str) -> list[str]:
    """Remove temp files in ``directory`` left by processes that no longer exist.

    Returns:
        The names removed.
    """
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(TMP_PREFIX):
            continue
        parts = name.rsplit(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def is_enospc(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is a full disk or quota."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
