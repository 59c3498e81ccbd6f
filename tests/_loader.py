"""Helpers for loader tests: small packed datasets and id collection."""

from __future__ import annotations

import os

import numpy as np
from _corpus import make_docs, write_jsonl

import fastdata
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.pipeline import PackConfig, pack
from fastdata.pack.sources import ReadOptions
from fastdata.pack.tokenizers import TokenizerSpec


def packed_dataset(directory: str, *, docs: int = 400, seed: int = 0, shard_size: int = 4096,
                   chat: bool = False, compression: str | None = None) -> str:
    """Pack a deterministic corpus with the byte tokenizer; returns the dataset path."""
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, "ds")
    if os.path.exists(os.path.join(out, "manifest.json")):
        return out
    src = write_jsonl(os.path.join(directory, "c.jsonl"), make_docs(docs, seed=seed, long_every=97))
    encode = EncodeOptions(ReadOptions(chat=chat), TokenizerSpec("bytes"))
    pack(PackConfig(inputs=(src,), output=out, encode=encode, shard_size=shard_size, compression=compression))
    return out


def ids_of(batches) -> list[int]:
    """Sample ids of an iterable of batches, in order."""
    return [int(i) for b in batches for i in b["sample_ids"]]


def epoch_ids(loader) -> list[int]:
    return ids_of(loader)


def take(iterator, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        out.append(next(iterator))
    return out


def stream_tokens(path: str) -> np.ndarray:
    with fastdata.open_dataset(path) as ds:
        return ds.tokens(0, ds.num_tokens).astype(np.int64)
