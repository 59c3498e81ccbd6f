"""A blend's mixture as the loader keeps it: weights (or a schedule of them), the cursors a
state records, and what a state saved under another mixture becomes.

The order is :mod:`fastdata.sampling.mixture`'s. Here: the user's schedule is checked and
aligned with the sources, each source gets an id that survives a change of the source list
(its manifest fingerprint), a state's per-source cursors are written and read back, and a
state from another mixture is either refused (naming both) or, with
``allow_mixture_change``, becomes the plan's *anchor*: from the state's step on, every
source the two mixtures share continues from its cursor, a new one starts at its epoch 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastdata.errors import FastdataConfigError, FastdataStateError
from fastdata.loader.state import SourceCursor, StreamState, check_identity
from fastdata.sampling.mixture import Cursor, MixturePlan, epoch_length

Schedule = Sequence[tuple[int, Sequence[float] | Mapping[Any, float]]]


def source_ids(fingerprints: Sequence[str]) -> list[str]:
    """One id per source: its fingerprint, with ``#n`` for its n-th repeat in the list."""
    seen: dict[str, int] = {}
    out = []
    for fp in fingerprints:
        n = seen.get(fp, 0)
        seen[fp] = n + 1
        out.append(fp if n == 0 else f"{fp}#{n}")
    return out


def _aligned(weights: Sequence[float] | Mapping[Any, float], urls: Sequence[str], step: int) -> list[float]:
    """Weights of one schedule entry, one per source (a list, or a mapping by URL or index)."""
    if not isinstance(weights, Mapping):
        out = [float(w) for w in weights]
        if len(out) != len(urls):
            raise FastdataConfigError(f"mixture_schedule at step {step} has {len(out)} weights for "
                                      f"{len(urls)} sources")
        return out
    index = {u: i for i, u in enumerate(urls)} | {i: i for i in range(len(urls))}
    unknown = [k for k in weights if k not in index]
    if unknown or len({index[k] for k in weights}) != len(urls):
        raise FastdataConfigError(f"mixture_schedule at step {step} must weigh every source once, by its "
                                  f"URL as given or its index; unknown or missing: {unknown or 'some'}")
    out = [0.0] * len(urls)
    for k, w in weights.items():
        out[index[k]] = float(w)
    return out


class Mixture:
    """The weights of a blend over steps, and the anchor a resumed state set.

    Args:
        urls: the sources as given (only matched against the schedule's keys, never kept).
        names: short names of the sources (for messages and states).
        fingerprints: the sources' manifest fingerprints.
        sizes: samples of each source.
        weights: constant weights, when there is no schedule.
        schedule: ``[(step, weights), ...]`` from step 0 on; weights a list (one per source)
            or a mapping from source URL (as given) or index to weight.
        allow_change: accept states saved under other weights or sources.
    """

    def __init__(self, urls: Sequence[str], names: Sequence[str], fingerprints: Sequence[str],  # noqa: PLR0913
                 sizes: Sequence[int], weights: Sequence[float], schedule: Schedule | None,
                 allow_change: bool) -> None:
        self.names, self.fingerprints, self.sizes = list(names), list(fingerprints), list(sizes)
        self.ids = source_ids(fingerprints)
        self.schedule = ([(0, list(weights))] if schedule is None else
                         [(int(k), _aligned(w, urls, k)) for k, w in schedule])
        self.allow_change = allow_change
        self.anchor: tuple[int, int, list[Cursor | None]] | None = None  # (epoch, step, cursors)
        self._plans: dict[int, MixturePlan] = {}

    @property
    def weights(self) -> list[float]:
        return self.schedule[0][1]

    def identity(self) -> str:
        """The ``dataset`` field of a state: fingerprint*weight of each source (and the schedule)."""
        def mix(w: Sequence[float]) -> str:
            return "+".join(f"{fp}*{x:g}" for fp, x in zip(self.fingerprints, w))
        return mix(self.weights) + "".join(f"|@{k}:{mix(w)}" for k, w in self.schedule[1:])

    def plan(self, global_batch: int) -> MixturePlan:
        plan = self._plans.get(global_batch)
        if plan is None:
            anchor = None
            if self.anchor is not None:
                epoch, step, cursors = self.anchor
                anchor = (epoch * (sum(self.sizes) // global_batch) + step, cursors)
            plan = self._plans[global_batch] = MixturePlan(self.sizes, self.schedule, global_batch, anchor)
        return plan

    def at(self, epoch: int, step: int, global_batch: int) -> tuple[SourceCursor, ...]:
        """Every source's cursor before ``step`` of ``epoch`` (a state's ``mixture``)."""
        plan = self.plan(global_batch)
        absolute = epoch * (sum(self.sizes) // global_batch) + step
        return tuple(SourceCursor(i, n, w, c.epoch, c.offset, c.quota) for i, n, w, c in
                     zip(self.ids, self.names, plan.weights_at(absolute), plan.cursors_at(absolute)))

    def adopt(self, state: StreamState, identity: Mapping[str, Any], global_batch: int) -> StreamState:
        """Anchor the plan at ``state``'s cursors (this stream's ``identity`` and global batch);
        returns the state as this stream would save it (at the step it resumes at).

        Raises:
            FastdataStateError: other order settings; another mixture without ``allow_change``
                (naming both); a per-worker state across a change; cursors that do not fit.
        """
        saved_dataset = str(state.identity.get("dataset"))
        changed = saved_dataset != identity["dataset"]
        check_identity(state.identity, identity, skip=("dataset",) if changed else ())
        if changed and not self.allow_change:
            raise FastdataStateError(
                "cannot resume: state field 'dataset' is the mixture "
                f"{_describe_saved(state, saved_dataset)} but this stream mixes "
                f"{_describe(self.names, self.weights, self.schedule)}; pass "
                "allow_mixture_change=True to TokenDataset to go on under the new weights (every source "
                "continues its own epoch)")
        if changed and state.lane is not None:
            raise FastdataStateError("state field 'lane' is set (one worker's state): a mixture change "
                                     "resumes from a fastdata.DataLoader state or one with num_workers=0")
        epoch, step = state.epoch, state.step
        if changed and step >= sum(self.sizes) // global_batch:  # fewer steps per epoch now
            epoch, step = epoch + 1, 0
        saved = _saved_cursors(state, saved_dataset, self, global_batch)
        cursors = []
        for ident, m in zip(self.ids, self.sizes):
            c = saved.get(ident)
            if c is not None and not (c.quota <= m and c.offset <= epoch_length(m, c.quota)):
                raise FastdataStateError(f"state field 'mixture' puts source {ident} at {c}, outside its "
                                         f"{m} samples; the state is not from this data")
            cursors.append(c)
        self.anchor, self._plans = (epoch, step, cursors), {}
        return StreamState(epoch, step, identity, state.lane, self.at(epoch, step, global_batch))


def _saved_cursors(state: StreamState, saved_dataset: str, mix: Mixture, global_batch: int
                   ) -> dict[str, Cursor]:
    """The cursors a state records, or (a version 1 state) those its mixture implies."""
    if state.mixture is not None:
        return {c.id: Cursor(c.epoch, c.offset, c.quota) for c in state.mixture}
    parts = [p.rsplit("*", 1) for p in saved_dataset.split("|")[0].split("+")]
    ids = source_ids([p[0] for p in parts])
    known = dict(zip(mix.ids, mix.sizes))
    if any(i not in known for i in ids):
        raise FastdataStateError(
            "state field 'mixture' is missing (a version 1 state) and the state's sources are not all in "
            "this blend: resume once with the state's sources, save, then change them")
    if len(parts[0]) == 1:  # a single source: its steps of G slots are its cursor
        if state.identity.get("partitions") != global_batch:  # a blend orders each source in G partitions
            raise FastdataStateError(
                f"state field 'partitions' is {state.identity.get('partitions')!r}: a single-source state "
                f"grows into a blend only with the default partitions (the global batch, {global_batch})")
        m = known[ids[0]]
        return {ids[0]: Cursor(state.epoch, min(state.step * global_batch, epoch_length(m, global_batch)),
                               global_batch)}
    sizes = [known[i] for i in ids]
    old = MixturePlan(sizes, [(0, [float(p[1]) for p in parts])], global_batch)
    cursors = old.cursors_at(state.epoch * (sum(sizes) // global_batch) + state.step)
    return dict(zip(ids, cursors))


def _describe(names: Sequence[str], weights: Sequence[float], schedule: Sequence[Any] = ()) -> str:
    text = "{" + ", ".join(f"{n}: {w:g}" for n, w in zip(names, weights)) + "}"
    return text + (f" (a schedule of {len(schedule)} weight sets)" if len(schedule) > 1 else "")


def _describe_saved(state: StreamState, saved_dataset: str) -> str:
    if state.mixture is not None:
        return _describe([c.name for c in state.mixture], [c.weight for c in state.mixture])
    parts = [p.rsplit("*", 1) for p in saved_dataset.split("|")[0].split("+")]
    return _describe([p[0][:8] for p in parts], [float(p[1]) if len(p) > 1 else 1.0 for p in parts])
