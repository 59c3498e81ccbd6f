"""Byte ranges of a remote input, fetched by the pack's main process and read by a worker.

A worker never opens a remote object itself (its credentials stay in the process that
opened the input, ``pack/inputs.py``): it receives the ranges its task needs and reads
them through :class:`SparseFile`, a seekable file over those ranges that refuses to read
anywhere else.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from fastdata.errors import FastdataIOError


@dataclass(frozen=True)
class Fetched:
    """``pieces`` of an object of ``size`` bytes, as ``(offset, bytes)`` in offset order."""

    name: str  #: the object as shown in messages (no credentials)
    size: int
    pieces: tuple[tuple[int, bytes], ...]

    def open(self) -> SparseFile:
        return SparseFile(self)

    def line_offset(self, start: int, n: int) -> int:
        """Byte offset in the object of the ``n``-th (0-based) line of the block at ``start``."""
        for offset, data in self.pieces:
            if offset <= start < offset + len(data):
                pos = start - offset
                for _ in range(n):
                    pos = data.index(b"\n", pos) + 1
                return offset + pos
        return start


class SparseFile(io.RawIOBase):
    """A read-only, seekable file holding only the fetched pieces of an object."""

    def __init__(self, fetched: Fetched) -> None:
        super().__init__()
        self._f, self._pos = fetched, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._f.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all to the end for -1), across pieces."""
        end = self._f.size if size is None or size < 0 else min(self._f.size, self._pos + size)
        out = bytearray()
        while self._pos < end:
            chunk = bytearray(end - self._pos)
            n = self.readinto(chunk)
            if not n:
                break
            out += chunk[:n]
        return bytes(out)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._f.size - self._pos)
        if want <= 0:
            return 0
        for offset, data in self._f.pieces:
            if offset <= self._pos < offset + len(data):
                n = min(want, offset + len(data) - self._pos)
                start = self._pos - offset
                memoryview(buffer)[:n] = data[start:start + n]
                self._pos += n
                return n
        raise FastdataIOError(
            f"{self._f.name}: byte {self._pos} was read but not fetched for this task "
            "(an input format fastdata cannot read in pieces; copy the file locally)")
