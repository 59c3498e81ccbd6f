"""Small corpora and tokenizers that tests build for themselves (nothing is downloaded)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence

WORDS = ("the quick brown fox jumps over lazy dog data loader token shard cache node rank "
         "worker epoch seed batch stream blob azure parquet tensor gradient").split()
UNICODE = ["naïve café", "Ελληνικά κείμενα", "日本語のテキスト", "emoji 🚀✨", "Привет, мир", ""]


def make_docs(n: int, seed: int = 0, long_every: int = 50) -> list[str]:
    """``n`` documents of varied length, with Unicode, empty and long ones."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(0, 60))
        if i % 13 == 0:
            words.insert(0, UNICODE[i % len(UNICODE)])
        if long_every and i % long_every == long_every - 1:
            words = rng.choices(WORDS, k=4000)
        docs.append(" ".join(w for w in words if w is not None))
    docs[1] = ""
    return docs


def write_jsonl(path: str, docs: Sequence[str], field: str = "text") -> str:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({field: d}, ensure_ascii=False) + "\n")
    return path


def train_bpe(path: str, docs: Sequence[str], vocab_size: int = 400) -> str:
    """Train a tiny byte-level BPE tokenizer.json on ``docs`` (a few hundred ms)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)
    tok.save(path)
    return path


def wordlevel_tokenizer(path: str, vocab_size: int) -> str:
    """A word-level tokenizer.json with ``vocab_size`` ids (for large-vocabulary tests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(vocab_size - 2)}
    vocab["[UNK]"] = vocab_size - 2
    vocab["</s>"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(path)
    return path


def files_bytes(directory: str) -> dict[str, bytes]:
    """Every visible file under ``directory`` (relative name -> bytes)."""
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out
