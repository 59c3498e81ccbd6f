"""Save/resume round trips for loaders (after torchdata's ``run_test_save_load_state``).

Iterate a loader ``k`` batches, take ``state_dict()``, build a fresh loader (in this process
or in a new interpreter), ``load_state_dict``, go on, and compare what the two halves give
together with an uninterrupted run, in exact order.

Every ``iter()`` of a loader is its next epoch; a run crosses epoch ends by calling ``iter()``
again. ``item`` turns a batch into what is compared (default: its ``sample_ids`` as a list).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def batch_ids(batch) -> list[int]:
    return [int(i) for i in batch["sample_ids"]]


def flat(rows) -> list:
    return [x for r in rows for x in r]


def epochs(dl, n: int, *, item: Callable = batch_ids) -> list[list]:
    """Whole epochs of ``dl`` (one ``iter()`` each, run to its end) until at least ``n`` batches
    are in; an empty epoch ends the run. Returns the items of each epoch."""
    out: list[list] = []
    got = 0
    while got < n:
        one = [item(b) for b in dl]
        if not one:
            break
        out.append(one)
        got += len(one)
    return out


def cut(dl, k: int, *, item: Callable = batch_ids) -> tuple[list, dict]:
    """Consume ``k`` batches (going on into the next epoch where one ends) and take the state
    while the last iterator is still open; returns the items and the state."""
    got: list = []
    it = iter(dl)
    ends = 0
    while len(got) < k:
        b = next(it, None)
        if b is None:  # the epoch ended: the next iter() is the next epoch
            ends += 1
            assert ends < 8, f"only {len(got)} batches in {ends} epochs, {k} wanted"
            it = iter(dl)
            continue
        got.append(item(b))
    state = dl.state_dict()
    del it
    return got, state


@dataclass
class Resumed:
    before: list  # the items up to the cut
    state: dict  # the state taken at the cut, as it was loaded
    epochs: list[list]  # the items of each iter() of the resumed loader

    @property
    def after(self) -> list:
        return flat(self.epochs)


def save_load(make: Callable, k: int, total: int, *, make_resumed: Callable | None = None,
              resume: Callable[[dict, int], list[list]] | None = None, item: Callable = batch_ids,
              json_roundtrip: bool = True) -> Resumed:
    """Cut a loader from ``make()`` after ``k`` batches, load its state into a fresh one
    (``make_resumed()``, default ``make()``) and run that one through whole epochs until the
    two halves hold ``total`` batches. ``json_roundtrip``: load the state as read back from
    JSON, as a checkpoint file gives it. ``resume(state, n)``: load and run elsewhere (see
    ``in_fresh_process``), returning the items of each epoch."""
    before, state = cut(make(), k, item=item)
    if json_roundtrip:
        state = json.loads(json.dumps(state))
    if resume is not None:
        return Resumed(before, state, resume(state, total - k))
    dl = (make_resumed or make)()
    dl.load_state_dict(state)
    return Resumed(before, state, epochs(dl, total - k, item=item))


def assert_resumes_exactly(make: Callable, cuts, *, epochs_run: int = 1, full: list | None = None,
                           note: str = "", **options: Any) -> dict[int, Resumed]:
    """For each cut ``k``: the ``k`` batches before the cut followed by what the resumed loader
    gives are the uninterrupted run (``full``, default ``epochs_run`` epochs of a fresh
    ``make()``), item by item. ``options`` go to ``save_load``; ``note`` goes into the failure
    message; returns each cut's run."""
    if full is None:
        dl, item = make(), options.get("item", batch_ids)
        full = [item(b) for _ in range(epochs_run) for b in dl]
    runs = {}
    for k in cuts:
        r = save_load(make, k, len(full), **options)
        assert len(r.before) == k, (note, k, len(r.before))
        got = r.before + r.after
        if got != full:
            first = next((i for i, (a, b) in enumerate(zip(got, full)) if a != b), min(len(got), len(full)))
            where = f"{note}: " if note else ""
            raise AssertionError(f"{where}cut after {k} batches: the resumed run differs from the "
                                 f"uninterrupted one at batch {first} ({len(got)} batches, not {len(full)})")
        runs[k] = r
    return runs


def in_fresh_process(build: str, directory: Path, timeout: float = 90) -> Callable[[dict, int], list[list]]:
    """A ``resume`` for ``save_load``: the state goes through a JSON file into a new interpreter
    that runs ``build`` (Python defining ``dl``), loads the state and prints the ids of its
    epochs (``epochs(dl, n)``)."""
    def resume(state: dict, n: int) -> list[list]:
        path = Path(directory) / "state.json"
        path.write_text(json.dumps(state))
        code = (f"import json, sys\nsys.path.insert(0, {HERE!r})\nimport _state\n{build}\n"
                f"dl.load_state_dict(json.load(open({str(path)!r})))\n"
                f"print(json.dumps(_state.epochs(dl, {n})))\n")
        out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                             timeout=timeout, check=True)
        return json.loads(out.stdout)
    return resume
