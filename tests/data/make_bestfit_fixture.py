"""Regenerate tests/data/golden_bestfit.json. Run only when the bestfit packing or the order
changes on purpose (tests/test_bestfit.py exists to notice when it changes by accident):

    python -P tests/data/make_bestfit_fixture.py

The test checks the golden both against the library and against its own slow reference
implementation, so a regenerated golden that broke the documented packing still fails.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _loader import packed_dataset  # noqa: E402
from test_bestfit import BATCH, SAMPLING, SEED, SEQ_LEN, WINDOW, digest, epoch_batches  # noqa: E402

import fastdata  # noqa: E402


def main() -> None:
    path = packed_dataset(tempfile.mkdtemp())
    batches = epoch_batches(path, epochs=2)
    real = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    total = sum(b["attention_mask"].size for b in batches)
    golden = {
        "about": f"epochs 0 and 1 of TokenDataset(seq_len={SEQ_LEN}, seed={SEED}, sampling={SAMPLING}, "
                 f"OrderOptions(drop_last=False)), batch {BATCH}, on tests/_loader.packed_dataset() "
                 f"(400 docs, byte tokenizer, 4 KB shards), pack window {WINDOW}; sha256 over every "
                 "array of every batch "
                 "(tests/test_bestfit.py digest); guards the bestfit packing against drift",
        "dataset_fingerprint": fastdata.open_dataset(path).manifest.fingerprint,
        "steps": len(batches),
        "sha256": digest(batches),
        "padding_share": round(real / total, 6),
        "first_sample_ids": [b["sample_ids"].tolist() for b in batches[:8]],
    }
    with open(os.path.join(HERE, "golden_bestfit.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print("golden_bestfit.json written:", golden["steps"], "steps, padding", golden["padding_share"])


if __name__ == "__main__":
    main()
