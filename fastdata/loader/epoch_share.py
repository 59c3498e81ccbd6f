"""Where a DataLoader worker's copy of a ``TokenDataset`` starts each epoch.

A stock ``torch.utils.data.DataLoader`` with worker processes iterates copies of the
dataset. Without ``persistent_workers`` each ``iter(loader)`` makes fresh copies, so
``set_epoch`` and ``load_state_dict`` in the training process reach them. With
``persistent_workers=True`` the copies are made once, at the first ``iter()``, and torch only
calls ``__iter__`` again in each worker at every later ``iter(loader)``.

So the training process's copy (the *owner*) writes where the next iteration starts into a
small shared record whenever ``set_epoch`` or ``load_state_dict`` is called, and a worker's
copy reads it when ``__iter__`` is called: a persistent worker then starts every epoch
exactly where a fresh worker would. The record is JSON (epoch, step, the last loaded state:
small, no pickle) in an unlinked in-memory file (``memfd``), a bounded size, inherited by a
forked worker and passed as a file descriptor to a spawned one; nothing is left behind.

Rules:
* the record carries a generation; a worker copy adopts it only when the owner wrote it
  after the copy was made, and otherwise restarts from the state the copy was made with;
* ``load_state_dict`` inside a worker (torchdata's ``StatefulDataLoader`` restores each
  worker's state that way) wins for that worker's next iteration;
* an ordinary pickle (not a process start) carries no record: the copy owns a new one.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from multiprocessing import context, reduction
from typing import Any, TypeVar

from fastdata.errors import FastdataStateError
from fastdata.loader.state import parse_state
from fastdata.world import World

#: Bytes the record may take (a state is under 16 KiB; a blend's grows with its sources).
CAPACITY = 1 << 20
_HEADER = struct.Struct("<QQ")  # generation (odd while being written), payload length
_T = TypeVar("_T")


def _new_file() -> int:
    """An unlinked, private file: a memfd where Linux has one, else an unlinked temp file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("fastdata-epoch", os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix="fastdata-epoch-")
    os.unlink(path)
    return fd


class StartShare:
    """The shared start record of one ``TokenDataset`` (see the module docstring)."""

    def __init__(self) -> None:
        self._adopt(_new_file(), os.getpid(), gen=0, last_load=None)

    def _adopt(self, fd: int, owner: int, gen: int, last_load: str | None) -> None:
        self._fd, self._owner, self.gen, self.last_load = fd, owner, gen, last_load
        self._pid: int | None = None  # the process whose copy ``_initial`` describes
        self._initial: tuple[Any, tuple[int, int]] | None = None
        self._local = False  # set_epoch / load_state_dict called in this worker
        weakref.finalize(self, os.close, fd)

    # -------------------------------------------------------------- pickling (process start only)

    def __getstate__(self) -> dict[str, Any]:
        if context.get_spawning_popen() is None:  # an ordinary pickle: no link to this process
            return {"fd": None}
        return {"fd": reduction.DupFd(self._fd), "owner": self._owner, "gen": self.gen,
                "last_load": self.last_load}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["fd"] is None:
            self._adopt(_new_file(), os.getpid(), gen=0, last_load=None)
        else:
            self._adopt(state["fd"].detach(), state["owner"], state["gen"], state["last_load"])

    # -------------------------------------------------------------- the owner's side

    def _in_worker_copy(self, ds: Any) -> bool:
        """Whether this is a copy in a DataLoader worker (it remembers what it was made with)."""
        if self._owner == os.getpid() or not World.in_worker():
            return False
        if self._pid != os.getpid():
            self._pid, self._initial = os.getpid(), (ds.cursor.pending, ds.cursor.position)
        return True

    def _own(self) -> None:
        """A copy forked into a process that is no DataLoader worker starts its own record."""
        if self._owner != os.getpid():
            self._adopt(_new_file(), os.getpid(), gen=0, last_load=self.last_load)

    def set_epoch(self, ds: Any, epoch: int) -> None:
        """``ds.set_epoch(epoch)`` is being called: publish it (a worker keeps it to itself)."""
        if self._in_worker_copy(ds):
            self._local = True
            return
        self._own()
        self._write(None, (epoch, 0))

    def loaded(self, ds: Any, state: Mapping[str, Any] | str) -> None:
        """``ds`` is about to take the (checked) ``state``: publish it, at the position the
        load keeps; a worker copy keeps it for its own next iteration."""
        if self._in_worker_copy(ds):
            self._local = True
            return
        self._own()
        self._write(json.dumps(parse_state(state).to_dict(), separators=(",", ":")), ds.cursor.here)

    def _write(self, load: str | None, position: tuple[int, int]) -> None:
        if load is not None:
            self.last_load = load
        record = {"epoch": position[0], "step": position[1], "pending": load is not None,
                  "load": self.last_load}
        payload = json.dumps(record, separators=(",", ":")).encode()
        if len(payload) > CAPACITY - _HEADER.size:
            raise FastdataStateError(
                f"the state is {len(payload)} bytes; DataLoader workers can be sent at most "
                f"{CAPACITY - _HEADER.size}")
        gen = self.gen + 2
        os.pwrite(self._fd, _HEADER.pack(gen - 1, len(payload)), 0)  # odd: being written
        os.pwrite(self._fd, payload, _HEADER.size)
        os.pwrite(self._fd, _HEADER.pack(gen, len(payload)), 0)
        self.gen = gen

    # -------------------------------------------------------------- a worker's side

    def _header(self) -> tuple[int, int]:
        return _HEADER.unpack(os.pread(self._fd, _HEADER.size, 0).ljust(_HEADER.size, b"\0"))

    def _read(self) -> tuple[int, dict[str, Any] | None]:
        for _ in range(2000):  # a writer between its two header writes: about 1 s at most
            gen, size = self._header()
            if gen % 2:
                time.sleep(0.0005)
                continue
            payload = os.pread(self._fd, size, _HEADER.size)
            if self._header()[0] == gen:
                return gen, json.loads(payload) if gen else None
        raise FastdataStateError("the training process kept rewriting the epoch record; call "
                                 "set_epoch / load_state_dict before iter(loader), not during it")

    def begin(self, ds: Any) -> None:
        """At ``iter(ds)`` in a DataLoader worker: start where the owner's copy stands."""
        if not self._in_worker_copy(ds):
            return
        if self._local:  # this worker's own load (StatefulDataLoader) holds for this iteration
            self._local = False
            return
        gen, record = self._read()
        if record is None or gen == self.gen:  # nothing new since the copy was made
            if self._initial is not None:
                ds.cursor.pending, ds.cursor.position = self._initial
            return
        load, parsed = record["load"], None
        if load is not None and (record["pending"] or load != self.last_load):
            parsed = ds.adopt_state(parse_state(load), ds.resolved_world())  # a blend re-anchors
            self.last_load = load
        ds.cursor.pending = parsed if record["pending"] else None
        ds.cursor.position = (record["epoch"], record["step"])


def starts_from_main(iterate: Callable[[_T], Iterator[Any]]) -> Callable[[_T], Iterator[Any]]:
    """Decorate ``TokenDataset.__iter__``: a worker copy takes the owner's start when
    ``iter()`` is called (torchdata asks a worker's ``state_dict`` before the first item)."""
    @functools.wraps(iterate)
    def __iter__(self: Any) -> Iterator[Any]:
        self._share.begin(self)
        return iterate(self)
    return __iter__
