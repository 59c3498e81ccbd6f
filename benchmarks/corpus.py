"""Deterministic synthetic corpus and a small BPE tokenizer for the benchmarks.

Nothing is downloaded. The corpus is JSONL, one ``{"id": ..., "text": ...}`` object per line,
with English-like text: a fixed list of common English function words plus a few thousand
invented content words built from syllables, drawn with a Zipf-like frequency, grouped into
sentences and paragraphs, with occasional numbers, punctuation and non-ASCII words (so the
byte-level tokenizer sees multi-byte UTF-8). Document lengths are log-normal, so there are
many short documents and a long tail of long ones, as in web text.

The same ``--docs`` and ``--seed`` always give the same bytes (the generator is numpy's
PCG64 with a fixed seed; a SHA-256 of the file is printed and stored next to it so runs can
be compared).

Usage:
    python benchmarks/corpus.py --out benchmarks/.work/corpus.jsonl [--docs 20000] [--seed 0]
        [--tokenizer-out benchmarks/.work/tokenizer.json] [--vocab-size 8192]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

EOS_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|startoftext|>"

# Common English function words and frequent verbs/nouns, most frequent first (roughly).
COMMON = (
    "the of and to a in is that for it as was with be by on not he i this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will more can its about them some what into than only other time new could these "
    "two may then do first any my now such like our over man me even most made after also "
    "did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work "
    "long get here between both life being under never day same another know while last "
    "might us great old year off come since against go came right used take three"
).split()

ODD_WORDS = ("café", "naïve", "über", "façade", "résumé", "Zürich", "São", "smörgåsbord",
             "crème", "jalapeño", "Ελλάδα", "東京", "—", "€", "°C")

ONSETS = ("", "b", "br", "c", "ch", "cl", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "l",
          "m", "n", "p", "pl", "pr", "qu", "r", "s", "sh", "sl", "st", "str", "t", "th", "tr",
          "v", "w", "wh", "y", "z")
NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "ie", "oa", "oo", "ou", "y")
CODAS = ("", "", "", "b", "ck", "d", "ft", "g", "l", "ld", "m", "n", "nd", "ng", "nt", "p",
         "r", "rd", "rt", "s", "sh", "ss", "st", "t", "th", "x")
SUFFIXES = ("", "", "", "", "s", "ed", "ing", "er", "ly", "tion", "ment", "ness", "able")


def build_vocabulary(rng: np.random.Generator, n_content: int = 6000) -> list[str]:
    """Function words first, then invented content words, unique, in frequency-rank order."""
    words = list(dict.fromkeys(COMMON))
    seen = set(words)
    while len(words) < len(COMMON) + n_content:
        n_syll = int(rng.choice([1, 1, 2, 2, 2, 3]))
        parts = []
        for _ in range(n_syll):
            parts.append(ONSETS[rng.integers(len(ONSETS))])
            parts.append(NUCLEI[rng.integers(len(NUCLEI))])
            parts.append(CODAS[rng.integers(len(CODAS))])
        word = "".join(parts) + SUFFIXES[rng.integers(len(SUFFIXES))]
        if len(word) >= 2 and word not in seen:
            seen.add(word)
            words.append(word)
    return words


def zipf_probabilities(n: int, exponent: float = 1.07) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return p / p.sum()


def make_document(rng: np.random.Generator, words: list[str], probs: np.ndarray,
                  n_words: int) -> str:
    ids = rng.choice(len(words), size=n_words, p=probs)
    toks = [words[k] for k in ids]
    # Sprinkle numbers (1.2 %), non-ASCII words (0.3 %) and commas (3.5 %).
    r = rng.random(n_words)
    for j in np.flatnonzero(r < 0.012):
        toks[j] = str(int(rng.integers(0, 10_000)))
    odd = np.flatnonzero((r >= 0.012) & (r < 0.015))
    for j, k in zip(odd, rng.integers(len(ODD_WORDS), size=len(odd)), strict=True):
        toks[j] = ODD_WORDS[k]
    commas = set(np.flatnonzero((r >= 0.015) & (r < 0.05)).tolist())
    # Sentence lengths 4..28 words; paragraphs of 2..7 sentences.
    out: list[str] = []
    paragraph: list[str] = []
    sentences_left = int(rng.integers(2, 8))
    i = 0
    while i < n_words:
        length = int(rng.integers(4, 29))
        stop = min(i + length, n_words)
        chunk = [t + "," if (j in commas and j + 1 < stop) else t
                 for j, t in zip(range(i, stop), toks[i:stop], strict=True)]
        i = stop
        chunk[0] = chunk[0][:1].upper() + chunk[0][1:]
        e = rng.random()
        end = "." if e < 0.85 else ("?" if e < 0.94 else "!")
        paragraph.append(" ".join(chunk) + end)
        sentences_left -= 1
        if sentences_left == 0:
            out.append(" ".join(paragraph))
            paragraph = []
            sentences_left = int(rng.integers(2, 8))
    if paragraph:
        out.append(" ".join(paragraph))
    return "\n\n".join(out)


def generate(out: Path, docs: int, seed: int, mean_words: float) -> dict:
    rng = np.random.Generator(np.random.PCG64(seed))
    words = build_vocabulary(rng)
    probs = zipf_probabilities(len(words))
    # Log-normal word counts with the requested mean, clipped to [8, 40 * mean].
    sigma = 1.0
    mu = np.log(mean_words) - sigma**2 / 2
    lengths = np.clip(rng.lognormal(mu, sigma, size=docs), 8, 40 * mean_words).astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    sha = hashlib.sha256()
    total_bytes = 0
    with tmp.open("wb") as f:
        for d in range(docs):
            text = make_document(rng, words, probs, int(lengths[d]))
            line = (json.dumps({"id": d, "text": text}, ensure_ascii=False) + "\n").encode()
            sha.update(line)
            total_bytes += len(line)
            f.write(line)
    tmp.replace(out)
    meta = {"path": str(out), "docs": docs, "seed": seed, "mean_words": mean_words,
            "bytes": total_bytes, "sha256": sha.hexdigest(),
            "words": int(lengths.sum())}
    out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def iter_texts(path: Path, limit: int | None = None):
    with path.open("rb") as f:
        for n, line in enumerate(f):
            if limit is not None and n >= limit:
                return
            yield json.loads(line)["text"]


def train_tokenizer(corpus: Path, out: Path, vocab_size: int, max_docs: int | None) -> dict:
    """A byte-level BPE (GPT-2 style) with EOS/BOS special tokens, trained on ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, BOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter_texts(corpus, max_docs), trainer=trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return {"path": str(out), "vocab_size": tok.get_vocab_size(),
            "eos_id": tok.token_to_id(EOS_TOKEN), "bos_id": tok.token_to_id(BOS_TOKEN)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/.work/corpus.jsonl"))
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mean-words", type=float, default=330.0,
                    help="mean words per document (330 gives about 2 KB per document)")
    ap.add_argument("--tokenizer-out", type=Path, default=None,
                    help="also train a BPE tokenizer and write it here")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--tokenizer-docs", type=int, default=None,
                    help="train the tokenizer on the first N documents only (default: all)")
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = ap.parse_args(argv)

    meta_path = args.out.with_suffix(".meta.json")
    want = {"docs": args.docs, "seed": args.seed, "mean_words": args.mean_words}
    meta = None
    if not args.force and args.out.exists() and meta_path.exists():
        old = json.loads(meta_path.read_text())
        same_size = old.get("bytes") == args.out.stat().st_size
        if same_size and all(old.get(k) == v for k, v in want.items()):
            meta = old
            print(f"corpus up to date: {args.out}", file=sys.stderr)
    if meta is None:
        t0 = time.perf_counter()
        meta = generate(args.out, args.docs, args.seed, args.mean_words)
        print(f"wrote {args.out}: {meta['docs']} docs, {meta['bytes'] / 1e6:.1f} MB "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    result = {"corpus": meta}

    if args.tokenizer_out is not None:
        tmeta_path = args.tokenizer_out.with_suffix(".meta.json")
        tmeta = None
        if not args.force and args.tokenizer_out.exists() and tmeta_path.exists():
            old = json.loads(tmeta_path.read_text())
            if (old.get("corpus_sha256") == meta["sha256"]
                    and old.get("requested_vocab") == args.vocab_size):
                tmeta = old
                print(f"tokenizer up to date: {args.tokenizer_out}", file=sys.stderr)
        if tmeta is None:
            t0 = time.perf_counter()
            tmeta = train_tokenizer(args.out, args.tokenizer_out, args.vocab_size,
                                    args.tokenizer_docs)
            tmeta["corpus_sha256"] = meta["sha256"]
            tmeta["requested_vocab"] = args.vocab_size
            tmeta_path.write_text(json.dumps(tmeta, indent=2) + "\n")
            print(f"trained tokenizer {args.tokenizer_out}: vocab {tmeta['vocab_size']} "
                  f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        result["tokenizer"] = tmeta

    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
