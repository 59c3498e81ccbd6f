"""What ``fastdata doctor`` reports: checks, their options and budgets, the verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastdata.errors import FastdataConfigError

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass(frozen=True)
class Check:
    """One verdict: ``status`` is pass, warn, fail or skip; ``values`` are the measured numbers."""

    name: str
    status: str
    detail: str
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """How much the measurements may read, write and wait."""

    disk_bytes: int = 256 << 20  #: size of the temp file written and read back in the cache dir
    read_bytes: int = 64 << 20  #: shard bytes downloaded to measure bandwidth
    latency_reads: int = 10  #: small ranged reads timed for the latency
    seconds: float = 10.0  #: the most each measurement runs (it stops early, keeping what it has)


QUICK = Budget(disk_bytes=16 << 20, read_bytes=4 << 20, latency_reads=3, seconds=2.0)


@dataclass(frozen=True)
class Thresholds:
    """Below these (above, for latency) a measurement is a warning."""

    disk_bytes_per_s: float = 200e6
    download_bytes_per_s: float = 100e6
    latency_s: float = 0.2


@dataclass(frozen=True)
class DoctorOptions:
    """What to check.

    ``env`` is the environment the job will run with: credentials there are named (and
    scrubbed from every detail), ``OMP_NUM_THREADS`` is judged against the cores.
    """

    cache_dir: str
    cache_limit: int | None = None  #: bytes; None: shards are cached without eviction
    url: str | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    ranks_per_node: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)
    thresholds: Thresholds = field(default_factory=Thresholds)
    #: the job's order settings, for the live set the cache must hold (``cache-space``):
    #: micro-batch per rank (None: not reported), ranks in the job (None: ranks_per_node),
    #: ``OrderOptions.window`` and ``partitions`` (None: the global batch)
    batch_size: int | None = None
    world_size: int | None = None
    window: int | None = 16
    partitions: int | None = None

    def __post_init__(self) -> None:
        if self.ranks_per_node < 1:
            raise FastdataConfigError(f"ranks_per_node must be >= 1, got {self.ranks_per_node}")
        for name in ("batch_size", "world_size", "window", "partitions"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FastdataConfigError(f"{name} must be >= 1, got {value}")
        if self.cache_limit is not None and self.cache_limit <= 0:
            raise FastdataConfigError(f"cache_limit must be positive, got {self.cache_limit}")


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def unfit(self) -> list[str]:
        """Names of the failed checks (empty when the node is fit)."""
        return [c.name for c in self.checks if c.status == FAIL]

    @property
    def fit(self) -> bool:
        return not self.unfit

    def to_dict(self) -> dict[str, Any]:
        return {"fit": self.fit, "unfit": self.unfit,
                "checks": [{"name": c.name, "status": c.status, "detail": c.detail, "values": dict(c.values)}
                           for c in self.checks]}


