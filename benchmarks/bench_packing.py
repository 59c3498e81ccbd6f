"""Padding of best-fit packing against first-fit and one-document-per-sample (issue 13).

Corpora (nothing is downloaded; all built from what is on this machine):

* ``code`` — every ``*.py`` file of the running interpreter's standard library (tests
  included), one document per file, in path order;
* ``chat`` — synthetic conversations (``--chat-convs``, seeded): a system prompt in half of
  them, 1 + Geometric(0.5) user/assistant exchanges (at most 8), user turns of
  LogNormal(median 30 words, sigma 1.0) words and assistant turns of LogNormal(median 160
  words, sigma 0.9) words, with the words of ``benchmarks/corpus.py``; packed with
  ``--chat`` (loss on assistant turns only);
* the two bundled ones in ``examples/corpus``: ``chat.jsonl`` (64 conversations) and
  ``stdlib_docs.jsonl`` (1,185 docstrings).

All are tokenized with one byte-level BPE (16,384 tokens) trained here on a sample of the
code and chat corpora, and packed with ``fastdata pack``.

For each corpus and ``seq_len``: the padding share is padded input positions / all input
positions of the epoch's samples (``attention_mask == 0``; the ragged tail's padding
samples are left out), for

* ``bestfit`` — ``TokenDataset(sampling={"mode": "bestfit"})``, read through
  ``fastdata.DataLoader`` (epoch 0);
* ``first-fit`` — the same windows of the same epoch, documents split the same way, but
  each piece in window order into the first open bin with room (no sorting);
* ``document`` — ``sampling={"mode": "document"}``, through the loader (long documents are
  truncated: the share of tokens lost is reported too);
* ``bound`` — the least padding any packing of whole pieces could have: all tokens in
  ``ceil(tokens / (seq_len + 1))`` samples.

It also times the per-epoch counting pass (``BestFitPlan``) and a loader epoch in bestfit
against packed mode.

Usage:
    python benchmarks/bench_packing.py [--work benchmarks/.work/packing] [--chat-convs 10000]
        [--seq-lens 512 2048] [--window 4096] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import BOS_TOKEN, EOS_TOKEN, build_vocabulary, make_document, zipf_probabilities  # noqa: E402

import fastdata  # noqa: E402
from fastdata.sampling.bestfit import split_documents  # noqa: E402

# ------------------------------------------------------------------ corpora


def code_corpus(out: Path) -> dict:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for p in files:
            text = p.read_text(encoding="utf-8", errors="replace")
            if text:
                f.write(json.dumps({"text": text}) + "\n")
                n += 1
    return {"source": str(stdlib), "docs": n}


def chat_corpus(out: Path, convs: int, seed: int = 13) -> dict:
    rng = np.random.Generator(np.random.PCG64(seed))
    words = build_vocabulary(rng)
    probs = zipf_probabilities(len(words))

    def words_of(median: float, sigma: float, cap: int) -> int:
        return int(np.clip(rng.lognormal(np.log(median), sigma), 2, cap))

    with out.open("w", encoding="utf-8") as f:
        for _ in range(convs):
            messages = []
            if rng.random() < 0.5:
                system = make_document(rng, words, probs, words_of(20, 0.5, 200))
                messages.append({"role": "system", "content": system})
            for _ in range(min(8, int(rng.geometric(0.5)))):
                user = make_document(rng, words, probs, words_of(30, 1.0, 1500))
                messages.append({"role": "user", "content": user})
                messages.append({"role": "assistant",
                                 "content": make_document(rng, words, probs, words_of(160, 0.9, 3000))})
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    return {"conversations": convs, "seed": seed}


def train_tokenizer(texts: list[str], out: Path, vocab: int = 16384) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOS_TOKEN, BOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(out))


def sample_texts(path: Path, limit_bytes: int) -> list[str]:
    out, size = [], 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            text = rec.get("text") or "\n".join(m["content"] for m in rec["messages"])
            out.append(text)
            size += len(text)
            if size > limit_bytes:
                break
    return out


def pack(src: Path, out: Path, tokenizer: Path, chat: bool) -> str:
    if not (out / "manifest.json").exists():
        cmd = [sys.executable, "-m", "fastdata.cli.main", "pack", str(src), "-o", str(out), "--tokenizer",
               str(tokenizer), "--workers", "2", "-q", "--overwrite"] + (["--chat"] if chat else [])
        subprocess.run(cmd, check=True)
    return str(out)


# ------------------------------------------------------------------ measurements


def bestfit_dataset(path: str, seq_len: int, window: int, **kw) -> fastdata.TokenDataset:
    sampling = {"mode": "bestfit", "pack_window": window}
    return fastdata.TokenDataset(path, seq_len=seq_len, seed=0, sampling=sampling, **kw)


def loader_epoch(path: str, seq_len: int, sampling: dict | None) -> tuple[float | None, int, float]:
    """(padding share of input positions, samples, seconds) of epoch 0 through the loader."""
    ds = fastdata.TokenDataset(path, seq_len=seq_len, seed=0, sampling=sampling,
                               order=fastdata.OrderOptions(drop_last=False))
    padded = total = samples = 0
    started = time.perf_counter()
    for b in fastdata.DataLoader(ds, batch_size=8, num_workers=2):
        real = b["sample_ids"].numpy() >= 0
        samples += int(real.sum())
        if "attention_mask" in b:
            mask = b["attention_mask"].numpy()[real]
            padded += int((mask == 0).sum())
            total += mask.size
    return (padded / total if total else None), samples, time.perf_counter() - started


def slot_padding(fills: np.ndarray, cap: int) -> float:
    """Padding share of the token slots (``seq_len + 1`` per sample)."""
    return float(1 - fills.sum() / (len(fills) * cap))


def bestfit_fills(path: str, seq_len: int, window: int) -> np.ndarray:
    """Tokens in each bin of epoch 0, from the plan the loader reads."""
    plan = bestfit_dataset(path, seq_len, window).epoch_order(0, fastdata.World()).plan
    out = []
    for g in range(plan.num_windows):
        pack = plan.window_pack(g)
        if pack.num_bins:
            out.append(np.add.reduceat(pack.length, pack.bin_start[:-1]))
    return np.concatenate(out)


def first_fit_fills(path: str, seq_len: int, window: int) -> np.ndarray:
    """First-fit over the bestfit plan's own windows of epoch 0 (same documents, same split)."""
    plan = bestfit_dataset(path, seq_len, window).epoch_order(0, fastdata.World()).plan
    cap = seq_len + 1
    fills: list[np.ndarray] = []
    with fastdata.open_dataset(path) as raw:
        for shard in range(len(raw.shards)):
            offsets = raw.shard(shard).doc_offsets().astype(np.int64)
            n = int(plan.shard_docs[shard])
            for w in range(-(-n // window)):
                docs = plan.window_docs(shard, w)
                _, _, length, full = split_documents(offsets[docs + 1] - offsets[docs], seq_len)
                room = np.empty(0, dtype=np.int64)
                for size in length[~full].tolist():
                    fit = np.flatnonzero(room >= size)
                    if len(fit):
                        room[fit[0]] -= size
                    else:
                        room = np.append(room, cap - size)
                fills += [np.full(int(full.sum()), cap), cap - room]
    return np.concatenate(fills)


def corpus_stats(path: str, seq_len: int) -> dict:
    with fastdata.open_dataset(path) as raw:
        lengths = raw.doc_lengths()
    cap = seq_len + 1
    pieces = int(split_documents(lengths, seq_len)[2].sum())  # tokens placed (long docs' pieces overlap)
    bins = -(-pieces // cap)
    return {"docs": int(len(lengths)), "tokens": int(lengths.sum()),
            "median_len": float(np.median(lengths)), "p90_len": float(np.percentile(lengths, 90)),
            "over_cap": float((lengths > cap).mean()),
            "truncated": float(np.maximum(lengths - cap, 0).sum() / lengths.sum()),
            "document": slot_padding(np.minimum(lengths, cap), cap),
            "bound": float(1 - pieces / (bins * cap))}


def plan_seconds(path: str, seq_len: int, window: int) -> float:
    ds = bestfit_dataset(path, seq_len, window)
    started = time.perf_counter()
    ds.epoch_order(1, fastdata.World())  # a fresh epoch: one counting pass
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "packing")
    ap.add_argument("--chat-convs", type=int, default=10_000)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--window", type=int, default=4096)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    meta = {}
    if not (work / "code.jsonl").exists():
        meta["code"] = code_corpus(work / "code.jsonl")
    if not (work / "chat.jsonl").exists():
        meta["chat"] = chat_corpus(work / "chat.jsonl", args.chat_convs)
    tok = work / "tokenizer.json"
    if not tok.exists():
        sample = sample_texts(work / "code.jsonl", 4_000_000) + sample_texts(work / "chat.jsonl", 4_000_000)
        train_tokenizer(sample, tok)
    corpora = {
        "code (CPython stdlib)": pack(work / "code.jsonl", work / "code-ds", tok, chat=False),
        "chat (synthetic)": pack(work / "chat.jsonl", work / "chat-ds", tok, chat=True),
        "examples/corpus/chat.jsonl": pack(HERE.parent / "examples/corpus/chat.jsonl", work / "ex-chat-ds",
                                           tok, chat=True),
        "examples/corpus/stdlib_docs.jsonl": pack(HERE.parent / "examples/corpus/stdlib_docs.jsonl",
                                                  work / "ex-docs-ds", tok, chat=False),
    }
    rows = []
    for name, path in corpora.items():
        for seq_len in args.seq_lens:
            cap = seq_len + 1
            stats = corpus_stats(path, seq_len)
            best = bestfit_fills(path, seq_len, args.window)
            ff = first_fit_fills(path, seq_len, args.window)
            sampling = {"mode": "bestfit", "pack_window": args.window}
            best_in, best_n, best_s = loader_epoch(path, seq_len, sampling)
            doc_in, _, _ = loader_epoch(path, seq_len, {"mode": "document"})
            assert best_n == len(best), (best_n, len(best))
            row = {"corpus": name, "seq_len": seq_len, **stats, "bestfit": slot_padding(best, cap),
                   "bins": len(best), "first_fit": slot_padding(ff, cap), "first_fit_bins": len(ff),
                   "bestfit_inputs": best_in, "document_inputs": doc_in,
                   "plan_s": plan_seconds(path, seq_len, args.window), "bestfit_epoch_s": best_s}
            if name.startswith("code") and seq_len == max(args.seq_lens):
                _, row["packed_samples"], row["packed_epoch_s"] = loader_epoch(path, seq_len, None)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("Padding share of the token slots (seq_len + 1 per sample), epoch 0:\n")
    print("| corpus | seq_len | docs | tokens | median / p90 doc | docs > seq_len+1 | bestfit | first-fit | "
          "bestfit / first-fit | document | bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["bestfit"] / r["first_fit"] if r["first_fit"] else float("nan")
        print(f"| {r['corpus']} | {r['seq_len']} | {r['docs']:,} | {r['tokens']:,} | "
              f"{r['median_len']:.0f} / {r['p90_len']:.0f} | {100 * r['over_cap']:.1f} % | "
              f"**{100 * r['bestfit']:.2f} %** | {100 * r['first_fit']:.2f} % | {ratio:.2f} | "
              f"{100 * r['document']:.1f} % (cuts {100 * r['truncated']:.1f} % of tokens) | "
              f"{100 * r['bound']:.2f} % |")
    print()
    for r in rows:
        extra = ""
        if "packed_epoch_s" in r:
            extra = (f"; packed mode {1e6 * r['packed_epoch_s'] / r['packed_samples']:.0f} us/sample "
                     f"({r['packed_samples']:,} samples)")
        print(f"- {r['corpus']} @ {r['seq_len']}: counting pass {1e3 * r['plan_s']:.1f} ms "
              f"({r['docs'] / r['plan_s'] / 1e6:.2f} M docs/s); loader (input positions): bestfit "
              f"{100 * r['bestfit_inputs']:.2f} %, document {100 * r['document_inputs']:.1f} %; bestfit "
              f"{1e6 * r['bestfit_epoch_s'] / r['bins']:.0f} us/sample ({r['bins']:,} samples){extra}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
