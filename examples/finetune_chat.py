"""Fine-tune the GPT of train_gpt.py on chat data: only the assistant's turns are trained.

    fastdata pack examples/corpus/chat.jsonl -o /tmp/chat --chat
    python examples/finetune_chat.py --data /tmp/chat --init /tmp/run --out /tmp/chat-run

``fastdata pack --chat`` stores a loss mask beside the tokens (1 on assistant turns); the
loader turns it into labels of -100 everywhere else, so the loss needs no chat logic at
all. ``sampling={"mode": "document"}`` makes each row one conversation, cut to
``--seq-len`` or padded (padding is labelled -100 too; with causal attention it cannot
affect the tokens before it, so the model needs no attention mask). ``--init`` starts from
train_gpt.py's newest checkpoint (the same ``--d-model``/``--n-layers``/``--seq-len``).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

import fastdata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # share train_gpt.py's pieces
from train_gpt import BatchLog, Meter, add_model_args, build_model, checkpoints, save_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a dataset packed with --chat")
    p.add_argument("--init", help="a train_gpt.py --out directory (or checkpoint file) to start from")
    p.add_argument("--out", help="write the fine-tuned checkpoint here")
    add_model_args(p, steps=10)
    args = p.parse_args(argv)

    ds = fastdata.TokenDataset(args.data, seq_len=args.seq_len, seed=args.seed, sampling={"mode": "document"})
    if not ds.data.manifest.has_loss_mask:
        raise SystemExit(f"{args.data} has no loss mask: pack it with `fastdata pack --chat`")
    loader = fastdata.DataLoader(ds, batch_size=args.batch_size, num_workers=args.num_workers)
    model = build_model(args, ds.data.manifest.tokenizer.vocab_size)
    if args.init:
        path = args.init if os.path.isfile(args.init) else checkpoints(args.init)[-1]
        model.load_state_dict(torch.load(path, weights_only=True)["model"])
        print(f"starting from {path}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    log = BatchLog(args.log_batches, rank=0, world_size=1)
    meter = Meter(args.batch_size * args.seq_len)
    trained = seen = 0
    batches = iter(loader)
    while meter.steps < args.steps:
        batch = meter.next_batch(batches)
        if batch is None:  # next epoch
            batches = iter(loader)
            continue
        loss = model(batch["input_ids"], batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.write(meter.steps, batch, loss)
        meter.steps += 1
        trained += int((batch["labels"] != -100).sum())
        seen += int(batch["attention_mask"].sum())
    print(f"last loss {loss.item():.4f}; {trained:,} of {seen:,} tokens trained (assistant turns)")
    print(meter.report())
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "data": loader.state_dict(), "step": meter.steps}
        save_checkpoint(args.out, meter.steps, state)


if __name__ == "__main__":
    main()
