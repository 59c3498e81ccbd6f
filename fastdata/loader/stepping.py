"""What ``TokenDataset.__iter__`` yields for a run of steps: micro-batches or single samples.

The dataset reads a run of steps with one gather; this turns each step into the dict of
tensors it yields, views of the gathered buffers (no copy). Without ``batch_size`` a step is
one sample, yielded without its batch dimension (and without ``cu_seqlens``, which
describes a whole batch); when a sample is exactly its ``L + 1`` token window (packed, no
loss mask, see :meth:`BatchAssembler.windows`), its ``input_ids`` and ``labels`` are the
first and last ``L`` tokens of that one window: two contiguous views, half the tokens to
write. Inside a DataLoader worker process the dicts are
:class:`~fastdata.loader.wire.WireBatch` (see :mod:`fastdata.loader.wire`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from fastdata.loader.batch import BatchAssembler, SampleConfig
from fastdata.loader.wire import WireBatch

if TYPE_CHECKING:
    from fastdata.loader.plan import RankPlan


def step_items(plan: RankPlan, samples: SampleConfig, steps: Sequence[int], *, batched: bool,
               in_worker: bool) -> Iterator[dict[str, torch.Tensor]]:
    """One dict of tensors per step of ``steps``, in order: a micro-batch when ``batched``,
    else the step's one sample."""
    kind = WireBatch if in_worker else dict
    if batched:
        for arrays in plan.batches(steps):
            yield kind((k, torch.from_numpy(v)) for k, v in arrays.items())
        return
    assembler = plan.assembler
    ids = plan.slots(np.asarray(steps, dtype=np.int64))
    if isinstance(assembler, BatchAssembler) and not samples.doc_ids:
        for lo, hi in plan.groups(ids):
            flat = ids[lo:hi].ravel()
            windows = assembler.windows(flat)
            if windows is None:
                break
            rows = torch.from_numpy(windows)
            for x, y, i in zip(rows[:, :-1].unbind(0), rows[:, 1:].unbind(0),
                               torch.from_numpy(flat.astype(np.int64)).unbind(0)):
                yield kind(input_ids=x, labels=y, sample_ids=i)
            steps = steps[hi - lo :]
        else:
            return
    for arrays in plan.batches(steps):
        yield kind((k, torch.from_numpy(v[0, ...])) for k, v in arrays.items() if k != "cu_seqlens")
