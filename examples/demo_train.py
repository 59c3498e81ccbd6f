"""One training process of the demo (``examples/quickstart.py`` runs it twice): a tiny GPT on
CPU fed by ``TokenDataset`` through the node cache and ``fastdata.DataLoader``.

    python examples/demo_train.py --url URL --cache-dir DIR --out CKPT_DIR --steps 40 --save-at 20
    python examples/demo_train.py --url URL --cache-dir DIR --out CKPT_DIR --steps 40 --resume

The first form trains from scratch and, at step ``--save-at``, writes a checkpoint holding the
model, the optimizer, the step and ``loader.state_dict()``. The second, a new process, loads
that checkpoint and continues to ``--steps``. Both append one JSON line per step to ``--log``
(the step, the batch's ``sample_ids`` and the loss) and write ``loader.metrics()`` to
``--report``, so the caller can check that the resumed steps are the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

import fastdata
from fastdata import metrics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # share train_gpt.py's pieces
from train_gpt import add_model_args, build_model, checkpoints, save_checkpoint  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="the published dataset: a directory or a URL")
    p.add_argument("--allow-insecure", action="store_true",
                   help="allow a plain-http URL (the demo's loopback server only)")
    p.add_argument("--cache-dir", required=True, help="the node cache")
    p.add_argument("--cache-limit", default="16MB", help="bytes the node cache may hold")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--save-at", type=int, default=20, help="step at which to write the checkpoint")
    p.add_argument("--resume", action="store_true", help="continue from --out's newest checkpoint")
    p.add_argument("--log", required=True, help="append one JSON line per step here")
    p.add_argument("--report", required=True, help="write loader.metrics() here (JSON)")
    add_model_args(p, steps=40)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # bit-identical losses across the two processes; cores for the loader
    ds = fastdata.TokenDataset(args.url, seq_len=args.seq_len, seed=args.seed,
                               storage_options={"allow_insecure": True} if args.allow_insecure else None,
                               cache_dir=args.cache_dir, cache_limit=args.cache_limit)
    loader = fastdata.DataLoader(ds, batch_size=args.batch_size, num_workers=args.num_workers)
    model = build_model(args, ds.data.manifest.tokenizer.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    os.makedirs(args.out, exist_ok=True)
    step = 0
    if args.resume:
        path = checkpoints(args.out)[-1]
        ckpt = torch.load(path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        loader.load_state_dict(ckpt["data"])  # the next batch is the one after the checkpoint
        step = ckpt["step"]
        print(f"resumed from {path} at step {step}, loader state {json.dumps(ckpt['data'])}")

    with open(args.log, "a") as log:
        while step < args.steps:
            for batch in loader:  # each iter() continues the stream: the next epoch, or the resumed one
                loss = model(batch["input_ids"], batch["labels"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                log.write(json.dumps({"step": step, "sample_ids": batch["sample_ids"].tolist(),
                                      "loss": loss.item()}) + "\n")
                step += 1
                if step == args.save_at and not args.resume:
                    save_checkpoint(args.out, step, {"model": model.state_dict(),
                                                     "optimizer": optimizer.state_dict(),
                                                     "step": step, "data": loader.state_dict()})
                    print(f"step {step}: checkpoint with the loader state written to {args.out}")
                if step == args.steps:
                    break
    snap = loader.metrics()
    with open(args.report, "w") as f:
        json.dump({"steps": step, "loss": loss.item(), "metrics": snap}, f)
    print(f"step {step}: loss {loss.item():.4f}; {metrics.summary_line(snap)}")


if __name__ == "__main__":
    main()
