"""The resumable position of a training stream: small, versioned JSON, checked on load.

A state names the next global step to deliver and everything the order depends on.
Loading a state into a stream whose order would differ (another dataset, seed, global
batch, sequence length, ...) raises :class:`FastdataStateError` naming the field and
both values, instead of silently starting somewhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastdata.errors import FastdataStateError

VERSION = 1
#: Fields of the order's identity, compared on load.
IDENTITY_FIELDS = ("dataset", "seq_len", "mode", "seed", "shuffle", "window", "global_batch",
                   "partitions", "drop_last")


@dataclass(frozen=True)
class StreamState:
    """Where a stream is: ``step`` is the next global step of ``epoch`` to deliver.

    ``lane`` is set only in states taken inside one DataLoader worker (torchdata's
    StatefulDataLoader keeps one per worker): ``[worker, num_workers]``, meaning ``step``
    is that worker's own next step rather than the next step of the whole rank.
    """

    epoch: int
    step: int
    identity: Mapping[str, Any]
    lane: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "epoch": self.epoch, "step": self.step,
                "lane": list(self.lane) if self.lane else None, "identity": dict(self.identity)}


def _int(doc: Mapping[str, Any], key: str, minimum: int = 0) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise FastdataStateError(f"state field {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_state(state: Mapping[str, Any] | str | bytes) -> StreamState:
    """Validate a state dict (or its JSON text) without trusting any of it."""
    if isinstance(state, (str, bytes)):
        try:
            state = json.loads(state)
        except json.JSONDecodeError as e:
            raise FastdataStateError(f"state is not valid JSON (line {e.lineno} column {e.colno}): "
                                     f"{e.msg}") from None
    if not isinstance(state, Mapping):
        raise FastdataStateError(f"state must be a JSON object, got {type(state).__name__}")
    version = state.get("version")
    if version != VERSION:
        raise FastdataStateError(
            f"state field 'version' is {version!r}; this fastdata reads version {VERSION}")
    identity = state.get("identity")
    if not isinstance(identity, Mapping):
        raise FastdataStateError("state field 'identity' is missing or not an object")
    lane = state.get("lane")
    if lane is not None:
        ok = (isinstance(lane, list) and len(lane) == 2 and all(isinstance(x, int) for x in lane)
              and 0 <= lane[0] < lane[1])
        if not ok:
            raise FastdataStateError(f"state field 'lane' must be [worker, num_workers], got {lane!r}")
        lane = (lane[0], lane[1])
    return StreamState(_int(state, "epoch"), _int(state, "step"), dict(identity), lane)


def check_identity(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Raise unless the saved order identity equals the current one, field by field."""
    for key in IDENTITY_FIELDS:
        if saved.get(key) != current.get(key):
            raise FastdataStateError(
                f"cannot resume: state field {key!r} is {saved.get(key)!r} but this stream has "
                f"{current.get(key)!r}; resume with the settings the state was saved with"
            )


def identity_of(**fields: Any) -> dict[str, Any]:
    missing = set(IDENTITY_FIELDS) - fields.keys()
    if missing:
        raise ValueError(f"identity lacks {sorted(missing)}")  # programming error, not input
    return {k: fields[k] for k in IDENTITY_FIELDS}


