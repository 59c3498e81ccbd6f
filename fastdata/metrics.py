"""Where the time goes: counters and timings from every layer, in one place.

Each process has one :data:`registry`. The storage layer counts fetched bytes, fetch
latencies and retries; the cache counts hits, misses and evictions; the reader counts
gather time; the loader measures, where the training loop calls ``next()``, how long the
loop waited for data (see ``fastdata.DataLoader.metrics``). DataLoader worker processes
send their increments to the main process with the batches, so the main process's
figures include theirs.

Stages (:func:`stage`, :func:`making`): the loader times the making of each batch on the
thread that makes it, and the layers below mark the parts of that work that are fetch,
verify or decompress; the loader splits the training loop's wait by them (see
``fastdata.loader.stalls`` and docs/metrics.md, "Where the wait goes").

Recording costs a lock and a dict update (well under a microsecond); nothing here is
per-token. Names are dotted (``fetch.bytes``); timings are kept in log-spaced buckets, so
p50/p99 cost O(1) memory whatever the run length.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

#: Timing buckets: 4 per doubling of the duration in microseconds (``frexp``'s exponent and
#: the top bits of its mantissa), 12-25 % wide, from 1 µs to about 1.2 days.
_PER_DOUBLING = 4
_BUCKETS = 4 * 38


def _bucket(seconds: float) -> int:
    micros = seconds * 1e6
    if micros < 1.0:
        return 0
    mantissa, exponent = math.frexp(micros)  # micros = mantissa * 2**exponent, mantissa in [0.5, 1)
    return min(_BUCKETS - 1, exponent * _PER_DOUBLING + int((mantissa - 0.5) * 2 * _PER_DOUBLING) - 3)


def _bucket_value(i: int) -> float:
    """The middle of bucket ``i``, in seconds."""
    if i == 0:
        return 1e-6
    exponent, part = divmod(i + 3, _PER_DOUBLING)
    return (0.5 + (part + 0.5) / (2 * _PER_DOUBLING)) * 2.0**exponent / 1e6


class Registry:
    """Counters (monotone sums), gauges (last value, or a callable read at snapshot time)
    and timings (count, sum and buckets) under dotted names; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, float] = {}
        self._gauges: dict[str, float | Callable[[], float]] = {}
        self._timings: dict[str, list[float]] = {}  # name -> [count, sum, *buckets]

    def count(self, name: str, value: float = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + value

    def gauge(self, name: str, value: float | Callable[[], float]) -> None:
        with self._lock:
            self._gauges[name] = value

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            t = self._timings.get(name)
            if t is None:
                t = self._timings[name] = [0.0] * (2 + _BUCKETS)
            t[0] += 1
            t[1] += seconds
            t[2 + _bucket(seconds)] += 1

    def record(self, counts: Iterable[tuple[str, float]] = (), timings: Iterable[tuple[str, float]] = ()
               ) -> None:
        """Several counts and timings under one lock (the loader's per-batch figures)."""
        with self._lock:
            for name, value in counts:
                self._counters[name] = self._counters.get(name, 0) + value
            for name, seconds in timings:
                t = self._timings.get(name)
                if t is None:
                    t = self._timings[name] = [0.0] * (2 + _BUCKETS)
                t[0] += 1
                t[1] += seconds
                t[2 + _bucket(seconds)] += 1

    def observe_many(self, name: str, seconds: Iterable[float]) -> None:
        """Many durations of one timing at once (vectorised: the loader flushes its per-batch
        waits this way, so a batch costs it a list append, not a lock and a bucket lookup)."""
        values = np.asarray(list(seconds), dtype=np.float64)
        if not len(values):
            return
        micros = values * 1e6
        mantissa, exponent = np.frexp(np.maximum(micros, 1.0))
        index = exponent * _PER_DOUBLING + ((mantissa - 0.5) * 2 * _PER_DOUBLING).astype(np.int64) - 3
        index = np.where(micros < 1.0, 0, np.minimum(index, _BUCKETS - 1))
        counts = np.bincount(index, minlength=_BUCKETS)
        with self._lock:
            t = self._timings.get(name)
            if t is None:
                t = self._timings[name] = [0.0] * (2 + _BUCKETS)
            t[0] += len(values)
            t[1] += float(values.sum())
            for i in np.flatnonzero(counts).tolist():
                t[2 + i] += int(counts[i])

    def export(self) -> dict[str, Any]:
        """Raw, mergeable figures (plain numbers and lists, for a worker to send)."""
        with self._lock:
            return {"counters": dict(self._counters),
                    "timings": {k: list(v) for k, v in self._timings.items()}}

    def merge(self, raw: Mapping[str, Any]) -> None:
        """Add figures ``export()``-ed elsewhere (or a :func:`delta` of them) into this one."""
        with self._lock:
            for name, value in raw.get("counters", {}).items():
                self._counters[name] = self._counters.get(name, 0) + value
            for name, values in raw.get("timings", {}).items():
                t = self._timings.setdefault(name, [0.0] * (2 + _BUCKETS))
                for i, v in enumerate(values):
                    t[i] += v

    def snapshot(self) -> dict[str, float]:
        """Every figure as a flat ``{name: number}``: counters and gauges as they are, each
        timing as ``name.count``, ``name.seconds``, ``name.p50`` and ``name.p99`` (seconds)."""
        with self._lock:
            out = dict(self._counters)
            gauges = dict(self._gauges)
            timings = {k: list(v) for k, v in self._timings.items()}
        for name, value in gauges.items():
            try:
                out[name] = float(value() if callable(value) else value)
            except Exception:  # noqa: BLE001 - a gauge that cannot be read is left out
                continue
        for name, t in timings.items():
            out[f"{name}.count"], out[f"{name}.seconds"] = t[0], t[1]
            out[f"{name}.p50"], out[f"{name}.p99"] = _quantile(t, 0.5), _quantile(t, 0.99)
        return out

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()
            self._timings.clear()


def _quantile(t: list[float], q: float) -> float:
    count = t[0]
    if not count:
        return 0.0
    rank, seen = q * count, 0.0
    for i, n in enumerate(t[2:]):
        seen += n
        if seen >= rank and n:
            return _bucket_value(i)
    return _bucket_value(_BUCKETS - 1)


def delta(now: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """``now - before`` of two :meth:`Registry.export` results (what changed in between)."""
    counters = {k: v - before.get("counters", {}).get(k, 0) for k, v in now.get("counters", {}).items()}
    timings = {}
    for name, values in now.get("timings", {}).items():
        old = before.get("timings", {}).get(name)
        timings[name] = values if old is None else [a - b for a, b in zip(values, old)]
    return {"counters": {k: v for k, v in counters.items() if v},
            "timings": {k: v for k, v in timings.items() if v[0]}}


#: Where a batch's wait can go (``loader.wait.<stage>.seconds``): the first four are parts of
#: making the batch, ``queue`` the rest of the wait (docs/metrics.md, "Where the wait goes").
STAGES = ("fetch", "verify", "decompress", "gather", "queue")
_STAGE_INDEX = {name: i for i, name in enumerate(STAGES[:3])}
_local = threading.local()


class StageClock:
    """Exclusive seconds of fetch, verify and decompress in the work one thread does for a batch
    (or a chunk of batches), between ``started`` and ``ended`` (``time.perf_counter``)."""

    __slots__ = ("started", "ended", "seconds", "_open")

    def __init__(self) -> None:
        self.started = self.ended = 0.0
        self.seconds = [0.0, 0.0, 0.0]
        self._open: list[list[float]] = []  # [stage index, start, time of nested stages]

    def fractions(self) -> tuple[float, float, float, float]:
        """Shares of the making time spent in fetch, verify, decompress, and gather (the rest)."""
        total = self.ended - self.started
        if total <= 0:
            return (0.0, 0.0, 0.0, 1.0)
        f, v, d = (min(1.0, s / total) for s in self.seconds)
        return (f, v, d, max(0.0, 1.0 - f - v - d))


class _Timed:
    __slots__ = ("clock", "index")

    def __init__(self, clock: StageClock, index: int) -> None:
        self.clock, self.index = clock, index

    def __enter__(self) -> None:
        self.clock._open.append([self.index, time.perf_counter(), 0.0])

    def __exit__(self, *exc: object) -> None:
        index, started, nested = self.clock._open.pop()
        spent = time.perf_counter() - started
        self.clock.seconds[int(index)] += max(0.0, spent - nested)  # the index is stored as a number
        if self.clock._open:
            self.clock._open[-1][2] += spent


_NOT_TIMED = contextlib.nullcontext()


def stage(name: str) -> contextlib.AbstractContextManager[None]:
    """``with stage("fetch"):`` marks work of a stage (``fetch``, ``verify``, ``decompress``) for
    the batch this thread is making; outside :func:`making` it costs an attribute lookup.
    Nested stages are exclusive: a verify inside a fetch is not fetch time."""
    clock = getattr(_local, "clock", None)
    if clock is None:
        return _NOT_TIMED
    return _Timed(clock, _STAGE_INDEX[name])


@contextlib.contextmanager
def making() -> Iterator[StageClock]:
    """Time the making of a batch (or chunk) on this thread: the clock's ``started``/``ended``
    and what :func:`stage` marked inside."""
    clock, saved = StageClock(), getattr(_local, "clock", None)
    _local.clock = clock
    clock.started = time.perf_counter()
    try:
        yield clock
    finally:
        clock.ended = time.perf_counter()
        _local.clock = saved


#: This process's figures.
registry = Registry()
count, gauge, observe = registry.count, registry.gauge, registry.observe


def prometheus_text(snapshot: Mapping[str, float], prefix: str = "fastdata",
                    labels: Mapping[str, str] | None = None) -> str:
    """A snapshot in the Prometheus text exposition format (every figure a gauge)."""
    label_text = ""
    if labels:
        inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
        label_text = "{" + inner + "}"
    lines = []
    for name in sorted(snapshot):
        metric = f"{prefix}_{name}".replace(".", "_").replace("-", "_")
        lines.append(f"# TYPE {metric} gauge")
        lines.append(f"{metric}{label_text} {float(snapshot[name])!r}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_tensorboard(writer: Any, snapshot: Mapping[str, float], step: int, prefix: str = "fastdata") -> None:
    """Write a snapshot to a ``torch.utils.tensorboard.SummaryWriter`` (anything with
    ``add_scalar(tag, value, step)``) as ``fastdata/<name with / for .>``."""
    for name, value in sorted(snapshot.items()):
        writer.add_scalar(f"{prefix}/{name.replace('.', '/')}", float(value), step)


def combined(*registries: Registry) -> dict[str, float]:
    """One snapshot of several registries: counters and timings added, gauges of all."""
    total = Registry()
    for r in registries:
        total.merge(r.export())
        with r._lock:
            total._gauges.update(r._gauges)
    return total.snapshot()


def summary_line(snap: Mapping[str, float]) -> str:
    """The figures a person looks at first, on one line."""
    parts = [f"{snap.get('loader.tokens_per_second', 0) / 1e6:.2f} M tok/s"]
    if snap.get("loader.wait.count"):
        waits = {name: snap.get(f"loader.wait.{name}.seconds", 0.0) for name in STAGES}
        top = max(waits, key=waits.__getitem__)
        wait = snap.get("loader.wait.seconds", 0.0)
        most = f"{top} {100 * waits[top] / wait:.0f} %, " if wait > 0 else ""
        parts.append(f"data-wait {100 * snap.get('loader.data_wait_share', 0):.1f} % "
                     f"({most}p99 {1e3 * snap.get('loader.wait.p99', 0):.1f} ms)")
    if "cache.hit_rate" in snap:
        parts.append(f"cache hit {100 * snap['cache.hit_rate']:.1f} %")
    if "cache.block_hit_rate" in snap:
        parts.append(f"block hit {100 * snap['cache.block_hit_rate']:.1f} %")
    if snap.get("fetch.bytes"):
        per = (f", {snap['fetch.bytes_per_consumed']:.2f} B fetched per B read"
               if "fetch.bytes_per_consumed" in snap else "")
        parts.append(f"fetch {snap.get('fetch.mb_per_s', 0):.1f} MB/s in {snap.get('fetch.requests', 0):.0f} "
                     f"requests (p50 {1e3 * snap.get('fetch.latency.p50', 0):.0f} ms/shard{per})")
    if snap.get("fetch.retries"):
        parts.append(f"{snap['fetch.retries']:.0f} retries")
    return ", ".join(parts)
