"""The resumable position of a training stream: small, versioned JSON, checked on load.

A state names the next global step to deliver and everything the order depends on.
Loading a state into a stream whose order would differ (another dataset, seed, global
batch, sequence length, ...) raises :class:`FastdataStateError` naming the field and
both values, instead of silently starting somewhere else.

Version 2 adds ``mixture`` to the states of blends: one entry per source with its id
(manifest fingerprint), a short name, its weight at that step and its cursor (its own
epoch, samples of that epoch consumed, the quota that epoch's order started under), so a
blend can go on under other weights (docs/loader.md, "Changing the mixture"). States
without it are still written (and read) as version 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastdata.errors import FastdataStateError

VERSION = 2
#: Versions this fastdata reads.
READS = (1, 2)
#: Fields of the order's identity, compared on load.
IDENTITY_FIELDS = ("dataset", "seq_len", "mode", "seed", "shuffle", "window", "global_batch",
                   "partitions", "drop_last")


@dataclass(frozen=True)
class SourceCursor:
    """One source's entry in a blend state: where its own stream of epochs stands."""

    id: str  #: the source's manifest fingerprint ("#n" added for its n-th repeat in a blend)
    name: str  #: short name for messages (the last part of its URL)
    weight: float  #: its weight at the state's step
    epoch: int  #: its own epoch
    offset: int  #: samples of that epoch consumed
    quota: int  #: slots per step that epoch's order was started with

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "weight": self.weight, "epoch": self.epoch,
                "offset": self.offset, "quota": self.quota}


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
    mixture: tuple[SourceCursor, ...] | None = None  #: per-source cursors of a blend

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": 1 if self.mixture is None else VERSION, "epoch": self.epoch,
                               "step": self.step, "lane": list(self.lane) if self.lane else None,
                               "identity": dict(self.identity)}
        if self.mixture is not None:
            doc["mixture"] = [c.to_dict() for c in self.mixture]
        return doc


#: Bounds on a state's integers (a state is untrusted input): steps and offsets far above any
#: real dataset, and an epoch low enough that ``epoch << 40`` sample ids stay below 2**63.
MAX_STEP, MAX_EPOCH = 1 << 48, 1 << 22


def _int(doc: Mapping[str, Any], key: str, minimum: int = 0, where: str = "") -> int:
    value = doc.get(key)
    maximum = MAX_EPOCH if key == "epoch" else MAX_STEP
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        name = f"{where}.{key}" if where else key
        raise FastdataStateError(f"state field {name!r} must be an integer from {minimum} to {maximum}, "
                                 f"got {value!r}")
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
    if version not in READS or isinstance(version, bool):
        raise FastdataStateError(
            f"state field 'version' is {version!r}; this fastdata reads versions {list(READS)}")
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
    mixture = _mixture(state.get("mixture")) if version >= 2 else None
    return StreamState(_int(state, "epoch"), _int(state, "step"), dict(identity), lane, mixture)


def _mixture(entries: Any) -> tuple[SourceCursor, ...] | None:
    if entries is None:
        return None
    if not isinstance(entries, list) or not entries:
        raise FastdataStateError(f"state field 'mixture' must be a list of sources, got {entries!r}")
    out = []
    for i, doc in enumerate(entries):
        where = f"mixture[{i}]"
        if not isinstance(doc, Mapping):
            raise FastdataStateError(f"state field {where!r} must be an object, got {doc!r}")
        ident, name, weight = doc.get("id"), doc.get("name"), doc.get("weight")
        if not isinstance(ident, str) or not isinstance(name, str):
            raise FastdataStateError(f"state field '{where}.id' / '{where}.name' must be strings")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
            raise FastdataStateError(f"state field '{where}.weight' must be a number >= 0, got {weight!r}")
        out.append(SourceCursor(ident, name, float(weight), _int(doc, "epoch", where=where),
                                _int(doc, "offset", where=where), _int(doc, "quota", 1, where)))
    if len({c.id for c in out}) != len(out):
        raise FastdataStateError("state field 'mixture' names a source twice")
    return tuple(out)


def check_identity(saved: Mapping[str, Any], current: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Raise unless the saved order identity equals the current one, field by field
    (but the fields in ``skip``)."""
    for key in IDENTITY_FIELDS:
        if key not in skip and saved.get(key) != current.get(key):
            raise FastdataStateError(
                f"cannot resume: state field {key!r} is {saved.get(key)!r} but this stream has "
                f"{current.get(key)!r}; resume with the settings the state was saved with"
            )


def identity_of(**fields: Any) -> dict[str, Any]:
    missing = set(IDENTITY_FIELDS) - fields.keys()
    if missing:
        raise ValueError(f"identity lacks {sorted(missing)}")  # programming error, not input
    return {k: fields[k] for k in IDENTITY_FIELDS}


