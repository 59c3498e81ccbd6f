"""Megatron-Core packing path, the equivalent of Megatron-LM's ``tools/preprocess_data.py``.

``preprocess_data.py`` lives in the Megatron-LM repository, not in the ``megatron-core``
wheel, so this script re-creates its pipeline on top of what the wheel ships:

* the main process reads the JSONL file line by line and feeds the raw lines to a
  ``multiprocessing.Pool`` (``imap`` with chunks of 32 lines, as preprocess_data does);
* each worker parses the JSON, tokenizes the ``--json-key`` field and appends the EOS id
  (preprocess_data's ``--append-eod``); empty documents are skipped, as there;
* the main process writes every document with
  ``megatron.core.datasets.indexed_dataset.IndexedDatasetBuilder.add_document`` and calls
  ``finalize`` to write the ``.idx`` file. The token dtype is
  ``DType.optimal_dtype(vocab_size)`` (uint16 below 65,500 ids), as preprocess_data picks it.

Tokenizers: ``bytes`` (UTF-8 bytes as ids 0..255, EOS id given by ``--eos-id``) or a path to
a Hugging Face ``tokenizer.json``, loaded with the ``tokenizers`` package (preprocess_data
wraps ``transformers.AutoTokenizer``, whose fast tokenizers are the same Rust code).

Run it with the peers venv (``benchmarks/.venv-peers/bin/python``). It prints one JSON line
with counts and timings; ``import_s`` is the time to import megatron.core (torch included),
``pack_s`` the time from opening the input to the finalized index.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import warnings
from pathlib import Path

T_START = time.perf_counter()
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from megatron.core.datasets.indexed_dataset import (  # noqa: E402
    DType,
    IndexedDataset,
    IndexedDatasetBuilder,
)

T_IMPORTED = time.perf_counter()


class Encoder:
    """Per-worker state; ``initializer`` runs once in each pool process."""

    tokenizer = None

    def __init__(self, tokenizer: str, key: str, eos_id: int, bos_id: int | None) -> None:
        self.tokenizer_spec = tokenizer
        self.key = key
        self.eos_id = eos_id
        self.bos_id = bos_id

    def initializer(self) -> None:
        if self.tokenizer_spec == "bytes":
            Encoder.tokenizer = None
        else:
            from tokenizers import Tokenizer

            Encoder.tokenizer = Tokenizer.from_file(self.tokenizer_spec)

    def tokenize(self, text: str) -> list[int]:
        if Encoder.tokenizer is None:
            return list(text.encode("utf-8"))
        return Encoder.tokenizer.encode(text, add_special_tokens=False).ids

    def encode(self, json_line: bytes) -> tuple[list[int], list[int], int]:
        data = json.loads(json_line)
        ids = self.tokenize(data[self.key])
        if not ids:
            return [], [], len(json_line)
        if self.bos_id is not None:
            ids.insert(0, self.bos_id)
        ids.append(self.eos_id)
        return ids, [len(ids)], len(json_line)


def vocab_size_of(tokenizer: str) -> int:
    if tokenizer == "bytes":
        return 258
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tokenizer).get_vocab_size()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Megatron-Core JSONL -> .bin/.idx packer")
    ap.add_argument("input", nargs="?")
    ap.add_argument("--output-prefix")
    ap.add_argument("--tokenizer", help="'bytes' or a tokenizer.json path")
    ap.add_argument("--json-key", default="text")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--eos-id", type=int)
    ap.add_argument("--bos-id", type=int, default=None,
                    help="prepend this id to every document (off by default)")
    ap.add_argument("--chunk-size", type=int, default=32, help="Pool.imap chunk size")
    ap.add_argument("--check", action="store_true",
                    help="reopen the result with IndexedDataset and count its tokens")
    ap.add_argument("--import-only", action="store_true",
                    help="exit after the imports (measures start-up)")
    args = ap.parse_args(argv)
    if args.import_only:
        print(json.dumps({"import_s": T_IMPORTED - T_START}))
        return 0
    if not (args.input and args.output_prefix and args.tokenizer and args.eos_id is not None):
        ap.error("input, --output-prefix, --tokenizer and --eos-id are required")

    t0 = time.perf_counter()
    encoder = Encoder(args.tokenizer, args.json_key, args.eos_id, args.bos_id)
    dtype = DType.optimal_dtype(vocab_size_of(args.tokenizer))
    Path(args.output_prefix).resolve().parent.mkdir(parents=True, exist_ok=True)
    bin_path = args.output_prefix + ".bin"
    idx_path = args.output_prefix + ".idx"
    builder = IndexedDatasetBuilder(bin_path, dtype=dtype)
    docs = tokens = nbytes = 0
    with open(args.input, "rb") as fin, multiprocessing.Pool(
        args.workers, initializer=encoder.initializer
    ) as pool:
        for ids, lens, n in pool.imap(encoder.encode, fin, args.chunk_size):
            nbytes += n
            if not ids:
                continue
            builder.add_document(ids, lens)
            docs += 1
            tokens += len(ids)
    builder.finalize(idx_path)
    t1 = time.perf_counter()

    result = {
        "system": "megatron-core",
        "tokenizer": args.tokenizer,
        "workers": args.workers,
        "docs": docs,
        "tokens": tokens,
        "input_bytes": nbytes,
        "dtype": np.dtype(dtype).name,
        "import_s": T_IMPORTED - T_START,
        "pack_s": t1 - t0,
        "bin_bytes": Path(bin_path).stat().st_size,
    }
    if args.check:
        ds = IndexedDataset(args.output_prefix)
        result["check_docs"] = int(len(ds.document_indices) - 1)
        result["check_tokens"] = int(ds.sequence_lengths.sum())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
