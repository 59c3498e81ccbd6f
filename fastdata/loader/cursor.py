"""Where a stream stands, and where its next iteration starts: the one resume cursor of
``TokenDataset`` and ``fastdata.DataLoader``.

A cursor holds the position ``(epoch, next step)`` that ``state_dict`` saves, and a loaded
state waiting for the next ``iter()``. Positions past an epoch's last step roll over to the
next epoch's step 0, and a loaded state's step is checked against its epoch, here only.

The two users differ in one documented rule, which is the cursor's ``restart`` flag:

* ``fastdata.DataLoader`` (``restart=True``): like torch's DataLoader, every ``iter()``
  starts the next epoch (or ``set_epoch``'s, or a loaded state), even after an early break;
  ``set_epoch`` keeps a loaded state, which wins at the next ``iter()``.
* ``TokenDataset`` (``restart=False``): a new iteration goes on from the position (a
  stock DataLoader's workers start where the dataset in the training process stands,
  ``loader/epoch_share.py``); ``set_epoch`` drops a loaded state.
"""

from __future__ import annotations

from collections.abc import Callable

from fastdata.errors import FastdataConfigError, FastdataStateError
from fastdata.loader.state import StreamState

Steps = Callable[[int], int]  #: steps of an epoch


class Cursor:
    """The position of a stream between (and during) iterations."""

    def __init__(self, *, restart: bool) -> None:
        self.restart = restart
        #: (epoch, next step) as delivered so far; with ``restart`` None until an iteration starts
        self.position: tuple[int, int] | None = None if restart else (0, 0)
        self.pending: StreamState | None = None  #: a loaded state, for the next iteration
        self._next_epoch = 0  #: with ``restart``: the epoch the next iteration starts

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise FastdataConfigError(f"epoch must be >= 0, got {epoch}")
        if self.restart:
            self._next_epoch = epoch
        else:
            self.pending, self.position = None, (epoch, 0)

    def load(self, state: StreamState, steps: Steps, slack: int = 0) -> None:
        """Keep ``state`` for the next iteration (:meth:`check` first)."""
        check(state, steps, slack)
        self.pending = state

    def saved(self, steps: Steps) -> tuple[int, int]:
        """(epoch, step) a state taken now names, when no loaded state is pending. With
        ``restart`` a position at an epoch's end names the next epoch's start."""
        if not self.restart:
            return self.here
        return rolled(self.position or (self._next_epoch, 0), steps)

    @property
    def here(self) -> tuple[int, int]:
        return self.position or (self._next_epoch, 0)

    def start(self, steps: Steps) -> tuple[int, int, StreamState | None]:
        """Begin an iteration: (epoch, first step, the loaded state it comes from or None).
        With ``restart``, a state taken at the very end of an epoch starts the next one."""
        pending, self.pending = self.pending, None
        if pending is not None:
            epoch, step = pending.epoch, pending.step
        elif self.restart:
            epoch, step = self._next_epoch, 0
        else:
            epoch, step = self.here
        if self.restart:
            epoch, step = rolled((epoch, step), steps)
            self._next_epoch = epoch + 1
        self.position = (epoch, step)
        return epoch, step, pending

    def moved(self, epoch: int, step: int) -> None:
        """The iteration has delivered everything before ``step`` of ``epoch``."""
        self.position = (epoch, step)


def check(state: StreamState, steps: Steps, slack: int = 0) -> None:
    """Refuse a state whose step lies beyond its epoch; ``slack`` allows a worker lane's
    position (up to its number of workers) past the last step.

    Raises:
        FastdataStateError: naming the step and the epoch's length.
    """
    n = steps(state.epoch)
    if state.step > n + slack:
        raise FastdataStateError(
            f"state field 'step' is {state.step} but epoch {state.epoch} has only {n} steps")


def rolled(position: tuple[int, int], steps: Steps) -> tuple[int, int]:
    """``position``, or the next epoch's start when it is at (or past) its epoch's end."""
    epoch, step = position
    return (epoch + 1, 0) if step >= steps(epoch) else (epoch, step)
