"""Tokenizers for ``fastdata pack``: byte-level (built in), Hugging Face, tiktoken.

A tokenizer is named by a spec string: ``bytes``, a path to a ``tokenizer.json``,
``tiktoken:NAME`` or ``none`` (pre-tokenized input; the vocabulary size is given
separately). Each worker process loads its own copy from the spec. ``encode_batch``
returns ids without special tokens; the pack pipeline adds BOS/EOS by its policy
(``docs/pack.md``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xxhash

from fastdata.errors import FastdataConfigError
from fastdata.format.manifest import TokenizerInfo

BYTES_EOS = 256
BYTES_BOS = 257
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[SEP]")
BOS_CANDIDATES = ("<|begin_of_text|>", "<s>", "<bos>", "<|bos|>", "[CLS]")


@dataclass(frozen=True)
class TokenizerSpec:
    """What names a tokenizer; small and picklable so workers can rebuild it."""

    spec: str = "bytes"
    eos_token: str | None = None  # override the end-of-document token (by its text)
    bos_token: str | None = None
    vocab_size: int | None = None  # for spec "none": the vocabulary of the given ids
    eos_id: int | None = None  # for spec "none"
    bos_id: int | None = None  # for spec "none"


class Tokenizer:
    """Common face of the supported tokenizers."""

    info: TokenizerInfo

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError


class BytesTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0-255, with EOS 256 and BOS 257. Needs nothing."""

    def __init__(self) -> None:
        self.info = TokenizerInfo(
            kind="bytes", name="bytes", vocab_size=258, eos_id=BYTES_EOS, bos_id=BYTES_BOS,
            fingerprint=xxhash.xxh3_128_hexdigest(b"fastdata-bytes-v1:eos=256:bos=257"),
        )

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        names = {BYTES_EOS: "<|eos|>", BYTES_BOS: "<|bos|>"}
        out, run = [], bytearray()
        for i in (int(x) for x in ids):
            if i < 256:
                run.append(i)
                continue
            out.append(run.decode("utf-8", "replace"))
            run.clear()
            out.append(names.get(i, f"<|{i}|>"))
        out.append(run.decode("utf-8", "replace"))
        return "".join(out)


def _pick_special(vocab: dict[str, int], explicit: str | None, candidates: Sequence[str],
                  what: str, path: str) -> int | None:
    if explicit is not None:
        if explicit not in vocab:
            raise FastdataConfigError(f"{path}: {what} token {explicit!r} is not in the vocabulary")
        return vocab[explicit]
    return next((vocab[c] for c in candidates if c in vocab), None)


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizer.json`` through the ``tokenizers`` package."""

    def __init__(self, path: str, spec: TokenizerSpec) -> None:
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError:
            raise FastdataConfigError(
                f"{path}: reading a tokenizer.json needs the 'tokenizers' package "
                "(pip install 'fastdata[hf]')"
            ) from None
        try:
            with open(path, "rb") as f:
                raw = f.read()
            self._tok = _Tok.from_str(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, Exception) as e:  # tokenizers raises plain Exception
            raise FastdataConfigError(f"{path}: cannot load tokenizer: {e}") from None
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.info = TokenizerInfo(
            kind="huggingface", name=os.path.basename(os.path.dirname(os.path.abspath(path)))
            or "tokenizer", vocab_size=max(self._tok.get_vocab_size(True), max(vocab.values()) + 1),
            eos_id=_pick_special(vocab, spec.eos_token, EOS_CANDIDATES, "EOS", path),
            bos_id=_pick_special(vocab, spec.bos_token, BOS_CANDIDATES, "BOS", path),
            fingerprint=xxhash.xxh3_128_hexdigest(raw),
        )
        self.source_bytes = raw

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encs]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=False))


class TiktokenTokenizer(Tokenizer):
    """A tiktoken encoding that is already available on this machine."""

    def __init__(self, name: str) -> None:
        try:
            import tiktoken

            self._enc = tiktoken.get_encoding(name)
        except ImportError:
            raise FastdataConfigError("tokenizer tiktoken:... needs the 'tiktoken' package") from None
        except Exception as e:  # noqa: BLE001 - tiktoken raises many types when offline
            raise FastdataConfigError(
                f"tiktoken encoding {name!r} is not available locally ({type(e).__name__}); "
                "fastdata never downloads at run time: place it in TIKTOKEN_CACHE_DIR first"
            ) from None
        eot = self._enc.eot_token
        self.info = TokenizerInfo(
            kind="tiktoken", name=name, vocab_size=self._enc.n_vocab, eos_id=eot, bos_id=None,
            fingerprint=xxhash.xxh3_128_hexdigest(f"tiktoken:{name}:{self._enc.n_vocab}:{eot}".encode()),
        )

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        batch = self._enc.encode_ordinary_batch(list(texts))
        return [np.asarray(ids, dtype=np.uint32) for ids in batch]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._enc.decode([int(i) for i in ids]))


class PretokenizedIds(Tokenizer):
    """No tokenizer: records already hold ids below ``vocab_size``."""

    def __init__(self, spec: TokenizerSpec) -> None:
        if not spec.vocab_size or spec.vocab_size <= 0:
            raise FastdataConfigError("--tokenizer none needs --vocab-size (the ids' vocabulary)")
        for what, value in (("eos", spec.eos_id), ("bos", spec.bos_id)):
            if value is not None and not 0 <= value < spec.vocab_size:
                raise FastdataConfigError(f"--{what}-id {value} is outside the vocabulary "
                                          f"of size {spec.vocab_size}")
        self.info = TokenizerInfo(
            kind="pretokenized", name="none", vocab_size=spec.vocab_size, eos_id=spec.eos_id,
            bos_id=spec.bos_id,
            fingerprint=xxhash.xxh3_128_hexdigest(
                f"ids:{spec.vocab_size}:{spec.eos_id}:{spec.bos_id}".encode()),
        )

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        raise FastdataConfigError("--tokenizer none reads pre-tokenized input only (--pretokenized)")

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)


@lru_cache(maxsize=4)
def load_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """Build (once per process) the tokenizer that ``spec`` names.

    Raises:
        FastdataConfigError: the spec is unknown or the tokenizer cannot be loaded.
    """
    if spec.spec == "bytes":
        return BytesTokenizer()
    if spec.spec == "none":
        return PretokenizedIds(spec)
    if spec.spec.startswith("tiktoken:"):
        return TiktokenTokenizer(spec.spec.split(":", 1)[1])
    path = spec.spec
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise FastdataConfigError(
            f"unknown tokenizer {spec.spec!r}: use 'bytes', a path to a tokenizer.json, "
            "'tiktoken:NAME' or 'none' (pre-tokenized input)"
        )
    return HFTokenizer(path, spec)
