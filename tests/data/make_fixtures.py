"""Regenerate the committed order fixtures. Run only when the order or the dataset identity
changes on purpose (the tests exist to notice when it changes by accident):

    python -P tests/data/make_fixtures.py
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _loader import packed_dataset  # noqa: E402

import fastdata  # noqa: E402


def main() -> None:
    path = packed_dataset(tempfile.mkdtemp())
    ds = fastdata.TokenDataset(path, seq_len=8, seed=1234)
    ids = [int(i) for b in fastdata.DataLoader(ds, batch_size=8, num_workers=0) for i in b["sample_ids"]]
    ids = ids[:4096]
    golden = {
        "about": "first 4096 sample ids of TokenDataset(seq_len=8, seed=1234), batch 8, epoch 0, on "
                 "tests/_loader.packed_dataset() (400 docs, byte tokenizer, 4 KB shards); guards the "
                 "order against library or RNG drift (ACCEPTANCE A2)",
        "dataset_fingerprint": ds.data.manifest.fingerprint,
        "sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
        "first": ids[:64],
    }
    with open(os.path.join(HERE, "golden_order.json"), "w") as f:
        json.dump(golden, f, indent=1)
    dl = fastdata.DataLoader(fastdata.TokenDataset(path, seq_len=32, seed=9), batch_size=4, num_workers=2)
    it = iter(dl)
    for _ in range(6):
        next(it)
    state = {
        "about": "fastdata.DataLoader state (version 1) after 6 batches of 4 from TokenDataset(seq_len=32, "
                 "seed=9) on tests/_loader.packed_dataset(); it must keep loading (ACCEPTANCE B8)",
        "consumed": 24,
        "state": dl.state_dict(),
    }
    with open(os.path.join(HERE, "state_v1.json"), "w") as f:
        json.dump(state, f, indent=1)
    print("fixtures written for dataset", ds.data.manifest.fingerprint)


if __name__ == "__main__":
    main()
