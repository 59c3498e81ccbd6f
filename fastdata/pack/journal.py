"""The journal of an unfinished pack (``.fastdata-pack.json``, next to the shards).

After each shard is published the journal records the shards so far and where the next
shard starts, so that a re-run of the same job (same inputs and arguments) resumes there;
a journal of another job is refused. Both engines use it (``pack/pipeline.py`` and
``pack/ray_engine.py``, which checks that no other job's local journal is in the output).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict

from fastdata.errors import FastdataConfigError
from fastdata.format.manifest import ShardInfo
from fastdata.pack.config import PackProgress
from fastdata.storage.remote import Store

log = logging.getLogger(__name__)

JOURNAL_NAME = ".fastdata-pack.json"


class Journal:
    """Progress of an unfinished pack, kept next to the shards."""

    def __init__(self, store: Store, job: str, progress: PackProgress) -> None:
        self.store, self.job, self.progress = store, job, progress
        self.shards: list[ShardInfo] = []
        self.position = (0, 0)
        self._written = 0

    def load(self) -> None:
        """Pick up an earlier run of the same job, if its shards are all still there."""
        if self.store.size(JOURNAL_NAME) is None:
            return
        try:
            doc = json.loads(self.store.read_bytes(JOURNAL_NAME))
            shards = [ShardInfo(**s) for s in doc["shards"]]
            position = (int(doc["next_task"]), int(doc["next_doc"]))
            same = doc["job"] == self.job
        except (ValueError, KeyError, TypeError):
            log.warning("%s is unreadable; packing from the start", self.store.describe(JOURNAL_NAME))
            return
        if not same:
            raise FastdataConfigError(
                f"{self.store.display} holds an unfinished pack with other inputs or arguments; "
                "re-run that pack, or pass --overwrite to start this one from scratch"
            )
        missing = [s.name for s in shards if self.store.size(s.name) != s.stored_bytes]
        if missing:
            log.warning("shard %s of the unfinished pack is missing or damaged; packing from the "
                        "start", self.store.describe(missing[0]))
            return
        self.shards, self.position, self._written = shards, position, len(shards)
        self.progress.skipped.update(doc.get("skipped", {}))
        self.progress.resumed_shards = len(shards)
        self._count(shards)

    def _count(self, shards: Sequence[ShardInfo]) -> None:
        self.progress.shards += len(shards)
        self.progress.stored_bytes += sum(s.stored_bytes for s in shards)

    def record(self, info: ShardInfo, position: tuple[int, int]) -> None:
        """Note a published shard. The journal is rewritten after the first 64 shards and then
        after every ~1/64 more, so its cost stays O(n log n) bytes; a crash re-packs at most
        that many shards, whose bytes come out the same."""
        self.shards.append(info)
        self._count([info])
        n = len(self.shards)
        if n - self._written < max(1, n // 64):
            return
        self._written = n
        self.position = position
        doc = {"job": self.job, "shards": [asdict(s) for s in self.shards],
               "next_task": position[0], "next_doc": position[1],
               "skipped": dict(self.progress.skipped)}
        self.store.write_bytes(JOURNAL_NAME, json.dumps(doc).encode())
