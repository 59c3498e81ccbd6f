"""Turning one task's records into token arrays (runs in the pack worker processes).

Document policy (``docs/pack.md``): a plain document is ``[BOS] + tokens + [EOS]``, with
BOS only when asked for and EOS whenever the tokenizer has one and it is not turned off.
A chat record is rendered turn by turn with :func:`encode_chat`; only assistant turns
carry loss.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from fastdata.errors import FastdataConfigError, FastdataInputError
from fastdata.pack.sources import ReadOptions, Record, Task, TaskData, read_task
from fastdata.pack.tokenizers import Tokenizer, TokenizerSpec, load_tokenizer

ENCODE_BATCH = 512


@dataclass(frozen=True)
class EncodeOptions:
    """Everything a worker needs to encode a task; picklable."""

    read: ReadOptions
    tokenizer: TokenizerSpec
    add_eos: bool = True
    add_bos: bool = False
    skip_bad: bool = False  # --on-error skip


@dataclass
class TaskResult:
    """The documents of one task, concatenated."""

    tokens: np.ndarray  # uint16 when the vocabulary fits, else uint32
    lengths: np.ndarray  # int64, one entry per document
    mask: np.ndarray | None  # uint8 per token, chat mode only
    input_bytes: int
    skipped: Counter[str] = field(default_factory=Counter)
    first_skipped: list[str] = field(default_factory=list)


def chat_header(role: str) -> str:
    """The untrained text that opens a turn."""
    return f"<|{role}|>\n"


def encode_chat(tok: Tokenizer, messages: list[dict], eos: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and loss mask of one conversation.

    Each turn is ``<|role|>\\n`` (mask 0), the content, then EOS; the content and EOS
    carry mask 1 for assistant turns only.
    """
    texts = []
    for m in messages:
        texts += [chat_header(m["role"]), m["content"]]
    encoded = tok.encode_batch(texts)
    ids, mask = [], []
    for i, m in enumerate(messages):
        head, body = encoded[2 * i], encoded[2 * i + 1]
        trained = 1 if m["role"] == "assistant" else 0
        ids += [head, body, np.array([eos], np.uint32)]
        mask += [np.zeros(len(head), np.uint8), np.full(len(body) + 1, trained, np.uint8)]
    return np.concatenate(ids).astype(np.uint32), np.concatenate(mask)


class _Builder:
    """Accumulates the documents of one task and applies the error policy.

    Bodies are kept as they come; BOS and EOS are inserted once, vectorised, in
    :meth:`result` (a per-document concatenate costs more than tokenizing bytes).
    """

    def __init__(self, options: EncodeOptions, tok: Tokenizer, task: Task) -> None:
        self.options, self.tok, self.task = options, tok, task
        info = tok.info
        chat = options.read.chat
        # chat turns end with their own EOS; plain documents get one appended
        self.eos = info.eos_id if options.add_eos and not chat else None
        self.bos = info.bos_id if options.add_bos else None
        self.bodies: list[np.ndarray] = []
        self.masks: list[np.ndarray] | None = [] if chat else None
        self.skipped: Counter[str] = Counter()
        self.first_skipped: list[str] = []

    def problem(self, location: str, reason: str, category: str | None = None) -> None:
        if not self.options.skip_bad:
            raise FastdataInputError(
                f"{location}: {reason} (fix the record, or pass --on-error skip to skip and count it)"
            )
        self.skipped[category or reason.split(" at ")[0]] += 1
        if len(self.first_skipped) < 5:
            self.first_skipped.append(f"{location}: {reason}")

    def add_ids(self, record: Record) -> None:
        ids = np.asarray(record.value, dtype=np.int64)
        vocab = self.tok.info.vocab_size
        bad = ids[(ids < 0) | (ids >= vocab)]
        if len(bad):
            self.problem(record.location,
                         f"token id {int(bad[0])} is outside the vocabulary of size {vocab}",
                         "token id outside the vocabulary")
            return
        self.bodies.append(ids.astype(np.uint32))

    def add_chat(self, record: Record) -> None:
        eos = self.tok.info.eos_id
        if eos is None:
            raise FastdataConfigError("chat packing needs a tokenizer with an EOS token (--eos-token)")
        ids, mask = encode_chat(self.tok, record.value, eos)
        self.bodies.append(ids)
        if self.masks is not None:
            self.masks.append(mask)

    def result(self) -> TaskResult:
        lengths = np.fromiter((len(b) for b in self.bodies), np.int64, len(self.bodies))
        tokens = (np.concatenate(self.bodies).astype(np.uint32, copy=False) if self.bodies
                  else np.zeros(0, np.uint32))
        mask = None
        if self.masks is not None:
            mask = np.concatenate(self.masks) if self.masks else np.zeros(0, np.uint8)
        if self.bos is not None:
            starts = np.cumsum(lengths) - lengths
            tokens = np.insert(tokens, starts, self.bos)
            mask = None if mask is None else np.insert(mask, starts, 0)
            lengths += 1
        if self.eos is not None:
            tokens = np.insert(tokens, np.cumsum(lengths), self.eos)
            lengths += 1
        if self.tok.info.vocab_size <= 1 << 16:
            tokens = tokens.astype(np.uint16)  # half the bytes to ship to the writer
        return TaskResult(tokens, lengths, mask, self.task.size, self.skipped, self.first_skipped)


def encode_task(task: Task, options: EncodeOptions, data: TaskData = None) -> TaskResult:
    """Read and tokenize every record of ``task`` in order (``data``: its fetched bytes or
    records, for a remote input or a Python iterable).

    Raises:
        FastdataInputError: a record is bad and the policy is to raise.
    """
    tok = load_tokenizer(options.tokenizer)
    b = _Builder(options, tok, task)
    batch: list[Record] = []

    def flush() -> None:
        if not batch:
            return
        b.bodies.extend(tok.encode_batch([r.value for r in batch]))
        batch.clear()

    for record in read_task(task, options.read, data):
        if record.problem is not None:
            flush()
            b.problem(record.location, record.problem)
        elif options.read.chat:
            b.add_chat(record)
        elif options.read.pretokenized:
            b.add_ids(record)
        else:
            batch.append(record)
            if len(batch) >= ENCODE_BATCH:
                flush()
    flush()
    return b.result()
