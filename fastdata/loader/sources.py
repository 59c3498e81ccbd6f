"""The sources of a :class:`~fastdata.loader.dataset.TokenDataset`: what a user may pass,
how each is opened, and a blend's mixture over them.

A source is a fastdata dataset (a folder or URL holding ``manifest.json``) or a
Megatron-Core ``.bin``/``.idx`` pair read in place (docs/megatron.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastdata.errors import FastdataConfigError
from fastdata.loader.mixture import Mixture, Schedule
from fastdata.reader import Dataset, open_dataset
from fastdata.sampling.order import SampleSpace
from fastdata.sampling.sources import resolve_weights
from fastdata.storage.remote import redact


@dataclass(frozen=True)
class Source:
    """One dataset of a blend. Without weights, sources are weighted by their sample counts."""

    url: str
    weight: float | None = None

    def __repr__(self) -> str:  # a SAS query in the URL is a credential
        return f"Source(url={redact(self.url)!r}, weight={self.weight!r})"


def open_source(url: str, **options: Any) -> Dataset:
    """A fastdata dataset, or a Megatron ``.bin``/``.idx`` pair read in place (docs/megatron.md):
    the reader chooses (``fastdata.reader.open``); the loader knows no file format."""
    return open_dataset(url, **options)


def as_sources(source: str | Source | Sequence[Source]) -> list[Source]:
    if isinstance(source, str):
        return [Source(source)]
    if isinstance(source, Source):
        return [source]
    sources = [Source(s) if isinstance(s, str) else s for s in source]
    if not sources or not all(isinstance(s, Source) for s in sources):
        raise FastdataConfigError("source must be a path/URL, a fastdata.Source or a list of them")
    return sources


def short_names(urls: Sequence[str]) -> list[str]:
    """The shortest path suffixes that tell the sources apart ("web/ds", "code/ds")."""
    parts = [u.rstrip("/").split("/") for u in urls]
    for k in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{n}#{i}" for i, n in enumerate(names)]


def mixture_of(given: Sequence[Source], datasets: Sequence[Dataset], spaces: Sequence[SampleSpace],
               schedule: Schedule | None, allow: bool) -> Mixture | None:
    """The mixture of a blend (None for a single source).

    Raises:
        FastdataConfigError: a schedule or ``allow`` for one source, weights given twice or
            only for some sources.
    """
    weights = resolve_weights([s.weight for s in given], [s.num_samples for s in spaces])
    if weights is None:
        if schedule is not None or allow:
            raise FastdataConfigError("mixture_schedule / allow_mixture_change are for blends of sources")
        return None
    if schedule is not None and all(s.weight is not None for s in given):
        raise FastdataConfigError("give the weights in the Source list or in mixture_schedule, not both")
    names = short_names([redact(s.url) for s in given])
    return Mixture([s.url for s in given], names, [d.manifest.fingerprint for d in datasets],
                   [s.num_samples for s in spaces], weights, schedule, allow)
